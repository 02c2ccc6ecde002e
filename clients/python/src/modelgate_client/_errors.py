"""The client's exceptions, one tree::

    ModelgateError
    ├── APIError(status, code, message)       the server answered with an error
    │   ├── BadRequestError                   400, 413, 422: the request itself is wrong
    │   ├── AuthenticationError               401
    │   ├── PermissionDeniedError             403
    │   ├── NotFoundError                     404
    │   ├── ConflictError                     409 (e.g. an Idempotency-Key still running)
    │   ├── RateLimitError                    429, with ``retry_after`` (seconds)
    │   └── ServerError                       5xx (503 and 504 included)
    ├── TimeoutError                          no answer in time (also a builtin TimeoutError)
    └── ConnectionError                       no connection (also a builtin ConnectionError)

Error bodies come in the shapes modelgate speaks: OIP's ``{"error": "message"}`` (``/v2``,
``/admin``), OpenAI's ``{"error": {"message", "type", "param", "code"}}`` (``/v1``) and
FastAPI's validation ``{"detail": [...]}`` (``/admin``, 422). Anything else is kept as text.
"""

from __future__ import annotations

import builtins
import json
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

__all__ = [
    "APIError",
    "AuthenticationError",
    "BadRequestError",
    "ConflictError",
    "ConnectionError",
    "ModelgateError",
    "NotFoundError",
    "PermissionDeniedError",
    "RateLimitError",
    "ServerError",
    "TimeoutError",
    "error_from_response",
    "retry_after_seconds",
]


class ModelgateError(Exception):
    """The root of every exception this package raises."""


class APIError(ModelgateError):
    """The server answered with an error status.

    ``status`` is the HTTP status, ``code`` the machine-readable code when the body carries
    one (OpenAI's ``code``, else its ``type``; None for OIP bodies), ``message`` the text,
    ``body`` the decoded body, ``request_id`` the ``x-request-id`` the server gave the call.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        code: str | None = None,
        body: Any = None,
        headers: httpx.Headers | None = None,
    ) -> None:
        super().__init__(f"{status}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.body = body
        self.headers = headers if headers is not None else httpx.Headers()
        self.request_id: str | None = self.headers.get("x-request-id")


class BadRequestError(APIError):
    """400, 413 or 422: the server refused the request as sent; retrying will not help."""


class AuthenticationError(APIError):
    """401: no credential, or one the server does not accept."""


class PermissionDeniedError(APIError):
    """403: the credential lacks the scope, or the resource belongs to another tenant."""


class NotFoundError(APIError):
    """404: no such model, version, job, deployment or route."""


class ConflictError(APIError):
    """409: a precondition failed (the request with this Idempotency-Key still runs, a job
    that cannot be cancelled)."""


class RateLimitError(APIError):
    """429: a rate limit or quota refused the call; ``retry_after`` is the server's
    ``Retry-After`` in seconds (None when it sent none)."""

    def __init__(self, status: int, message: str, **kwargs: Any) -> None:
        super().__init__(status, message, **kwargs)
        self.retry_after = retry_after_seconds(self.headers)


class ServerError(APIError):
    """5xx: the server failed, is overloaded (503) or ran out of time (504)."""


class TimeoutError(ModelgateError, builtins.TimeoutError):
    """No answer within the timeout (connect, read, write or pool), or a job's wait ran out."""


class ConnectionError(ModelgateError, builtins.ConnectionError):
    """The server could not be reached, or the connection broke."""


_BY_STATUS: dict[int, type[APIError]] = {
    400: BadRequestError,
    401: AuthenticationError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: BadRequestError,
    422: BadRequestError,
    429: RateLimitError,
}


def error_from_response(response: httpx.Response) -> APIError:
    """The exception for an error ``response`` (its body read)."""
    status = response.status_code
    body: Any
    try:
        body = json.loads(response.content)
    except ValueError:
        body = response.text
    message, code = _message_and_code(body, response.reason_phrase or "error")
    kind = _BY_STATUS.get(status)
    if kind is None:
        kind = ServerError if status >= 500 else APIError
    return kind(status, message, code=code, body=body, headers=response.headers)


def _message_and_code(body: Any, fallback: str) -> tuple[str, str | None]:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, str):  # OIP and the admin API
            return error, None
        if isinstance(error, dict):  # OpenAI
            code = error.get("code") or error.get("type")
            return str(error.get("message", fallback)), None if code is None else str(code)
        detail = body.get("detail")
        if isinstance(detail, list):  # FastAPI validation errors
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    where = ".".join(str(p) for p in item.get("loc", ()))
                    parts.append(f"{where}: {item.get('msg', '')}")
            return "; ".join(parts) or fallback, "validation_error"
        if isinstance(detail, str):
            return detail, None
    if isinstance(body, str) and body.strip():
        return body.strip()[:1000], None
    return fallback, None


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    """``Retry-After`` in seconds (delta-seconds or an HTTP date); None when absent or
    unreadable."""
    value = headers.get("retry-after")
    if value is None:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # "-0000": UTC, by RFC 5322
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
