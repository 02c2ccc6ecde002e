/**
 * When a failed call is tried again, and after how long (the Python SDK's rules).
 *
 * - *safe* calls: reads (GET), PUT and DELETE, cancelling a job, and any call carrying an
 *   `Idempotency-Key`. Tried again after a connection error, a timeout, and 408, 429, 500,
 *   502, 503 and 504; and 409 when the call carries a key (the key's first request still
 *   runs);
 * - every other call (inference, embeddings, feedback): tried again only when the server
 *   surely did no work: 429 and 503 (refused by a limit, a quota or load shedding before the
 *   request ran), and a connection that was refused. A timeout or a 500 is not retried: the
 *   model may have run, and been metered.
 *
 * Each wait is the server's `Retry-After` when it sends one, else an exponential back-off with
 * full jitter. A wait that would end past `totalTimeout` is not started: the last error is
 * thrown instead.
 */

const SAFE_STATUSES = new Set([408, 429, 500, 502, 503, 504]);
const KEYED_STATUSES = new Set([...SAFE_STATUSES, 409]);
const REFUSED_STATUSES = new Set([429, 503]);

export interface RetryOptions {
  /** Attempts in all (1: no retries); default 3. */
  maxAttempts?: number;
  /** Seconds from the first attempt after which no wait is started; default 60. */
  totalTimeout?: number;
  /** The first back-off's cap in seconds, doubling each attempt; default 0.5. */
  backoff?: number;
  /** The largest back-off in seconds; default 8. */
  maxBackoff?: number;
}

/** The kind of call, as far as retrying it goes. */
export interface CallKind {
  /** Sending it twice changes nothing more than once (GET, PUT, DELETE, a cancel, a keyed call). */
  safe: boolean;
  /** It carries an `Idempotency-Key`. */
  keyed: boolean;
}

/** The retry budget. */
export class RetryPolicy {
  readonly maxAttempts: number;
  readonly totalTimeout: number;
  readonly backoff: number;
  readonly maxBackoff: number;

  constructor(options: RetryOptions = {}) {
    this.maxAttempts = options.maxAttempts ?? 3;
    this.totalTimeout = options.totalTimeout ?? 60;
    this.backoff = options.backoff ?? 0.5;
    this.maxBackoff = options.maxBackoff ?? 8;
    if (!(this.maxAttempts >= 1)) throw new RangeError("maxAttempts must be at least 1");
    if (this.totalTimeout < 0 || this.backoff < 0 || this.maxBackoff < 0) {
      throw new RangeError("retry times must not be negative");
    }
  }

  /** Seconds to wait before trying again after an error status; undefined: stop. */
  delayAfterStatus(status: number, retryAfter: number | undefined, call: CallKind, attempt: number, elapsed: number): number | undefined {
    const statuses = call.keyed ? KEYED_STATUSES : call.safe ? SAFE_STATUSES : REFUSED_STATUSES;
    if (!statuses.has(status)) return undefined;
    return this.delay(retryAfter, attempt, elapsed);
  }

  /** Seconds to wait after no answer (`neverSent`: the connection was refused); undefined: stop. */
  delayAfterFailure(neverSent: boolean, call: CallKind, attempt: number, elapsed: number): number | undefined {
    if (!(call.safe || neverSent)) return undefined;
    return this.delay(undefined, attempt, elapsed);
  }

  private delay(retryAfter: number | undefined, attempt: number, elapsed: number): number | undefined {
    if (attempt >= this.maxAttempts) return undefined;
    const delay =
      retryAfter ?? Math.random() * Math.min(this.maxBackoff, this.backoff * 2 ** (attempt - 1));
    if (elapsed + delay > this.totalTimeout) return undefined;
    return delay;
  }
}

/** No retries at all. */
export const NO_RETRY = new RetryPolicy({ maxAttempts: 1 });
