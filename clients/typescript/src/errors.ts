/**
 * The client's errors, one tree (the Python SDK's, by the same names):
 *
 * ```text
 * ModelgateError
 * ├── APIError(status, code, message)   the server answered with an error
 * │   ├── BadRequestError               400, 413, 422: the request itself is wrong
 * │   ├── AuthenticationError           401
 * │   ├── PermissionDeniedError         403
 * │   ├── NotFoundError                 404
 * │   ├── ConflictError                 409 (e.g. an Idempotency-Key still running)
 * │   ├── RateLimitError                429, with retryAfter (seconds)
 * │   └── ServerError                   5xx
 * ├── TimeoutError                      no answer in time, or a job's wait ran out
 * └── ConnectionError                   no connection
 * ```
 *
 * Error bodies come in the shapes modelgate speaks: OIP's `{"error": "message"}` (`/v2`,
 * `/admin`), OpenAI's `{"error": {"message", "type", "param", "code"}}` (`/v1`) and FastAPI's
 * validation `{"detail": [...]}` (`/admin`, 422). Anything else is kept as text.
 */

/** The root of every error this package throws. */
export class ModelgateError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** The server answered with an error status. */
export class APIError extends ModelgateError {
  /** The HTTP status. */
  readonly status: number;
  /** The text of the error. */
  readonly detail: string;
  /** OpenAI's `code` (else its `type`), `validation_error` for a 422; undefined for OIP. */
  readonly code: string | undefined;
  /** The decoded body (JSON, else text). */
  readonly body: unknown;
  readonly headers: Headers;
  /** The server's `x-request-id` for the call, for its logs. */
  readonly requestId: string | undefined;

  constructor(status: number, detail: string, init: { code?: string | undefined; body?: unknown; headers?: Headers } = {}) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
    this.code = init.code;
    this.body = init.body;
    this.headers = init.headers ?? new Headers();
    this.requestId = this.headers.get("x-request-id") ?? undefined;
  }
}

/** 400, 413 or 422: the server refused the request as sent; retrying will not help. */
export class BadRequestError extends APIError {}
/** 401: no credential, or one the server does not accept. */
export class AuthenticationError extends APIError {}
/** 403: the credential lacks the scope, or the resource belongs to another tenant. */
export class PermissionDeniedError extends APIError {}
/** 404: no such model, version, job, deployment or route. */
export class NotFoundError extends APIError {}
/** 409: a precondition failed (a keyed request still runs, a job that cannot be cancelled). */
export class ConflictError extends APIError {}
/** 5xx: the server failed, is overloaded (503) or ran out of time (504). */
export class ServerError extends APIError {}

/** 429: a rate limit or quota refused the call. */
export class RateLimitError extends APIError {
  /** The server's `Retry-After` in seconds (undefined when it sent none). */
  readonly retryAfter: number | undefined;

  constructor(status: number, detail: string, init: { code?: string | undefined; body?: unknown; headers?: Headers } = {}) {
    super(status, detail, init);
    this.retryAfter = retryAfterSeconds(this.headers);
  }
}

/** No answer within the timeout, or a job's wait ran out. */
export class TimeoutError extends ModelgateError {}
/** The server could not be reached, or the connection broke. */
export class ConnectionError extends ModelgateError {}

type APIErrorClass = new (status: number, detail: string, init: { code?: string | undefined; body?: unknown; headers?: Headers }) => APIError;

const BY_STATUS: Record<number, APIErrorClass> = {
  400: BadRequestError,
  401: AuthenticationError,
  403: PermissionDeniedError,
  404: NotFoundError,
  409: ConflictError,
  413: BadRequestError,
  422: BadRequestError,
  429: RateLimitError,
};

/** The error for an error answer whose body is `text`. */
export function errorFromResponse(status: number, statusText: string, headers: Headers, text: string): APIError {
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: kept as text
  }
  const [detail, code] = messageAndCode(body, statusText || "error");
  const kind = BY_STATUS[status] ?? (status >= 500 ? ServerError : APIError);
  return new kind(status, detail, { code, body, headers });
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function messageAndCode(body: unknown, fallback: string): [string, string | undefined] {
  if (isObject(body)) {
    const error = body.error;
    if (typeof error === "string") return [error, undefined]; // OIP and the admin API
    if (isObject(error)) {
      // OpenAI
      const code = error.code ?? error.type;
      return [String(error.message ?? fallback), code == null ? undefined : String(code)];
    }
    const detail = body.detail;
    if (Array.isArray(detail)) {
      // FastAPI validation errors
      const parts = detail.filter(isObject).map((item) => {
        const where = Array.isArray(item.loc) ? item.loc.join(".") : "";
        return `${where}: ${String(item.msg ?? "")}`;
      });
      return [parts.join("; ") || fallback, "validation_error"];
    }
    if (typeof detail === "string") return [detail, undefined];
  }
  if (typeof body === "string" && body.trim()) return [body.trim().slice(0, 1000), undefined];
  return [fallback, undefined];
}

/** `Retry-After` in seconds (delta-seconds or an HTTP date); undefined when absent or unreadable. */
export function retryAfterSeconds(headers: Headers): number | undefined {
  const value = headers.get("retry-after")?.trim();
  if (!value) return undefined;
  if (/^\d+(\.\d+)?$/.test(value)) return Number(value);
  const when = Date.parse(value);
  if (Number.isNaN(when)) return undefined;
  return Math.max(0, (when - Date.now()) / 1000);
}
