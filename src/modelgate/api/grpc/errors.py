"""Error kinds -> gRPC status codes, with ``retry-after`` trailing metadata (built once per value)
when overloaded or refused."""

from __future__ import annotations

import functools
import math
from typing import Any, NoReturn

import grpc

from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["abort", "grpc_status", "retry_after_metadata"]

_STATUS = {
    ErrorKind.INVALID_ARGUMENT: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorKind.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED,
    ErrorKind.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED,
    ErrorKind.RATE_LIMITED: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorKind.PAYLOAD_TOO_LARGE: grpc.StatusCode.RESOURCE_EXHAUSTED,
    ErrorKind.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.OVERLOADED: grpc.StatusCode.UNAVAILABLE,
    ErrorKind.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
    ErrorKind.UNSUPPORTED: grpc.StatusCode.UNIMPLEMENTED,
    ErrorKind.FAILED_PRECONDITION: grpc.StatusCode.FAILED_PRECONDITION,
    ErrorKind.INTERNAL: grpc.StatusCode.INTERNAL,
}


def grpc_status(exc: ModelgateError) -> Any:
    return _STATUS[exc.kind]


def retry_after_metadata(seconds: float) -> tuple[tuple[str, str], ...]:
    """The trailing ``retry-after`` of a wait of ``seconds`` (whole seconds, at least 1),
    built once per value."""
    return _retry_after(max(1, math.ceil(seconds)))


@functools.lru_cache(maxsize=4096)
def _retry_after(seconds: int) -> tuple[tuple[str, str], ...]:
    return (("retry-after", str(seconds)),)


async def abort(context: Any, exc: ModelgateError) -> NoReturn:
    """End the RPC with the status of ``exc``; ``context.abort`` raises, so this never returns."""
    metadata: tuple[tuple[str, str], ...] = ()
    if exc.retry_after is not None:
        metadata = retry_after_metadata(exc.retry_after)
    await context.abort(_STATUS[exc.kind], exc.message, metadata)
    raise AssertionError("context.abort returned")  # pragma: no cover
