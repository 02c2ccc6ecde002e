/** `@modelgate/client`: modelgate's TypeScript client (docs/sdk-typescript.md). */
export { newIdempotencyKey, type CallOptions } from "./call.js";
export {
  Client,
  InferResult,
  type ClientOptions,
  type Embeddings,
  type Explanation,
  type FeedbackItem,
  type InferOptions,
  type Model,
  type ModelMetadata,
  type Quota,
  type ServerMetadata,
  type UsageQuery,
  type UsageReport,
} from "./client.js";
export { Deployments, type Deployment, type DeploymentSpec } from "./deployments.js";
export {
  APIError,
  AuthenticationError,
  BadRequestError,
  ConflictError,
  ConnectionError,
  ModelgateError,
  NotFoundError,
  PermissionDeniedError,
  RateLimitError,
  ServerError,
  TimeoutError,
} from "./errors.js";
export {
  Jobs,
  TERMINAL_STATES,
  jobRequest,
  type InferenceRequest,
  type Job,
  type JobList,
  type JobResult,
  type JobState,
  type SubmitOptions,
  type WaitOptions,
} from "./jobs.js";
export { NO_RETRY, RetryPolicy, type CallKind, type RetryOptions } from "./retry.js";
export type { Datatype, OutputData, OutputTensor, Tensor, TensorData } from "./tensors.js";
export type { components, operations, paths } from "./schema.js";
