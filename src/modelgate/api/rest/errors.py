"""Error kinds -> HTTP status for the OIP routes (Triton's mapping, with 413 and Retry-After)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["http_status", "rate_limit_headers", "retry_after_header"]

_STATUS = {
    ErrorKind.INVALID_ARGUMENT: 400,
    ErrorKind.UNAUTHENTICATED: 401,
    ErrorKind.PERMISSION_DENIED: 403,
    ErrorKind.RATE_LIMITED: 429,
    ErrorKind.NOT_FOUND: 404,
    ErrorKind.PAYLOAD_TOO_LARGE: 413,
    ErrorKind.UNAVAILABLE: 503,
    ErrorKind.OVERLOADED: 503,
    ErrorKind.DEADLINE_EXCEEDED: 504,
    ErrorKind.UNSUPPORTED: 501,
    ErrorKind.FAILED_PRECONDITION: 409,
    ErrorKind.INTERNAL: 500,
}


def http_status(exc: ModelgateError) -> int:
    return _STATUS[exc.kind]


def retry_after_header(exc: ModelgateError) -> list[tuple[bytes, bytes]]:
    if exc.retry_after is None:
        return []
    return [(b"retry-after", str(max(1, math.ceil(exc.retry_after))).encode())]


def rate_limit_headers(details: Mapping[str, Any]) -> list[tuple[bytes, bytes]]:
    """``X-RateLimit-Limit`` / ``-Remaining`` / ``-Reset`` (seconds until the bucket is full)."""
    if "limit" not in details:
        return []
    return [
        (b"x-ratelimit-limit", str(int(details["limit"])).encode()),
        (b"x-ratelimit-remaining", str(int(details["remaining"])).encode()),
        (b"x-ratelimit-reset", str(math.ceil(details["reset"])).encode()),
    ]
