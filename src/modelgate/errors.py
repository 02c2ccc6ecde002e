"""The one error type of modelgate, transport-neutral.

::

    ModelgateError(kind, message)        raised by the core and the runtimes
      kind: ErrorKind
        INVALID_ARGUMENT   the request is malformed or does not match the model's signature
        UNAUTHENTICATED    no credential, or one that is malformed, unknown, expired or revoked
        PERMISSION_DENIED  a valid credential without the scope the operation needs
        NOT_FOUND          unknown model, version or output (also: a model the caller may not
                           see, so that its existence does not leak)
        RATE_LIMITED       a rate limit or quota is used up; retry after ``retry_after`` seconds
        PAYLOAD_TOO_LARGE  the body or a tensor is over a configured limit
        UNAVAILABLE        the model exists but is not ready (loading, unloaded, failed)
        OVERLOADED         a bounded queue is full; retry after ``retry_after`` seconds
        DEADLINE_EXCEEDED  the caller's deadline passed before the work could start
        UNSUPPORTED        a protocol feature or datatype modelgate does not implement
        FAILED_PRECONDITION an operation that conflicts with the current state
        INTERNAL           a bug or a runtime failure; the only kind that maps to a 5xx
                           other than UNAVAILABLE/OVERLOADED

The core never speaks HTTP or gRPC: each adapter maps a kind to its protocol's status
(``api/rest/errors.py``, ``api/grpc/errors.py``).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any

__all__ = ["ErrorKind", "ModelgateError", "deadline_exceeded"]


class ErrorKind(enum.Enum):
    INVALID_ARGUMENT = "invalid_argument"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    NOT_FOUND = "not_found"
    RATE_LIMITED = "rate_limited"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNAVAILABLE = "unavailable"
    OVERLOADED = "overloaded"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    UNSUPPORTED = "unsupported"
    FAILED_PRECONDITION = "failed_precondition"
    INTERNAL = "internal"


class ModelgateError(Exception):
    """An error with a kind that each protocol adapter maps to its own status."""

    def __init__(
        self,
        kind: ErrorKind,
        message: str,
        *,
        retry_after: float | None = None,
        details: Mapping[str, Any] | None = None,
    ):
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.retry_after = retry_after
        #: protocol-neutral extras an adapter may surface (RATE_LIMITED: limit, remaining,
        #: reset seconds, for the X-RateLimit-* headers)
        self.details = details or {}

    def __repr__(self) -> str:
        return f"ModelgateError({self.kind.name}, {self.message!r})"


def invalid(message: str) -> ModelgateError:
    return ModelgateError(ErrorKind.INVALID_ARGUMENT, message)


def deadline_exceeded() -> ModelgateError:
    """The error of a request whose caller's deadline passed before its work started."""
    return ModelgateError(
        ErrorKind.DEADLINE_EXCEEDED, "the request's deadline passed before it could run"
    )
