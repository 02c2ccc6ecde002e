"""The gRPC side of the per-call pipeline (api/call.py): a call's request id and trace
context read from its metadata, its status code as the log and span see it, and
:func:`translated`, which runs a servicer method through the whole pipeline."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from functools import lru_cache, wraps
from typing import Any, Protocol, TypeVar
from urllib.parse import unquote

import grpc

from modelgate.api.call import CallPipeline, deadline_after
from modelgate.api.grpc.errors import abort, grpc_status
from modelgate.core.access.identity import Principal
from modelgate.errors import ModelgateError
from modelgate.observability.logs import request_id_from
from modelgate.observability.tracing import RequestSpan

__all__ = [
    "CALLER",
    "SERVICE_NAME",
    "begin_call",
    "call_deadline",
    "finish_call",
    "peer_host",
    "translated",
]

log = logging.getLogger("modelgate.grpc")

SERVICE_NAME = "inference.GRPCInferenceService"

#: the principal of the call in progress, for the abuse guard's error path (grpc.aio runs
#: each call in a task of its own, so this never leaks from one call to another)
CALLER: ContextVar[Principal | None] = ContextVar("modelgate_grpc_caller", default=None)

#: the codes that are the server's fault: their spans are marked as errors (OpenTelemetry's
#: semantic conventions for gRPC servers)
_SERVER_FAULTS = frozenset(
    {
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


class _Servicer(Protocol):
    @property
    def pipeline(self) -> CallPipeline[Any]: ...


_S = TypeVar("_S", bound=_Servicer)
_R = TypeVar("_R")
_Handler = Callable[[_S, Any, Any], Awaitable[_R]]


def translated(handler: _Handler[_S, _R]) -> _Handler[_S, _R]:
    """Map a :class:`ModelgateError` to its status; log anything else and answer INTERNAL.
    The call gets a request id, a span when tracing, and a line in the request log."""
    method = handler.__name__

    @wraps(handler)
    async def call(self: _S, request: Any, context: Any) -> _R:
        pipeline = self.pipeline
        start = time.perf_counter_ns()
        request_id, traceparent, span = begin_call(pipeline, method, context)
        code = grpc.StatusCode.INTERNAL
        try:
            result = await handler(self, request, context)
            code = grpc.StatusCode.OK
            return result
        except ModelgateError as exc:
            code = grpc_status(exc)
            # counts the failure, and slows the answer if due
            await pipeline.penalize(CALLER.get(), exc)
            await abort(context, exc)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:  # the outermost layer: the server must keep serving
            log.exception("unhandled error in %s", method)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            raise  # pragma: no cover - abort raises
        finally:
            if pipeline.observed:
                model = getattr(request, "name", "") or getattr(request, "model_name", "") or None
                version = getattr(request, "version", "") or None
                finish_call(
                    pipeline,
                    method,
                    start,
                    request_id,
                    traceparent,
                    span,
                    code,
                    CALLER.get(),
                    model,
                    version,
                )

    return call


def begin_call(
    pipeline: CallPipeline[Any], method: str, context: Any
) -> tuple[str, str | None, RequestSpan | None]:
    """The call's request id, the client's ``traceparent`` and the call's span (attached),
    from the metadata."""
    sent_id = traceparent = tracestate = None
    for key, value in context.invocation_metadata() or ():
        if key == "x-request-id":
            sent_id = value
        elif key == "traceparent":
            traceparent = value
        elif key == "tracestate":
            tracestate = value
    request_id = request_id_from(sent_id)
    span = pipeline.rpc_span(SERVICE_NAME, method, request_id, traceparent, tracestate)
    return request_id, traceparent, span


def finish_call(
    pipeline: CallPipeline[Any],
    method: str,
    start: int,
    request_id: str,
    traceparent: str | None,
    span: RequestSpan | None,
    code: Any,
    principal: Principal | None,
    model: str | None,
    version: str | None,
    line: int | None = None,
) -> None:
    """The call's span ends and its log line is written (the caller checks
    ``pipeline.observed`` first); ``line``: a memo refusal's (api/call.py)."""
    pipeline.finish(
        method,
        f"/{SERVICE_NAME}/{method}",
        start,
        request_id,
        traceparent,
        span,
        code.value[0],
        code.name.lower() if code in _SERVER_FAULTS else None,
        principal,
        model,
        version,
        line,
    )


@lru_cache(maxsize=4096)  # asked on every call, with a handful of peers per connection
def peer_host(peer: str) -> str | None:
    """The host of ``context.peer()``: "ipv4:10.0.0.1:5000" or "ipv6:%5B::1%5D:5000" (or
    with plain brackets); None for other transports (a Unix socket has no client address)."""
    transport, _, address = peer.partition(":")
    if transport not in ("ipv4", "ipv6"):
        return None
    host = unquote(address).rpartition(":")[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def call_deadline(context: Any) -> float | None:
    """The call's gRPC deadline as a ``time.monotonic()`` instant (None: the client set
    none). Test doubles without ``time_remaining`` have none."""
    time_remaining = getattr(context, "time_remaining", None)
    return deadline_after(time_remaining() if time_remaining is not None else None)
