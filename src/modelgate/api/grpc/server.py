"""The gRPC surface: ``inference.GRPCInferenceService`` (OIP v2 / Triton) and grpc.health.v1.

The service is Triton's ``grpc_service.proto`` with the stubs that ``tritonclient`` ships, so
``tritonclient.grpc`` and KServe's OIP clients work unchanged. Like the REST adapter, it only
translates: every decision is :class:`~modelgate.core.pipeline.inference.InferenceService`'s.

Not served (UNIMPLEMENTED): shared memory (system and CUDA), trace and log settings.
"""

# The servicer methods are named by the proto (ServerLive, ModelInfer, Check).
# ruff: noqa: N802

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar
from urllib.parse import unquote

import grpc
from google.protobuf import json_format  # type: ignore[import-untyped]
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

from modelgate.api.credentials import credential_from
from modelgate.api.forwarded import TrustedProxies
from modelgate.api.grpc.codec import decode_infer_request, decode_parameters, encode_infer_response
from modelgate.api.grpc.errors import abort, grpc_status
from modelgate.core.access.authentication import Authenticator
from modelgate.core.access.identity import Principal
from modelgate.core.admission.abuse import AbuseGuard
from modelgate.core.pipeline.inference import InferenceService
from modelgate.core.serving.request_context import current_request_id
from modelgate.core.serving.tracing import traced
from modelgate.errors import ErrorKind, ModelgateError, invalid
from modelgate.observability.logs import RequestLog, request_id_from
from modelgate.observability.tracing import OtelTracer, RequestSpan, trace_id_of

__all__ = [
    "GrpcConnectionLimits",
    "GrpcInferenceServicer",
    "ReadinessHealthServicer",
    "create_grpc_server",
]

log = logging.getLogger("modelgate.grpc")

_SERVICE_NAME = "inference.GRPCInferenceService"
_DEFAULT_MAX_ELEMENTS = 16 * 1024 * 1024

_R = TypeVar("_R")
_Handler = Callable[["GrpcInferenceServicer", Any, Any], Awaitable[_R]]

#: the principal of the call in progress, for the abuse guard's error path (grpc.aio runs
#: each call in a task of its own, so this never leaks from one call to another)
_CALLER: ContextVar[Principal | None] = ContextVar("modelgate_grpc_caller", default=None)

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


@dataclass(frozen=True, slots=True)
class GrpcConnectionLimits:
    """What one connection may hold and how long it may stay; ``settings.grpc_*``."""

    #: a call's metadata, in bytes (gRPC core's soft and hard limit alike)
    max_metadata_bytes: int = 16 * 1024
    #: a connection with no call for this long gets GOAWAY
    max_connection_idle_s: float = 300.0
    #: calls at once on one connection
    max_concurrent_streams: int = 1024
    #: open connections of this server; gRPC core refuses more
    max_connections: int = 4096
    #: TCP, TLS and the HTTP/2 preface must be done within this time
    handshake_timeout_s: float = 10.0

    def options(self) -> list[tuple[str, int]]:
        ms = 1000
        return [
            ("grpc.max_metadata_size", self.max_metadata_bytes),
            ("grpc.absolute_max_metadata_size", self.max_metadata_bytes),
            ("grpc.max_connection_idle_ms", int(self.max_connection_idle_s * ms)),
            ("grpc.max_concurrent_streams", self.max_concurrent_streams),
            ("grpc.max_allowed_incoming_connections", self.max_connections),
            ("grpc.server_handshake_timeout_ms", int(self.handshake_timeout_s * ms)),
            # keepalive: the server pings an idle peer each minute and drops it when no
            # answer comes in 20 s (a vanished client's connection does not linger); clients
            # may ping every 5 s at most, with or without calls (modelgate's gateways ping
            # nodes every 10 s, cluster/client.py), twice too often and they get GOAWAY
            ("grpc.keepalive_time_ms", 60 * ms),
            ("grpc.keepalive_timeout_ms", 20 * ms),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_ping_interval_without_data_ms", 5 * ms),
            ("grpc.http2.max_ping_strikes", 2),
        ]


def create_grpc_server(
    service: InferenceService,
    *,
    max_message_bytes: int,
    reuse_port: bool,
    max_elements: int = _DEFAULT_MAX_ELEMENTS,
    authenticator: Authenticator | None = None,
    abuse: AbuseGuard | None = None,
    tracer: OtelTracer | None = None,
    requests: RequestLog | None = None,
    limits: GrpcConnectionLimits = GrpcConnectionLimits(),
    forwarded_allow_ips: str = "",
) -> Any:
    """A ``grpc.aio`` server with both services added; the caller adds ports and starts it.

    A message over ``max_message_bytes`` is refused by gRPC itself (RESOURCE_EXHAUSTED), as
    is metadata over ``limits.max_metadata_bytes``; ``max_elements`` bounds a tensor's
    element count before anything is allocated. ``forwarded_allow_ips``: the peers whose
    ``x-forwarded-for`` metadata names the client (api/forwarded.py); none by default.
    """
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.so_reuseport", int(reuse_port)),
            *limits.options(),
        ]
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(
        GrpcInferenceServicer(
            service,
            max_elements=max_elements,
            authenticator=authenticator,
            abuse=abuse,
            tracer=tracer,
            requests=requests,
            proxies=TrustedProxies(forwarded_allow_ips) or None,
        ),
        server,
    )
    health_pb2_grpc.add_HealthServicer_to_server(ReadinessHealthServicer(service), server)
    return server


def _translated(handler: _Handler[_R]) -> _Handler[_R]:
    """Map a :class:`ModelgateError` to its status; log anything else and answer INTERNAL.
    The call gets a request id, a span when tracing, and a line in the request log."""
    method = handler.__name__

    @wraps(handler)
    async def call(self: GrpcInferenceServicer, request: Any, context: Any) -> _R:
        start = time.perf_counter_ns()
        request_id, traceparent, span = self._begin(method, context)
        if span is not None:
            span.attach()
        code = grpc.StatusCode.INTERNAL
        try:
            result = await handler(self, request, context)
            code = grpc.StatusCode.OK
            return result
        except ModelgateError as exc:
            code = grpc_status(exc)
            if self.abuse is not None:  # counts the failure, and slows the answer if due
                await self.abuse.penalize(_CALLER.get(), exc)
            await abort(context, exc)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:  # the outermost layer: the server must keep serving
            log.exception("unhandled error in %s", method)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            raise  # pragma: no cover - abort raises
        finally:
            model = getattr(request, "name", "") or getattr(request, "model_name", "") or None
            version = getattr(request, "version", "") or None
            self._finished(
                method, start, request_id, traceparent, span, code, _CALLER.get(), model, version
            )

    return call


class GrpcInferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """``inference.GRPCInferenceService`` over one :class:`InferenceService`."""

    def __init__(
        self,
        service: InferenceService,
        *,
        max_elements: int = _DEFAULT_MAX_ELEMENTS,
        authenticator: Authenticator | None = None,
        abuse: AbuseGuard | None = None,
        tracer: OtelTracer | None = None,
        requests: RequestLog | None = None,
        proxies: TrustedProxies | None = None,
    ):
        self.service = service
        self.max_elements = max_elements
        self.authenticator = authenticator
        self.abuse = abuse
        #: a server span per call, None: tracing is off
        self.tracer = tracer
        #: a log line per call, None: the request log is off
        self.requests = requests
        #: peers whose ``x-forwarded-for`` is believed, None: the peer is the client
        self.proxies = proxies

    async def _principal(self, context: Any) -> Principal | None:
        """The caller, from ``authorization`` or ``x-api-key`` metadata; None when auth is off."""
        if self.authenticator is None:
            return None
        metadata = {key: value for key, value in context.invocation_metadata() or ()}
        credential = credential_from(metadata.get("authorization"), metadata.get("x-api-key"))
        return await self._authenticate(credential, context)

    async def _authenticate(self, credential: str | None, context: Any) -> Principal:
        """With an abuse guard, blocked addresses and keys are refused first."""
        assert self.authenticator is not None
        if self.abuse is None:
            check = self.authenticator.authenticate(credential)
        else:
            check = self.abuse.authenticate(self.authenticator, credential, self._client(context))
        if self.tracer is None:
            principal = await check
        else:
            principal = await traced(self.tracer, "authenticate", check)
        _CALLER.set(principal)  # whom the error path counts a failure against; the log
        return principal

    def _client(self, context: Any) -> str | None:
        """The client's address: the peer, or whom a trusted proxy's ``x-forwarded-for``
        names (the same client REST's abuse throttle counts)."""
        peer = _peer_host(context.peer())
        if self.proxies is None:
            return peer
        forwarded = ", ".join(
            value for key, value in context.invocation_metadata() or () if key == "x-forwarded-for"
        )
        return self.proxies.client(peer, forwarded)

    def _begin(self, method: str, context: Any) -> tuple[str, str | None, RequestSpan | None]:
        """The call's request id, the client's ``traceparent`` and the call's span (not yet
        attached), from the metadata."""
        sent_id = traceparent = tracestate = None
        for key, value in context.invocation_metadata() or ():
            if key == "x-request-id":
                sent_id = value
            elif key == "traceparent":
                traceparent = value
            elif key == "tracestate":
                tracestate = value
        request_id = request_id_from(sent_id)
        span = None
        if self.tracer is not None:
            span = self.tracer.rpc_request(
                _SERVICE_NAME, method, request_id, traceparent, tracestate
            )
        return request_id, traceparent, span

    def _finished(
        self,
        method: str,
        start: int,
        request_id: str,
        traceparent: str | None,
        span: RequestSpan | None,
        code: Any,
        principal: Principal | None,
        model: str | None,
        version: str | None,
    ) -> None:
        """The call's span ends and its log line is written."""
        if span is None and self.requests is None:
            return
        tenant = principal.tenant_id if principal is not None else None
        status: int = code.value[0]
        if span is not None:
            error = code.name.lower() if code in _SERVER_FAULTS else None
            span.finish(status, error, tenant, model, version)
            trace_id: str | None = span.trace_id
        else:  # tracing is off: the client's trace id, when it sent one
            trace_id = trace_id_of(traceparent)
        if self.requests is not None:
            self.requests.write(
                "grpc",
                method,
                f"/{_SERVICE_NAME}/{method}",
                request_id,
                trace_id,
                tenant,
                model,
                version,
                status,
                time.perf_counter_ns() - start,
            )

    # -- health and metadata -------------------------------------------------------------
    @_translated
    async def ServerLive(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    @_translated
    async def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.service.catalog.server_ready())

    @_translated
    async def ModelReady(self, request: Any, context: Any) -> Any:
        principal = await self._principal(context)
        ready = await self.service.catalog.model_ready(
            request.name, request.version or None, principal
        )
        return service_pb2.ModelReadyResponse(ready=ready)

    @_translated
    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        meta = self.service.catalog.server_metadata()
        return service_pb2.ServerMetadataResponse(
            name=meta["name"], version=meta["version"], extensions=meta["extensions"]
        )

    @_translated
    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        principal = await self._principal(context)
        meta = await self.service.catalog.model_metadata(
            request.name, request.version or None, principal
        )
        tensor = service_pb2.ModelMetadataResponse.TensorMetadata
        # The proto has no parameters field, so the model card is REST-only.
        return service_pb2.ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=[
                tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                for t in meta["inputs"]
            ],
            outputs=[
                tensor(name=t["name"], datatype=t["datatype"], shape=t["shape"])
                for t in meta["outputs"]
            ],
        )

    @_translated
    async def ModelConfig(self, request: Any, context: Any) -> Any:
        principal = await self._principal(context)
        config = await self.service.catalog.model_config(
            request.name, request.version or None, principal
        )
        message = json_format.ParseDict(
            config, model_config_pb2.ModelConfig(), ignore_unknown_fields=True
        )
        return service_pb2.ModelConfigResponse(config=message)

    @_translated
    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        principal = await self._principal(context)
        stats = await self.service.catalog.statistics(
            request.name or None, request.version or None, principal
        )
        return json_format.ParseDict(
            stats, service_pb2.ModelStatisticsResponse(), ignore_unknown_fields=True
        )

    # -- inference -----------------------------------------------------------------------
    async def ModelInfer(self, request: Any, context: Any) -> Any:
        # Inlined rather than @_translated: this is the hot path.
        start = time.perf_counter_ns()
        sent_id = traceparent = tracestate = authorization = api_key = cache_control = None
        for key, value in context.invocation_metadata() or ():  # one pass: the hot path
            if key == "authorization":
                authorization = value
            elif key == "x-api-key":
                api_key = value
            elif key == "x-request-id":
                sent_id = value
            elif key == "traceparent":
                traceparent = value
            elif key == "tracestate":
                tracestate = value
            elif key == "cache-control":
                cache_control = value
        request_id = request_id_from(sent_id)
        span = None
        if self.tracer is not None:
            span = self.tracer.rpc_request(
                _SERVICE_NAME, "ModelInfer", request_id, traceparent, tracestate
            )
            span.attach()
        principal = None
        version = request.model_version or None
        code = grpc.StatusCode.INTERNAL
        try:
            if self.authenticator is not None:
                credential = credential_from(authorization, api_key)
                principal = await self._authenticate(credential, context)
            decoded = decode_infer_request(request, self.max_elements)
            decoded.deadline = _deadline(context)
            decoded.cache_control = cache_control
            current_request_id.set(request_id)  # for listeners (feedback); this call's task
            response = await self.service.infer(decoded, principal)
            version = response.model_version
            answer = encode_infer_response(response)
            code = grpc.StatusCode.OK
            # the id feedback names the prediction by (REST sends it as X-Request-Id)
            context.set_trailing_metadata((("x-request-id", request_id),))
            return answer
        except ModelgateError as exc:
            code = grpc_status(exc)
            if self.abuse is not None:
                await self.abuse.penalize(_CALLER.get(), exc)
            await abort(context, exc)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            log.exception("unhandled error in ModelInfer for model '%s'", request.model_name)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        finally:
            if span is not None or self.requests is not None:
                self._finished(
                    "ModelInfer",
                    start,
                    request_id,
                    traceparent,
                    span,
                    code,
                    principal,
                    request.model_name,
                    version,
                )

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        """Answer each request in order; a failed one answers ``error_message`` and the
        stream stays open (Triton's behaviour, which ``tritonclient`` expects).

        The stream is one call: one span (each request's spans are its children) and one
        line in the request log, naming the last model asked for."""
        abuse = self.abuse
        start = time.perf_counter_ns()
        request_id, traceparent, span = self._begin("ModelStreamInfer", context)
        current_request_id.set(request_id)  # one for the stream: feedback names OIP ids
        code = grpc.StatusCode.INTERNAL
        principal = model = version = None
        try:
            # Attached only between yields: the span must not stay current in whatever
            # runs while the generator is suspended.
            if span is not None:
                span.attach()
            try:
                principal = await self._principal(context)
            except ModelgateError as exc:
                code = grpc_status(exc)
                await abort(context, exc)
            finally:
                if span is not None:
                    span.detach()
            async for request in request_iterator:
                model, version = request.model_name, request.model_version or None
                if span is not None:
                    span.attach()
                try:
                    if abuse is not None and principal is not None:  # blocked mid-stream?
                        await abuse.check_principal(principal)
                    decoded = decode_infer_request(request, self.max_elements)
                    response = encode_infer_response(await self.service.infer(decoded, principal))
                except ModelgateError as exc:
                    if abuse is not None:
                        await abuse.penalize(principal, exc)
                    message = exc.message
                except Exception:
                    log.exception(
                        "unhandled error in ModelStreamInfer for model '%s'", request.model_name
                    )
                    message = "internal error"
                else:
                    if span is not None:
                        span.detach()
                    yield service_pb2.ModelStreamInferResponse(infer_response=response)
                    continue
                if span is not None:
                    span.detach()
                # The id lets a client match the error to its request.
                yield service_pb2.ModelStreamInferResponse(
                    error_message=message,
                    infer_response=service_pb2.ModelInferResponse(
                        model_name=request.model_name,
                        model_version=request.model_version,
                        id=request.id,
                    ),
                )
            code = grpc.StatusCode.OK
        except (asyncio.CancelledError, GeneratorExit):  # the client went away
            code = grpc.StatusCode.CANCELLED
            raise
        finally:
            self._finished(
                "ModelStreamInfer",
                start,
                request_id,
                traceparent,
                span,
                code,
                principal,
                model,
                version,
            )

    # -- repository control --------------------------------------------------------------
    @_translated
    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        index = service_pb2.RepositoryIndexResponse.ModelIndex
        principal = await self._principal(context)
        rows = await self.service.catalog.repository_index(request.ready, principal)
        return service_pb2.RepositoryIndexResponse(
            models=[
                index(
                    name=r["name"],
                    version=r.get("version", ""),
                    state=r["state"],
                    reason=r.get("reason", ""),
                )
                for r in rows
            ]
        )

    @_translated
    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        principal = await self._principal(context)
        config = _load_config(request.parameters)
        peer = _peer_host(context.peer())
        await self.service.catalog.load(request.model_name, config, principal, peer)
        return service_pb2.RepositoryModelLoadResponse()

    @_translated
    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        principal = await self._principal(context)
        await self.service.catalog.unload(request.model_name, principal, _peer_host(context.peer()))
        return service_pb2.RepositoryModelUnloadResponse()

    # -- not served ----------------------------------------------------------------------
    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        await _unsupported(context, "system shared memory")

    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        await _unsupported(context, "system shared memory")

    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        await _unsupported(context, "system shared memory")

    async def CudaSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        await _unsupported(context, "CUDA shared memory")

    async def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        await _unsupported(context, "CUDA shared memory")

    async def CudaSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        await _unsupported(context, "CUDA shared memory")

    async def TraceSetting(self, request: Any, context: Any) -> Any:
        await _unsupported(context, "trace settings")

    async def LogSettings(self, request: Any, context: Any) -> Any:
        await _unsupported(context, "log settings")


async def _unsupported(context: Any, feature: str) -> None:
    await abort(
        context, ModelgateError(ErrorKind.UNSUPPORTED, f"{feature} is not supported by modelgate")
    )


def _peer_host(peer: str) -> str | None:
    """The host of ``context.peer()``: "ipv4:10.0.0.1:5000" or "ipv6:%5B::1%5D:5000" (or
    with plain brackets); None for other transports (a Unix socket has no client address)."""
    transport, _, address = peer.partition(":")
    if transport not in ("ipv4", "ipv6"):
        return None
    host = unquote(address).rpartition(":")[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host


def _load_config(params: Any) -> dict[str, Any] | None:
    """``parameters["config"]``: a JSON manifest override, as Triton's load accepts."""
    values = decode_parameters(params)
    for key in values:
        if key.startswith("file:"):
            raise ModelgateError(
                ErrorKind.UNSUPPORTED,
                "loading a model from uploaded files ('file:' parameters) is not supported",
            )
    config = values.get("config")
    if config is None:
        return None
    if isinstance(config, bytes):
        config = config.decode("utf-8", errors="replace")
    if not isinstance(config, str):
        raise invalid("parameter 'config' must be a JSON string")
    try:
        doc = json.loads(config)
    except json.JSONDecodeError as exc:
        raise invalid(f"parameter 'config' is malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise invalid("parameter 'config' must be a JSON object")
    return doc


class ReadinessHealthServicer(health_aio.HealthServicer):  # type: ignore[misc]
    """grpc.health.v1 whose status is the server's readiness at the time of each Check.

    The server starts gRPC before the preload models are warm, so a status set once at start
    would be wrong; Check asks
    :meth:`~modelgate.core.serving.catalog.ModelCatalog.server_ready` and stores the answer,
    so Watch streams see it change once a Check has observed it. The overall service ("")
    and ``inference.GRPCInferenceService`` are known; any other name is NOT_FOUND.
    """

    def __init__(self, service: InferenceService):
        super().__init__()
        self.service = service
        self._server_status[""] = health_pb2.HealthCheckResponse.NOT_SERVING
        self._server_status[_SERVICE_NAME] = health_pb2.HealthCheckResponse.NOT_SERVING

    async def Check(self, request: Any, context: Any) -> Any:
        if request.service not in ("", _SERVICE_NAME):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service '{request.service}'")
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if self.service.catalog.server_ready()
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        if self._server_status.get(request.service) != status:
            await self.set("", status)
            await self.set(_SERVICE_NAME, status)
        return health_pb2.HealthCheckResponse(status=status)


def _deadline(context: Any) -> float | None:
    """The call's gRPC deadline as a ``time.monotonic()`` instant (None: the client set
    none). Test doubles without ``time_remaining`` have none."""
    time_remaining = getattr(context, "time_remaining", None)
    remaining = time_remaining() if time_remaining is not None else None
    return None if remaining is None else time.monotonic() + remaining
