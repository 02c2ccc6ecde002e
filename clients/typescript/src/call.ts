/** One HTTP request of an operation ({@link Call}), what every operation takes besides its own
 * arguments ({@link CallOptions}), and what sends it ({@link Sender}: the client). */

/** What every operation takes besides its own arguments. */
export interface CallOptions {
  /** Seconds this call's attempts may each take (default: the client's). */
  timeout?: number;
  /** Aborts the call (and its retries); it rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** One HTTP request of an operation. */
export interface Call {
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

/** What sends calls: the client (its retries, timeouts and errors). */
export interface Sender {
  send(call: Call, options?: CallOptions): Promise<Answer>;
}

/** A fresh key for one side-effecting call (kept across its retries). */
export function newIdempotencyKey(): string {
  return `mgc-${crypto.randomUUID().replaceAll("-", "")}`;
}

/** A path segment, escaped. */
export function segment(value: string | number): string {
  return encodeURIComponent(String(value));
}

/** Resolves after `seconds`; rejects with the signal's reason when it aborts first. */
export function sleep(seconds: number, signal: AbortSignal | undefined): Promise<void> {
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
