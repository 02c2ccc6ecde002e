"""Traces: OpenTelemetry behind the core's tracing port, and W3C trace context.

With ``otlp_endpoint`` unset, :func:`build_tracer` returns None: every component holds
None instead of a tracer, the hot path pays one ``is None`` check per span, and the SDK
is never imported. With an endpoint, spans go to an OTLP/gRPC collector in batches, from
the SDK's own thread.

The spans of one request (names and attributes are listed in ``docs/operations.md``)::

    POST /v2/models/{model}/infer        (or inference.GRPCInferenceService/ModelInfer)
      ├─ authenticate                      the adapter, around the credential check
      ├─ admission                         the core, around limits, quotas and shedding
      ├─ queue                             the wait in the batcher (batched models only)
      └─ runtime                           the run of the batch that held the request

A client's ``traceparent`` (REST header, gRPC metadata) makes the request span its child;
:meth:`OtelTracer.inject` writes the current context into an outbound call's headers.
"""

from __future__ import annotations

import re
import time
from collections.abc import MutableMapping
from contextvars import Token
from typing import TYPE_CHECKING

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from modelgate import __version__
from modelgate.core.serving.ports import AttributeValue
from modelgate.observability.logs import logged_path

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

__all__ = ["OtelSpan", "OtelTracer", "RequestSpan", "build_tracer", "trace_id_of"]

# version-traceid-parentid-flags; a later version may append fields after a dash
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}(-\S*)?")


def trace_id_of(traceparent: str | bytes | None) -> str | None:
    """The trace id of a W3C ``traceparent`` value; None when absent or malformed.

    Used for the request log when tracing is off, so a client's trace id is still logged."""
    if traceparent is None:
        return None
    if isinstance(traceparent, bytes):
        traceparent = traceparent.decode("latin-1")
    match = _TRACEPARENT.fullmatch(traceparent.strip())
    if match is None:
        return None
    version, trace_id, parent_id, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or not int(trace_id, 16):
        return None
    return trace_id if int(parent_id, 16) else None


def build_tracer(
    endpoint: str | None, *, sample_ratio: float = 1.0, service_name: str = "modelgate"
) -> OtelTracer | None:
    """A tracer exporting to ``endpoint`` over OTLP/gRPC, or None (no tracing) without one.

    ``http://host:4317`` is plaintext, ``https://`` or a bare ``host:4317`` use TLS. The
    exporter reads the standard ``OTEL_EXPORTER_OTLP_*`` variables for anything else
    (headers, certificates, timeout); ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES``
    add to the resource. New traces are sampled at ``sample_ratio``; a client's sampled
    flag decides for the traces it continues."""
    if endpoint is None:
        return None
    # The SDK and the exporter (grpc, protobuf stubs) only when tracing is chosen.
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    provider = TracerProvider(
        resource=Resource.create({"service.name": service_name, "service.version": __version__}),
        sampler=ParentBased(TraceIdRatioBased(sample_ratio)),
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint)))
    return OtelTracer(provider)


class _Clock:
    """``time.perf_counter_ns()`` readings on the wall clock OpenTelemetry records, through
    one offset for a second at a time: two spans that meet at one reading (the queue's end,
    the runtime's start) meet on the wall clock too, and the wall clock's adjustments are
    followed."""

    def __init__(self) -> None:
        self._offset = 0
        self._measured = -(10**18)

    def epoch_ns(self, perf_ns: int | None) -> int | None:
        if perf_ns is None:
            return None
        now = time.perf_counter_ns()
        if now - self._measured > 1_000_000_000:
            self._offset, self._measured = time.time_ns() - now, now
        return perf_ns + self._offset


_epoch_ns = _Clock().epoch_ns


class OtelSpan:
    """The core's :class:`~modelgate.core.serving.ports.Span` over an SDK span."""

    __slots__ = ("_span",)

    def __init__(self, span: trace.Span):
        self._span = span

    def set(self, key: str, value: AttributeValue) -> None:
        self._span.set_attribute(key, value)

    def fail(self, kind: str) -> None:
        self._span.set_attribute("error.type", kind)
        self._span.set_status(Status(StatusCode.ERROR, kind))

    def end(self, at_ns: int | None = None) -> None:
        self._span.end(_epoch_ns(at_ns))


class _UnsampledSpan:
    """A part of a request that is not sampled: it records nothing, and costs nothing."""

    __slots__ = ()

    def set(self, key: str, value: AttributeValue) -> None:
        pass

    def fail(self, kind: str) -> None:
        pass

    def end(self, at_ns: int | None = None) -> None:
        pass


_UNSAMPLED = _UnsampledSpan()


class RequestSpan:
    """The server span of one request. While attached, it is the current span of the
    request's task, so the spans the request makes (authenticate, admission, ...) are its
    children; :meth:`finish` detaches it and ends it."""

    __slots__ = ("_span", "_status_key", "_token", "trace_id")

    def __init__(self, span: trace.Span, status_key: str):
        self._span = span
        self._status_key = status_key
        self._token: Token[otel_context.Context] | None = None
        #: 32 hex digits, for the request log
        self.trace_id = format(span.get_span_context().trace_id, "032x")

    def attach(self) -> None:
        """Make this the current span (of the running task) until :meth:`detach`."""
        self._token = otel_context.attach(trace.set_span_in_context(self._span))

    def detach(self) -> None:
        if self._token is not None:
            otel_context.detach(self._token)
            self._token = None

    def finish(
        self,
        status: int,
        error: str | None,
        tenant: str | None,
        model: str | None,
        version: str | None,
    ) -> None:
        """End the request: its status code (HTTP status or gRPC code), the error kind when
        it failed on the server's side, and who asked for what."""
        self.detach()
        span = self._span
        span.set_attribute(self._status_key, status)
        if tenant is not None:
            span.set_attribute("modelgate.tenant", tenant)
        if model is not None:
            span.set_attribute("modelgate.model", model)
        if version is not None:
            span.set_attribute("modelgate.model_version", version)
        if error is not None:
            span.set_attribute("error.type", error)
            span.set_status(Status(StatusCode.ERROR, error))
        span.end()


class OtelTracer:
    """Spans on an OpenTelemetry SDK tracer provider: the core's
    :class:`~modelgate.core.serving.ports.Tracer`, the adapters' request spans, and the trace
    context of outbound calls."""

    def __init__(self, provider: TracerProvider):
        self.provider = provider
        self._tracer = provider.get_tracer("modelgate", __version__)
        self._propagator = TraceContextTextMapPropagator()

    # -- the core's port -----------------------------------------------------------------
    def start(self, name: str, at_ns: int | None = None) -> OtelSpan | _UnsampledSpan:
        current = trace.get_current_span()
        if not current.is_recording() and current.get_span_context().is_valid:
            # The request is not sampled, so neither are its parts (the sampler would say
            # so too, after making ids and a span object for nothing).
            return _UNSAMPLED
        return OtelSpan(self._tracer.start_span(name, start_time=_epoch_ns(at_ns)))

    # -- request spans (adapters) --------------------------------------------------------
    def http_request(
        self,
        method: str,
        route: str | None,
        path: str,
        request_id: str,
        traceparent: str | bytes | None,
        tracestate: str | bytes | None,
    ) -> RequestSpan:
        """The span of one HTTP request, named ``"{method} {route}"`` (the route template,
        e.g. ``/v2/models/{model}/infer``; just the method when the route is unknown)."""
        attributes: dict[str, AttributeValue] = {
            "http.request.method": method,
            "url.path": logged_path(path),  # a subject id outlives its erasure in a trace store
            "modelgate.request_id": request_id,
        }
        if route is not None:
            attributes["http.route"] = route
        span = self._tracer.start_span(
            f"{method} {route}" if route is not None else method,
            self._parent(traceparent, tracestate),
            SpanKind.SERVER,
            attributes,
        )
        return RequestSpan(span, "http.response.status_code")

    def rpc_request(
        self,
        service: str,
        method: str,
        request_id: str,
        traceparent: str | bytes | None,
        tracestate: str | bytes | None,
    ) -> RequestSpan:
        """The span of one gRPC call, named ``"{service}/{method}"``."""
        attributes: dict[str, AttributeValue] = {
            "rpc.system": "grpc",
            "rpc.service": service,
            "rpc.method": method,
            "modelgate.request_id": request_id,
        }
        span = self._tracer.start_span(
            f"{service}/{method}",
            self._parent(traceparent, tracestate),
            SpanKind.SERVER,
            attributes,
        )
        return RequestSpan(span, "rpc.grpc.status_code")

    def _parent(
        self, traceparent: str | bytes | None, tracestate: str | bytes | None
    ) -> otel_context.Context | None:
        """The client's span as the parent, when it sent a valid ``traceparent``."""
        if traceparent is None:
            return None
        carrier = {"traceparent": _text(traceparent)}
        if tracestate is not None:
            carrier["tracestate"] = _text(tracestate)
        return self._propagator.extract(carrier)

    # -- outbound calls ------------------------------------------------------------------
    def inject(self, carrier: MutableMapping[str, str]) -> None:
        """Write the current span's ``traceparent`` (and ``tracestate``) into ``carrier``,
        the headers or gRPC metadata of an outbound call made while serving a request."""
        self._propagator.inject(carrier)

    def traceparent(self) -> str | None:
        """The current span's ``traceparent``; None outside a request."""
        carrier: dict[str, str] = {}
        self.inject(carrier)
        return carrier.get("traceparent")

    # -- life cycle ----------------------------------------------------------------------
    def flush(self, timeout_s: float = 5.0) -> bool:
        """Export every ended span now (blocks: call it from a thread)."""
        return self.provider.force_flush(int(timeout_s * 1000))

    def close(self) -> None:
        """Export what is left and stop the exporter (blocks: call it from a thread)."""
        self.provider.shutdown()


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value
