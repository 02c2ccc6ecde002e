/**
 * `Client`: every operation of modelgate's own API over `fetch`, the Python SDK's by the same
 * names (camelCase). Each operation builds a {@link Call} (method, path, body, headers) and
 * `send` runs it: one timeout per attempt (an `AbortSignal`), retries within the budget
 * (./retry.ts), and an error of ./errors.ts for an error status.
 */
import { Answer, type Call, type CallOptions, segment, sleep } from "./call.js";
import { Deployments } from "./deployments.js";
import { ConnectionError, ModelgateError, TimeoutError, errorFromResponse, retryAfterSeconds } from "./errors.js";
import { Jobs } from "./jobs.js";
import { RetryPolicy, type RetryOptions } from "./retry.js";
import type { components } from "./schema.js";
import { type OutputData, type OutputTensor, type Tensor, decodeResponse, encodeRequest } from "./tensors.js";

type Schemas = components["schemas"];
export type Embeddings = Schemas["EmbeddingResponse"];
export type Model = Schemas["Model"];
export type ModelMetadata = Schemas["ModelMetadataResponse"];
export type ServerMetadata = Schemas["ServerMetadataResponse"];
export type UsageReport = Schemas["UsageOut"];
export type Quota = Schemas["QuotaOut"];
export type FeedbackItem = Schemas["FeedbackLabel"] | Schemas["FeedbackLabels"];

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

  /** The attributions asked for with `explain: true` (docs/explanations.md); undefined without. */
  get explanation(): Explanation | undefined {
    const p = this.parameters;
    const output = p.explain_output;
    const found = typeof output === "string" ? this.outputs[`${output}_attributions`] : undefined;
    if (found === undefined || typeof output !== "string") return undefined;
    const [rows = 0, features = 0] = found.shape;
    const flat = found.data as Float32Array;
    return {
      attributions: Array.from({ length: rows }, (_, r) => Array.from(flat.subarray(r * features, (r + 1) * features))),
      baseValue: Number(p.explain_base_value),
      method: String(p.explain_method),
      output,
      target: p.explain_target === undefined ? undefined : String(p.explain_target),
      link: String(p.explain_link ?? "identity"),
      evaluations: Number(p.explain_evaluations ?? 0),
      samples: p.explain_samples === undefined ? undefined : Number(p.explain_samples),
    };
  }
}

/**
 * Per-feature attributions of one output column: `attributions[r][i]` is feature i's part of
 * row r (the input's feature order), and `baseValue + sum(attributions[r])` is the output in
 * `link` space (`logit`: the log-odds of the `target` column of `output`), within 1e-3.
 */
export interface Explanation {
  attributions: number[][];
  baseValue: number;
  /** "linear" (exact) or "kernel_shap". */
  method: string;
  output: string;
  /** The column explained (its label, else its index); undefined for a one-column output. */
  target: string | undefined;
  link: string;
  /** Model rows the server ran to compute them. */
  evaluations: number;
  /** KernelSHAP's coalitions per row; undefined for the linear method. */
  samples: number | undefined;
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
  /** Ask for each row's per-feature attributions (`result.explanation`): models whose
   * manifest allows it (docs/explanations.md); others answer a `BadRequestError`. */
  explain?: boolean;
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

function modelPath(model: string, version: string | number | undefined): string {
  const path = `/v2/models/${segment(model)}`;
  return version === undefined ? path : `${path}/versions/${segment(version)}`;
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
      parameters: options.explain ? { ...options.parameters, explain: true } : options.parameters,
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
    const json: Schemas["EmbeddingRequest"] = { model, input, encoding_format: "float" };
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

