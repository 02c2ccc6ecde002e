/**
 * `Client`: every operation of modelgate's own API over `fetch`, the Python SDK's by the same
 * names (camelCase). Each operation builds a {@link Call} (method, path, body, headers) and
 * `send` runs it: one timeout per attempt (an `AbortSignal`), retries within the budget
 * (./retry.ts), and an error of ./errors.ts for an error status.
 */
import { ConnectionError, ModelgateError, TimeoutError, errorFromResponse, retryAfterSeconds } from "./errors.js";
import { RetryPolicy, type RetryOptions } from "./retry.js";
import type { components, operations } from "./schema.js";
import { type OutputData, type OutputTensor, type Tensor, decodeResponse, encodeRequest, jsonData, datatypeOf } from "./tensors.js";

type Schemas = components["schemas"];
export type Job = Schemas["Job"];
export type JobState = Schemas["JobState"];
export type JobResult = Schemas["JobResult"];
export type JobList = Schemas["JobList"];
export type InferenceRequest = Schemas["InferenceRequest"];
export type Embeddings = Schemas["EmbeddingResponse"];
export type Model = Schemas["Model"];
export type ModelMetadata = Schemas["ModelMetadataResponse"];
export type ServerMetadata = Schemas["ServerMetadataResponse"];
export type UsageReport = Schemas["UsageOut"];
export type Quota = Schemas["QuotaOut"];
/** The document says no more of a deployment than an object (its `stage`, `weights`, ...). */
export type Deployment = operations["getDeployment"]["responses"][200]["content"]["application/json"];
export type DeploymentSpec = Schemas["DeploymentBody"];
export type FeedbackItem = Schemas["FeedbackLabel"] | Schemas["FeedbackLabels"];

/** A job's status once it changes no more. */
export const TERMINAL_STATES: ReadonlySet<JobState> = new Set(["succeeded", "failed", "cancelled", "dead"]);

export interface ClientOptions {
  /** Default: `MODELGATE_BASE_URL`, else `http://localhost:8000`. */
  baseUrl?: string;
  /** Sent as `Authorization: Bearer <key>`. Default: `MODELGATE_API_KEY`; none: no header. */
  apiKey?: string;
  /** Seconds each attempt may take, answer read included; default 60. */
  timeout?: number;
  /** The retry budget; default `new RetryPolicy()` (3 attempts within 60 s). */
  retry?: RetryPolicy | RetryOptions;
  /** Headers sent with every call. */
  headers?: Record<string, string>;
  /** The `fetch` to call (default: the global one), e.g. one that records or answers. */
  fetch?: typeof fetch;
}

/** What every operation takes besides its own arguments. */
export interface CallOptions {
  /** Seconds this call's attempts may each take (default: the client's). */
  timeout?: number;
  /** Aborts the call (and its retries); it rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** One HTTP request of an operation. */
interface Call {
  method: "GET" | "POST" | "PUT" | "DELETE";
  path: string;
  query?: Record<string, string | number | undefined>;
  json?: unknown;
  body?: Uint8Array<ArrayBuffer>;
  headers?: Record<string, string>;
  /** Statuses that are an answer, not an error (503 for readiness). */
  okStatuses?: number[];
  /** A POST whose repetition changes nothing more (cancelling a job). */
  idempotent?: boolean;
}

/** An inference answer: outputs by name as arrays, and what the server said of the call. */
export class InferResult {
  constructor(
    readonly modelName: string,
    readonly modelVersion: string,
    readonly outputs: Record<string, OutputTensor>,
    /** The OIP `id` (echoed from the request's `requestId`). */
    readonly id: string | undefined,
    readonly parameters: Record<string, unknown>,
    /** The server's `x-request-id`: the id feedback refers to. */
    readonly requestId: string | undefined,
    readonly headers: Headers,
  ) {}

  /** An output's elements (flat, row-major); its shape is `outputs[name].shape`. */
  get(name: string): OutputData {
    const found = this.outputs[name];
    if (found === undefined) throw new RangeError(`no output '${name}' (${Object.keys(this.outputs)})`);
    return found.data;
  }

  /** A BYTES output's elements as UTF-8 text. */
  text(name: string): string[] {
    const decoder = new TextDecoder();
    return (this.get(name) as Uint8Array[]).map((b) => decoder.decode(b));
  }
}

export interface InferOptions extends CallOptions {
  /** A version to pin; unset, the model's deployment chooses. */
  version?: string | number;
  /** The outputs wanted (all when unset). */
  outputs?: string[];
  /** Triton's binary tensor data extension, both ways (default true); false: JSON `data`. */
  binary?: boolean;
  /** The OIP `id`, echoed in the answer. */
  requestId?: string;
  /** The request's OIP parameters (e.g. `{consent: false}`). */
  parameters?: Record<string, unknown>;
}

export interface SubmitOptions extends CallOptions {
  version?: string | number;
  priority?: number;
  webhookUrl?: string;
  /** Default: a fresh key, kept across the call's retries. */
  idempotencyKey?: string;
}

export interface WaitOptions {
  /** Seconds to wait in all before throwing TimeoutError (default: no limit). */
  timeout?: number;
  /** Seconds between polls; default 1. */
  pollInterval?: number;
  /** Called with the job whenever its status or progress changed. */
  onProgress?: (job: Job) => void;
  signal?: AbortSignal;
}

export interface UsageQuery extends CallOptions {
  tenant?: string;
  key?: string;
  model?: string;
  since?: string;
  until?: string;
  /** Comma-separated from day, tenant, key, model, version (server default: day). */
  groupBy?: string;
}

const env: Record<string, string | undefined> =
  (globalThis as { process?: { env?: Record<string, string | undefined> } }).process?.env ?? {};

/** A fresh key for one side-effecting call (kept across its retries). */
export function newIdempotencyKey(): string {
  return `mgc-${crypto.randomUUID().replaceAll("-", "")}`;
}

/** An OIP request document (tensors as JSON `data`) for a job, from tensors. */
export function jobRequest(inputs: Record<string, Tensor>, outputs?: string[]): InferenceRequest {
  const doc: InferenceRequest = {
    inputs: Object.entries(inputs).map(([name, tensor]) => {
      const datatype = datatypeOf(tensor);
      return { name, datatype, shape: tensor.shape, data: jsonData(datatype, tensor.data) };
    }),
  };
  if (outputs !== undefined) doc.outputs = outputs.map((name) => ({ name }));
  return doc;
}

function segment(value: string | number): string {
  return encodeURIComponent(String(value));
}

function modelPath(model: string, version: string | number | undefined): string {
  const path = `/v2/models/${segment(model)}`;
  return version === undefined ? path : `${path}/versions/${segment(version)}`;
}

function sleep(seconds: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const timer = setTimeout(done, seconds * 1000);
    function done(): void {
      signal?.removeEventListener("abort", abort);
      resolve();
    }
    function abort(): void {
      clearTimeout(timer);
      reject(signal?.reason);
    }
    signal?.addEventListener("abort", abort, { once: true });
  });
}

/** True when the request surely never reached the server (no connection was made). */
function neverSent(error: unknown): boolean {
  const cause = (error as { cause?: { code?: string } }).cause;
  return ["ECONNREFUSED", "ENOTFOUND", "EAI_AGAIN", "UND_ERR_CONNECT_TIMEOUT"].includes(cause?.code ?? "");
}

/** modelgate's client. */
export class Client {
  readonly baseUrl: string;
  readonly timeout: number;
  readonly retry: RetryPolicy;
  readonly jobs: Jobs;
  readonly deployments: Deployments;
  private readonly headers: Record<string, string>;
  private readonly fetch: typeof fetch;

  constructor(baseUrl?: string, options: ClientOptions = {}) {
    this.baseUrl = (baseUrl ?? options.baseUrl ?? env.MODELGATE_BASE_URL ?? "http://localhost:8000").replace(/\/+$/, "");
    this.timeout = options.timeout ?? 60;
    this.retry = options.retry instanceof RetryPolicy ? options.retry : new RetryPolicy(options.retry);
    const apiKey = options.apiKey ?? env.MODELGATE_API_KEY;
    this.headers = { ...(apiKey ? { Authorization: `Bearer ${apiKey}` } : {}), ...options.headers };
    this.fetch = options.fetch ?? globalThis.fetch.bind(globalThis);
    this.jobs = new Jobs(this);
    this.deployments = new Deployments(this);
  }

  // -- inference and embeddings ------------------------------------------------------------

  /** OIP v2 inference: `inputs` by name, each a typed array (or plain array) with its shape. */
  async infer(model: string, inputs: Record<string, Tensor>, options: InferOptions = {}): Promise<InferResult> {
    const binary = options.binary ?? true;
    const { body, headerLength } = encodeRequest(inputs, {
      binary,
      outputs: options.outputs,
      requestId: options.requestId,
      parameters: options.parameters,
    });
    const headers: Record<string, string> = { "Content-Type": "application/json" };
    if (headerLength !== undefined) {
      headers["Content-Type"] = "application/octet-stream";
      headers["Inference-Header-Content-Length"] = String(headerLength);
    }
    // the server drops the request once its caller has given up on it
    headers["X-Request-Timeout-Ms"] = String(Math.round((options.timeout ?? this.timeout) * 1000));
    const path = `${modelPath(model, options.version)}/infer`;
    const answer = await this.send({ method: "POST", path, body, headers }, options);
    const length = answer.headers.get("inference-header-content-length");
    const { doc, outputs } = decodeResponse(answer.bytes, length === null ? undefined : Number(length));
    return new InferResult(
      doc.model_name,
      String(doc.model_version ?? ""),
      outputs,
      doc.id ?? undefined,
      doc.parameters ?? {},
      answer.headers.get("x-request-id") ?? undefined,
      answer.headers,
    );
  }

  /** `/v1/embeddings`: a text, texts, or token ids (as OpenAI takes them). */
  async embeddings(
    model: string,
    input: string | string[] | number[] | number[][],
    options: CallOptions & { dimensions?: number; user?: string } = {},
  ): Promise<Embeddings> {
    // token ids: OpenAI's inputs, which modelgate takes too (the document may say texts only)
    const json = { model, input, encoding_format: "float" } as Schemas["EmbeddingRequest"];
    if (options.dimensions !== undefined) json.dimensions = options.dimensions;
    if (options.user !== undefined) json.user = options.user;
    return (await this.send({ method: "POST", path: "/v1/embeddings", json }, options)).json() as Promise<Embeddings>;
  }

  // -- models and health -------------------------------------------------------------------

  /** The models the caller may use (`/v1/models`). */
  async models(options: CallOptions = {}): Promise<Model[]> {
    const list = (await (await this.send({ method: "GET", path: "/v1/models" }, options)).json()) as Schemas["ModelList"];
    return list.data;
  }

  /** A model's inputs, outputs, platform and versions. */
  async modelMetadata(model: string, version?: string | number, options: CallOptions = {}): Promise<ModelMetadata> {
    return (await this.send({ method: "GET", path: modelPath(model, version) }, options)).json() as Promise<ModelMetadata>;
  }

  /** Whether the model (version) is ready (a 503 is an answer here, not an error). */
  async modelReady(model: string, version?: string | number, options: CallOptions = {}): Promise<boolean> {
    const path = `${modelPath(model, version)}/ready`;
    return (await this.send({ method: "GET", path, okStatuses: [503] }, options)).status === 200;
  }

  async isLive(options: CallOptions = {}): Promise<boolean> {
    return (await this.send({ method: "GET", path: "/v2/health/live", okStatuses: [503] }, options)).status === 200;
  }

  async isReady(options: CallOptions = {}): Promise<boolean> {
    return (await this.send({ method: "GET", path: "/v2/health/ready", okStatuses: [503] }, options)).status === 200;
  }

  /** `GET /v2`: the server's name, version and extensions. */
  async serverMetadata(options: CallOptions = {}): Promise<ServerMetadata> {
    return (await this.send({ method: "GET", path: "/v2" }, options)).json() as Promise<ServerMetadata>;
  }

  // -- feedback and usage ------------------------------------------------------------------

  /**
   * Ground truth for earlier predictions (by their `request_id`): one item
   * (`{request_id, label, row?}` or `{request_id, labels}`) or several. Returns the rows labelled.
   */
  async feedback(items: FeedbackItem | FeedbackItem[], options: CallOptions = {}): Promise<number> {
    const list = Array.isArray(items) ? items : [items];
    if (list.length === 0) throw new RangeError("feedback needs at least one item");
    const json = list.length === 1 ? list[0] : { items: list };
    const answer = (await (await this.send({ method: "POST", path: "/v1/feedback", json }, options)).json()) as Schemas["FeedbackResponse"];
    return answer.accepted;
  }

  /** Usage and cost (`/admin/usage`): a tenant's key sees its own tenant only. */
  async usage(query: UsageQuery = {}): Promise<UsageReport> {
    const { tenant, key, model, since, until, groupBy } = query;
    const call: Call = { method: "GET", path: "/admin/usage", query: { tenant, key, model, since, until, group_by: groupBy } };
    return (await this.send(call, query)).json() as Promise<UsageReport>;
  }

  /** A tenant's quotas and how much of each is used. */
  async quotas(tenantId: string, options: CallOptions = {}): Promise<Quota[]> {
    const path = `/admin/tenants/${segment(tenantId)}/quotas`;
    return (await this.send({ method: "GET", path }, options)).json() as Promise<Quota[]>;
  }

  // -- sending -----------------------------------------------------------------------------

  /** @internal Run a call: its attempts, each with a timeout, within the retry budget. */
  async send(call: Call, options: CallOptions = {}): Promise<Answer> {
    const url = new URL(this.baseUrl + call.path);
    for (const [name, value] of Object.entries(call.query ?? {})) {
      if (value !== undefined) url.searchParams.set(name, String(value));
    }
    const headers: Record<string, string> = { ...this.headers, ...call.headers };
    let body: Uint8Array<ArrayBuffer> | string | undefined = call.body;
    if (call.json !== undefined) {
      body = JSON.stringify(call.json);
      headers["Content-Type"] = "application/json";
    }
    const keyed = Object.keys(headers).some((h) => h.toLowerCase() === "idempotency-key");
    const kind = { keyed, safe: keyed || call.idempotent === true || call.method !== "POST" };
    const timeout = options.timeout ?? this.timeout;
    const started = performance.now();
    for (let attempt = 1; ; attempt++) {
      const signals = [AbortSignal.timeout(timeout * 1000)];
      if (options.signal) signals.push(options.signal);
      const signal = AbortSignal.any(signals);
      let delay: number | undefined;
      let failure: ModelgateError;
      try {
        const response = await this.fetch(url, { method: call.method, headers, body: body ?? null, signal });
        const bytes = new Uint8Array(await response.arrayBuffer());
        if (response.status < 400 || call.okStatuses?.includes(response.status)) {
          return new Answer(response.status, response.headers, bytes);
        }
        failure = errorFromResponse(response.status, response.statusText, response.headers, new TextDecoder().decode(bytes));
        const elapsed = (performance.now() - started) / 1000;
        const retryAfter = retryAfterSeconds(response.headers);
        delay = this.retry.delayAfterStatus(response.status, retryAfter, kind, attempt, elapsed);
      } catch (error) {
        if (options.signal?.aborted) throw options.signal.reason;
        const timedOut = (error as Error).name === "TimeoutError" || (error as Error).name === "AbortError";
        failure = timedOut
          ? new TimeoutError(`no answer from ${url.origin} within ${timeout} s`, { cause: error })
          : new ConnectionError(`cannot reach ${url.origin}: ${String((error as { cause?: unknown }).cause ?? error)}`, { cause: error });
        const elapsed = (performance.now() - started) / 1000;
        delay = this.retry.delayAfterFailure(!timedOut && neverSent(error), kind, attempt, elapsed);
      }
      if (delay === undefined) throw failure;
      await sleep(delay, options.signal);
    }
  }
}

/** @internal A successful answer, its body read. */
export class Answer {
  constructor(
    readonly status: number,
    readonly headers: Headers,
    readonly bytes: Uint8Array,
  ) {}

  json(): unknown {
    return JSON.parse(new TextDecoder().decode(this.bytes));
  }
}

/** Asynchronous jobs (`client.jobs`). */
export class Jobs {
  constructor(private readonly client: Client) {}

  /**
   * Submit OIP requests (JSON `data`; {@link jobRequest} builds one from tensors) as one job.
   * It carries an `Idempotency-Key`, so a retried submission answers the job the first created.
   */
  async submit(model: string, requests: InferenceRequest[], options: SubmitOptions = {}): Promise<Job> {
    if (requests.length === 0) throw new RangeError("a job needs at least one request");
    const json: Record<string, unknown> = { model, requests };
    if (options.version !== undefined) json.version = String(options.version);
    if (options.priority !== undefined) json.priority = options.priority;
    if (options.webhookUrl !== undefined) json.webhook_url = options.webhookUrl;
    const headers = { "Idempotency-Key": options.idempotencyKey ?? newIdempotencyKey() };
    return (await this.client.send({ method: "POST", path: "/v1/jobs", json, headers }, options)).json() as Promise<Job>;
  }

  /** A job's status, progress and error. */
  async get(jobId: string, options: CallOptions = {}): Promise<Job> {
    return (await this.client.send({ method: "GET", path: `/v1/jobs/${segment(jobId)}` }, options)).json() as Promise<Job>;
  }

  /** Cancel a job (safe to send again: cancelling twice changes nothing more). */
  async cancel(jobId: string, options: CallOptions = {}): Promise<Job> {
    const call: Call = { method: "POST", path: `/v1/jobs/${segment(jobId)}/cancel`, idempotent: true };
    return (await this.client.send(call, options)).json() as Promise<Job>;
  }

  /** A page of the caller's jobs, newest first (`after`: the last id of the page before). */
  async list(query: CallOptions & { status?: JobState; model?: string; after?: string; limit?: number } = {}): Promise<JobList> {
    const { status, model, after, limit = 20 } = query;
    const call: Call = { method: "GET", path: "/v1/jobs", query: { status, model, after, limit } };
    return (await this.client.send(call, query)).json() as Promise<JobList>;
  }

  /** Poll until the job has finished and return it, whatever its status (check `status`). */
  async wait(jobId: string, options: WaitOptions = {}): Promise<Job> {
    const interval = options.pollInterval ?? 1;
    const deadline = options.timeout === undefined ? Infinity : performance.now() + options.timeout * 1000;
    let seen = "";
    for (;;) {
      const job = await this.get(jobId, options.signal ? { signal: options.signal } : {});
      const state = JSON.stringify([job.status, job.progress]);
      if (options.onProgress && state !== seen) options.onProgress(job);
      seen = state;
      if (TERMINAL_STATES.has(job.status)) return job;
      if (performance.now() + interval * 1000 > deadline) {
        throw new TimeoutError(`job ${jobId} is still ${job.status} after ${options.timeout} s`);
      }
      await sleep(interval, options.signal);
    }
  }

  /** Each item's result in item order, a page at a time as you iterate (`for await`). */
  async *results(jobId: string, options: CallOptions & { pageSize?: number } = {}): AsyncGenerator<JobResult> {
    let after = -1;
    for (;;) {
      const call: Call = { method: "GET", path: `/v1/jobs/${segment(jobId)}/results`, query: { after, limit: options.pageSize ?? 100 } };
      const page = (await (await this.client.send(call, options)).json()) as Schemas["JobResultList"];
      yield* page.data;
      if (!page.has_more) return;
      after = page.next_after;
    }
  }
}

/** A model's deployment: versions, traffic split, canary, shadow (`client.deployments`; an
 * operator's key, scope `tenants:admin`). */
export class Deployments {
  constructor(private readonly client: Client) {}

  private path(model: string): string {
    return `/admin/models/${segment(model)}/deployment`;
  }

  /** The model's deployment (NotFoundError when it has none). */
  async get(model: string, options: CallOptions = {}): Promise<Deployment> {
    return (await this.client.send({ method: "GET", path: this.path(model) }, options)).json() as Promise<Deployment>;
  }

  /** Replace the deployment: a `split` summing to 100, or a `canary`, and a `shadow`. */
  async put(model: string, spec: DeploymentSpec, options: CallOptions = {}): Promise<Deployment> {
    const json = { split: [], canary: null, shadow: null, ...spec };
    return (await this.client.send({ method: "PUT", path: this.path(model), json }, options)).json() as Promise<Deployment>;
  }

  /** Make the canary (or `version`) the default. */
  async promote(model: string, version?: number, options: CallOptions & { idempotencyKey?: string } = {}): Promise<Deployment> {
    return this.action(model, "promote", version === undefined ? undefined : { version }, options);
  }

  /** End the split or canary: the default version takes all traffic again. */
  async rollback(model: string, options: CallOptions & { idempotencyKey?: string } = {}): Promise<Deployment> {
    return this.action(model, "rollback", undefined, options);
  }

  private async action(model: string, action: string, json: unknown, options: CallOptions & { idempotencyKey?: string }): Promise<Deployment> {
    const headers = { "Idempotency-Key": options.idempotencyKey ?? newIdempotencyKey() };
    const call: Call = { method: "POST", path: `${this.path(model)}/${action}`, json, headers };
    return (await this.client.send(call, options)).json() as Promise<Deployment>;
  }
}
