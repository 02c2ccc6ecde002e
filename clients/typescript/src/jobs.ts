/** Asynchronous jobs (`client.jobs`, docs/jobs.md): submit, wait, results, list, cancel. */
import { type Call, type CallOptions, type Sender, newIdempotencyKey, segment, sleep } from "./call.js";
import { TimeoutError } from "./errors.js";
import type { components } from "./schema.js";
import { type Tensor, datatypeOf, jsonData } from "./tensors.js";

type Schemas = components["schemas"];
export type Job = Schemas["Job"];
export type JobState = Schemas["JobState"];
/** An item's result: `response` is an OIP answer (JSON `data`) when `status` is "ok". */
export type JobResult = Omit<Schemas["JobResult"], "response"> & {
  response?: Schemas["InferenceResponse"] | null;
};
export type JobList = Schemas["JobList"];
export type InferenceRequest = Schemas["InferenceRequest"];

/** A job's status once it changes no more. */
export const TERMINAL_STATES: ReadonlySet<JobState> = new Set(["succeeded", "failed", "cancelled", "dead"]);

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

/** Asynchronous jobs (`client.jobs`). */
export class Jobs {
  constructor(private readonly client: Sender) {}

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
      yield* page.data as JobResult[]; // the document types response as any object
      if (!page.has_more) return;
      after = page.next_after;
    }
  }
}
