"""``inference.GRPCInferenceService`` (OIP v2 / Triton) over the core.

The service is Triton's ``grpc_service.proto`` with the stubs that ``tritonclient`` ships, so
``tritonclient.grpc`` and KServe's OIP clients work unchanged. Like the REST adapter, it only
translates: every decision is :class:`~modelgate.core.pipeline.inference.InferenceService`'s,
and the per-call steps (request id, span, authentication through the abuse guard, penalty,
access log line) are api/call.py's. The server is built in api/grpc/build.py.

``ModelInfer`` receives its message as bytes (api/grpc/raw_request.py): a caller the
refusal memo refuses is answered from the model the bytes name, right after
authentication, before the tensors are decoded, with the status, message and
``retry-after`` set on the call rather than raised (an exception through grpc.aio's
handler per refusal). Measured in process (``python -m bench.inprocess refusals``): about
9 µs of CPU a memo refusal, against 11-13 µs when the message was decoded first and the
refusal raised.

Not served (UNIMPLEMENTED, in the words REST answers with 501, api/extensions.py): shared
memory (system and CUDA), trace and log settings.
"""

# The servicer methods are named by the proto (ServerLive, ModelInfer, Check).
# ruff: noqa: N802

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import grpc
from tritonclient.grpc import service_pb2, service_pb2_grpc

from modelgate.api.call import CallPipeline
from modelgate.api.credentials import credential_from
from modelgate.api.extensions import (
    CUDA_SHARED_MEMORY,
    LOGGING,
    SYSTEM_SHARED_MEMORY,
    TRACE,
    unsupported_extension,
)
from modelgate.api.forwarded import TrustedProxies
from modelgate.api.grpc import metadata
from modelgate.api.grpc.calls import (
    CALLER,
    SERVICE_NAME,
    begin_call,
    call_deadline,
    finish_call,
    peer_host,
    translated,
)
from modelgate.api.grpc.codec import decode_infer_request, encode_infer_response
from modelgate.api.grpc.errors import abort, grpc_status, retry_after_metadata
from modelgate.api.grpc.on_behalf import gateway_principal
from modelgate.api.grpc.raw_request import decode_message, model_of
from modelgate.core.access.authentication import Authenticator
from modelgate.core.access.identity import Principal
from modelgate.core.admission.abuse import AbuseGuard
from modelgate.core.admission.backpressure import RefusalBackpressure, counted_down
from modelgate.core.admission.refusals import Refusal
from modelgate.core.gateway.node_calls import SCREENED, SCREENED_KEY
from modelgate.core.pipeline.inference import InferenceService
from modelgate.core.serving.request_context import current_request_id
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.observability.logs import RequestLog, request_id_from
from modelgate.observability.tracing import OtelTracer

__all__ = ["DEFAULT_MAX_ELEMENTS", "GrpcInferenceServicer"]

log = logging.getLogger("modelgate.grpc")

DEFAULT_MAX_ELEMENTS = 16 * 1024 * 1024


class GrpcInferenceServicer(service_pb2_grpc.GRPCInferenceServiceServicer):  # type: ignore[misc]
    """``inference.GRPCInferenceService`` over one :class:`InferenceService`."""

    def __init__(
        self,
        service: InferenceService,
        *,
        max_elements: int = DEFAULT_MAX_ELEMENTS,
        authenticator: Authenticator | None = None,
        abuse: AbuseGuard | None = None,
        tracer: OtelTracer | None = None,
        requests: RequestLog | None = None,
        proxies: TrustedProxies | None = None,
        backpressure: RefusalBackpressure | None = None,
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
        self.pipeline: CallPipeline[Any] = CallPipeline(
            "grpc", self._client, abuse=abuse, tracer=tracer, requests=requests
        )
        #: callers refused for a rate limit or quota, answered before their tensors are read
        admission = service.admission
        self.refusals = admission.memo if admission is not None else None
        #: shedding on queueing delay, before the tensors are decoded (None: off)
        self.overload = admission.overload if admission is not None else None
        #: a peer whose calls keep being refused has each further refusal held (None: off)
        self.backpressure = backpressure

    async def _principal(self, context: Any) -> Principal | None:
        """The caller, from ``authorization`` or ``x-api-key`` metadata; None when auth is off."""
        if self.authenticator is None:
            return None
        metadata = {key: value for key, value in context.invocation_metadata() or ()}
        credential = credential_from(metadata.get("authorization"), metadata.get("x-api-key"))
        principal = await self.pipeline.authentication(self.authenticator, credential, context)
        CALLER.set(principal)  # whom the error path counts a failure against; the log
        return principal

    def _client(self, context: Any) -> str | None:
        """The client's address: the peer, or whom a trusted proxy's ``x-forwarded-for``
        names (the same client REST's abuse throttle counts)."""
        peer = peer_host(context.peer())
        if self.proxies is None:
            return peer
        forwarded = ", ".join(
            value for key, value in context.invocation_metadata() or () if key == "x-forwarded-for"
        )
        return self.proxies.client(peer, forwarded)

    # -- health and metadata -------------------------------------------------------------
    @translated
    async def ServerLive(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerLiveResponse(live=True)

    @translated
    async def ServerReady(self, request: Any, context: Any) -> Any:
        return service_pb2.ServerReadyResponse(ready=self.service.catalog.server_ready())

    @translated
    async def ModelReady(self, request: Any, context: Any) -> Any:
        principal = await self._principal(context)
        ready = await self.service.catalog.model_ready(
            request.name, request.version or None, principal
        )
        return service_pb2.ModelReadyResponse(ready=ready)

    @translated
    async def ServerMetadata(self, request: Any, context: Any) -> Any:
        return metadata.server_metadata_response(self.service.catalog.server_metadata())

    @translated
    async def ModelMetadata(self, request: Any, context: Any) -> Any:
        principal = await self._principal(context)
        meta = await self.service.catalog.model_metadata(
            request.name, request.version or None, principal
        )
        return metadata.model_metadata_response(meta)

    @translated
    async def ModelConfig(self, request: Any, context: Any) -> Any:
        principal = await self._principal(context)
        config = await self.service.catalog.model_config(
            request.name, request.version or None, principal
        )
        return metadata.model_config_response(config)

    @translated
    async def ModelStatistics(self, request: Any, context: Any) -> Any:
        principal = await self._principal(context)
        stats = await self.service.catalog.statistics(
            request.name or None, request.version or None, principal
        )
        return metadata.model_statistics_response(stats)

    # -- inference -----------------------------------------------------------------------
    async def ModelInfer(self, request: Any, context: Any) -> Any:
        """``request``: the message, or its bytes (as api/grpc/build.py registers it: a
        caller the refusal memo refuses is answered before its tensors are decoded,
        api/grpc/raw_request.py)."""
        # Inlined rather than @translated: this is the hot path.
        start = time.perf_counter_ns()
        sent_id = traceparent = tracestate = authorization = api_key = cache_control = None
        screened = False
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
            elif key == SCREENED_KEY:  # believed of a gateway's call only (the pipeline's)
                screened = value == SCREENED
        request_id = request_id_from(sent_id)
        pipeline = self.pipeline
        span = None
        if pipeline.tracer is not None:
            span = pipeline.rpc_span(
                SERVICE_NAME, "ModelInfer", request_id, traceparent, tracestate
            )
        principal = None
        if isinstance(request, bytes):
            named = model_of(request)  # None: only the whole message says
            raw: bytes | None = request
            model, version = named if named is not None else ("", None)
        else:
            named, raw = None, None
            model, version = request.model_name, request.model_version or None
        code = grpc.StatusCode.INTERNAL
        line = None  # a 429's log line, at most one a second (api/call.py)
        try:
            if raw is not None and named is None:
                request, raw = decode_message(raw), None
                model, version = request.model_name, request.model_version or None
            if self.authenticator is not None:
                credential = credential_from(authorization, api_key)
                principal = await pipeline.authentication(self.authenticator, credential, context)
                CALLER.set(principal)  # whom the error path counts a failure against
                principal = gateway_principal(principal, context)  # a gateway's: for a tenant
                refusals = self.refusals
                if refusals is not None:  # refused again while certain, before decoding
                    refusal = refusals.refused(principal, model, version)
                    if refusal is not None:
                        code = grpc.StatusCode.RESOURCE_EXHAUSTED
                        line = refusals.line(principal)  # at most one a second
                        await self._refuse(refusal, context)
                        return None
            overload = self.overload
            if overload is not None and overload.shedding and overload.refuses(principal):
                raise overload.error()
            if raw is not None:
                request = decode_message(raw)
            decoded = decode_infer_request(request, self.max_elements)
            decoded.deadline = call_deadline(context)
            decoded.cache_control = cache_control
            if screened:
                decoded.screened = True
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
            await pipeline.penalize(CALLER.get(), exc)
            if exc.kind is ErrorKind.RATE_LIMITED:
                if self.refusals is not None and principal:
                    line = self.refusals.line(principal)  # at most one a second
                if self.backpressure is not None:  # held when the peer keeps at it
                    exc = await self._hold(self.backpressure, exc, context)
            await abort(context, exc)
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception:
            log.exception("unhandled error in ModelInfer for model '%s'", model)
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        finally:
            if pipeline.observed:
                finish_call(
                    pipeline,
                    "ModelInfer",
                    start,
                    request_id,
                    traceparent,
                    span,
                    code,
                    principal,
                    model,
                    version,
                    line,
                )

    async def _refuse(self, refusal: Refusal, context: Any) -> None:
        """End the call with the memo's refusal: ``RESOURCE_EXHAUSTED``, the full path's
        message and ``retry-after`` (counted down), set on the context rather than raised
        (``context.abort`` raises through grpc.aio's handler: an exception a refusal), held
        first when the peer keeps being refused."""
        backpressure = self.backpressure
        if backpressure is not None:
            hold = backpressure.refused(context.peer(), refusal.retry_after_s())
            if hold:
                await backpressure.hold(hold)
                assert self.refusals is not None
                refusal.seen_at = self.refusals.clock()  # its retry-after counted to now
        context.set_code(grpc.StatusCode.RESOURCE_EXHAUSTED)
        context.set_details(refusal.error.message)
        context.set_trailing_metadata(retry_after_metadata(refusal.retry_after_s()))

    async def _hold(
        self, backpressure: RefusalBackpressure, error: ModelgateError, context: Any
    ) -> ModelgateError:
        """Hold a refusal while its peer keeps being refused (core/admission/
        backpressure.py); the error as it reads when answered. An HTTP/2 connection carries
        many calls at once and one call's stream cannot close it, so only this call waits:
        a client that waits for its answers (a loop of calls, a bounded pool) is slowed;
        past ``max_held`` refusals are answered at once."""
        hold = backpressure.refused(context.peer(), error.retry_after or 0.0)
        if not hold:
            return error
        await backpressure.hold(hold)
        return counted_down(error, hold)

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[Any], context: Any
    ) -> AsyncIterator[Any]:
        """Answer each request in order; a failed one answers ``error_message`` and the
        stream stays open (Triton's behaviour, which ``tritonclient`` expects).

        The stream is one call: one span (each request's spans are its children) and one
        line in the request log, naming the last model asked for."""
        pipeline = self.pipeline
        abuse = pipeline.abuse
        start = time.perf_counter_ns()
        request_id, traceparent, span = begin_call(pipeline, "ModelStreamInfer", context)
        current_request_id.set(request_id)  # one for the stream: feedback names OIP ids
        code = grpc.StatusCode.INTERNAL
        principal = model = version = None
        try:
            # Attached only between yields: the span must not stay current in whatever
            # runs while the generator is suspended.
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
                    await pipeline.penalize(principal, exc)
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
            if pipeline.observed:
                finish_call(
                    pipeline,
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
    @translated
    async def RepositoryIndex(self, request: Any, context: Any) -> Any:
        principal = await self._principal(context)
        rows = await self.service.catalog.repository_index(request.ready, principal)
        return metadata.repository_index_response(rows)

    @translated
    async def RepositoryModelLoad(self, request: Any, context: Any) -> Any:
        principal = await self._principal(context)
        config = metadata.load_config(request.parameters)
        peer = peer_host(context.peer())
        await self.service.catalog.load(request.model_name, config, principal, peer)
        return service_pb2.RepositoryModelLoadResponse()

    @translated
    async def RepositoryModelUnload(self, request: Any, context: Any) -> Any:
        principal = await self._principal(context)
        await self.service.catalog.unload(request.model_name, principal, peer_host(context.peer()))
        return service_pb2.RepositoryModelUnloadResponse()

    # -- not served ----------------------------------------------------------------------
    async def SystemSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        await _unsupported(context, SYSTEM_SHARED_MEMORY)

    async def SystemSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        await _unsupported(context, SYSTEM_SHARED_MEMORY)

    async def SystemSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        await _unsupported(context, SYSTEM_SHARED_MEMORY)

    async def CudaSharedMemoryStatus(self, request: Any, context: Any) -> Any:
        await _unsupported(context, CUDA_SHARED_MEMORY)

    async def CudaSharedMemoryRegister(self, request: Any, context: Any) -> Any:
        await _unsupported(context, CUDA_SHARED_MEMORY)

    async def CudaSharedMemoryUnregister(self, request: Any, context: Any) -> Any:
        await _unsupported(context, CUDA_SHARED_MEMORY)

    async def TraceSetting(self, request: Any, context: Any) -> Any:
        await _unsupported(context, TRACE)

    async def LogSettings(self, request: Any, context: Any) -> Any:
        await _unsupported(context, LOGGING)


async def _unsupported(context: Any, extension: tuple[str, str]) -> None:
    await abort(context, unsupported_extension(extension))
