"""What every call goes through, whatever its protocol: one pipeline for REST and gRPC.

A call, in order::

    start = time.perf_counter_ns()
    request_id = request_id_from(sent id)          the client's id when sane, else a new one
    span = pipeline.http_span(...) | rpc_span(...)  attached; None when tracing is off
    principal = await pipeline.authentication(authenticator, credential, transport)
        (through the abuse guard, which refuses blocked addresses and keys first; a child
        span "authenticate" when tracing)
    deadline = deadline_after(seconds the caller waits)
    ... the adapter's handler: wire format -> core call -> wire format ...
    on a ModelgateError: await pipeline.penalize(principal, error), then the protocol's answer
    if pipeline.observed: pipeline.finish(...)    the span ends, the access log line is written

A caller the refusal memo answers (core/admission/refusals.py) is refused right after
authentication, before the adapter reads its request, with the error the full path gave;
its log line is written at most once a second with the count of those not written
(``line`` of :meth:`CallPipeline.finish`).

The adapters (api/rest/app.py, api/grpc/servicer.py) keep the per-call state in locals (or
the ASGI scope) and call these steps inline rather than through a per-call object or a
context manager: each step is one plain function call, so the pipeline costs the hot path
no allocation and no await beyond what the steps themselves need (``authentication``
returns the check to await, not a coroutine of its own). What differs by protocol stays in
the adapter: where the headers are read, how the request id is sent back, the status an
error maps to, and which statuses are the server's fault.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from modelgate.core.access.authentication import Authenticator
from modelgate.core.access.identity import Principal
from modelgate.core.admission.abuse import AbuseGuard
from modelgate.core.serving.tracing import traced
from modelgate.errors import ModelgateError
from modelgate.observability.logs import RequestLog
from modelgate.observability.tracing import OtelTracer, RequestSpan, trace_id_of

__all__ = ["CallPipeline", "deadline_after"]

#: the protocol's handle on one call (an ASGI scope, a gRPC servicer context)
_Transport = TypeVar("_Transport")


class CallPipeline(Generic[_Transport]):
    """The per-call steps of one protocol adapter, built once with the adapter.

    ``client_of`` names the client's address from the call's transport handle; it is asked
    only when there is an abuse guard to count the address against.
    """

    __slots__ = ("abuse", "client_of", "observed", "protocol", "requests", "tracer")

    def __init__(
        self,
        protocol: str,
        client_of: Callable[[_Transport], str | None],
        *,
        abuse: AbuseGuard | None = None,
        tracer: OtelTracer | None = None,
        requests: RequestLog | None = None,
    ):
        #: "rest" or "grpc", for the access log
        self.protocol = protocol
        self.client_of = client_of
        self.abuse = abuse
        #: a server span per call, None: tracing is off
        self.tracer = tracer
        #: a log line per call, None: the request log is off
        self.requests = requests
        #: whether :meth:`finish` has anything to do (a span or a log line per call)
        self.observed = tracer is not None or requests is not None

    def http_span(
        self,
        method: str,
        route: str | None,
        path: str,
        request_id: str,
        traceparent: bytes | None,
        tracestate: bytes | None,
    ) -> RequestSpan | None:
        """The HTTP request's span, attached; None when tracing is off."""
        if self.tracer is None:
            return None
        span = self.tracer.http_request(method, route, path, request_id, traceparent, tracestate)
        span.attach()
        return span

    def rpc_span(
        self,
        service: str,
        method: str,
        request_id: str,
        traceparent: str | None,
        tracestate: str | None,
    ) -> RequestSpan | None:
        """The gRPC call's span, attached; None when tracing is off."""
        if self.tracer is None:
            return None
        span = self.tracer.rpc_request(service, method, request_id, traceparent, tracestate)
        span.attach()
        return span

    def authentication(
        self, authenticator: Authenticator, credential: str | None, transport: _Transport
    ) -> Awaitable[Principal]:
        """``authenticator.authenticate(credential)`` to await, through the abuse guard when
        there is one (which refuses blocked addresses and keys first, and counts refused
        credentials against the client's address). The caller records the principal where
        its error path and log line find it."""
        if self.abuse is None:
            check = authenticator.authenticate(credential)
        else:
            check = self.abuse.authenticate(authenticator, credential, self.client_of(transport))
        if self.tracer is None:
            return check
        return traced(self.tracer, "authenticate", check)

    async def penalize(self, principal: Principal | None, error: ModelgateError) -> None:
        """Count a failed call against its caller's key, and slow the answer if that is due
        (the abuse guard's policy); nothing without an abuse guard."""
        if self.abuse is not None:
            await self.abuse.penalize(principal, error)

    def finish(
        self,
        method: str,
        target: str,
        start: int,
        request_id: str,
        traceparent: str | bytes | None,
        span: RequestSpan | None,
        status: int,
        error: str | None,
        principal: Principal | None,
        model: str | None,
        version: str | None,
        line: int | None = None,
    ) -> None:
        """The call's span ends and its log line is written. ``status``: the HTTP status or
        the gRPC code's number; ``error``: the error type when it is the server's fault;
        ``start``: ``time.perf_counter_ns()`` when the call came in; ``line``: for a
        refusal from the refusal memo, the refusals its line says were not logged (-1:
        no line now), None for any other call."""
        tenant = principal.tenant_id if principal is not None else None
        if span is not None:
            span.finish(status, error, tenant, model, version)
            trace_id: str | None = span.trace_id
        else:  # tracing is off: the client's trace id, when it sent one
            trace_id = trace_id_of(traceparent)
        if self.requests is not None and (line is None or line >= 0):
            self.requests.write(
                self.protocol,
                method,
                target,
                request_id,
                trace_id,
                tenant,
                model,
                version,
                status,
                time.perf_counter_ns() - start,
                line,
            )


def deadline_after(seconds: float | None) -> float | None:
    """The ``time.monotonic()`` instant ``seconds`` from now (None: the caller set none)."""
    return None if seconds is None else time.monotonic() + seconds
