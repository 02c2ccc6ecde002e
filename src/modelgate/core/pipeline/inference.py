"""The inference use case: the one service every protocol adapter calls.

REST (OIP JSON and binary), gRPC and the OpenAI adapter all decode into
:class:`InferenceRequest`, call :meth:`InferenceService.infer` and encode the
:class:`InferenceResponse`, so validation, version choice, batching and statistics happen
once, the same way for every protocol.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np

from modelgate import __version__
from modelgate.core.access.audit import AuditLog
from modelgate.core.access.authorization import can_see, require_model, require_scope
from modelgate.core.access.identity import Principal, Scope
from modelgate.core.admission.admission import Admission, rate_limit_details
from modelgate.core.admission.ports import UsageSink
from modelgate.core.monitoring.anomaly import AnomalyDetector
from modelgate.core.serving.caching import CachedResult, CacheTicket, ResultCache
from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.model_control import ModelControl
from modelgate.core.serving.ports import InferenceObserver, Timing
from modelgate.core.serving.registry import LoadedVersion, ModelRegistry
from modelgate.core.serving.request_size import check_tokens
from modelgate.core.serving.signature import (
    RequestedOutput,
    card_parameters,
    config_tensor,
    output_tensors,
    select_outputs,
    tensor_metadata,
    validate_inputs,
)
from modelgate.core.serving.tensors import Parameters, Tensor
from modelgate.core.serving.tracing import Tracer, traced
from modelgate.core.traffic.routing import Choice, DeploymentRouter
from modelgate.core.traffic.shadow import ShadowRunner
from modelgate.errors import ErrorKind, ModelgateError, deadline_exceeded

__all__ = [
    "ANONYMOUS",
    "EXTENSIONS",
    "FALLBACK_ON",
    "CompletedInference",
    "InferenceListener",
    "InferenceRequest",
    "InferenceResponse",
    "InferenceService",
    "RequestedOutput",
]

EXTENSIONS = (
    "binary_tensor_data",
    "classification",
    "model_repository",
    "model_configuration",
    "statistics",
)


#: the failures a model's ``fallbacks`` answer for: it cannot answer now, which another
#: model may (a caller's error, a refusal by limits or quotas, or a denial never falls back)
FALLBACK_ON = frozenset(
    {
        ErrorKind.UNAVAILABLE,
        ErrorKind.OVERLOADED,
        ErrorKind.DEADLINE_EXCEEDED,
        ErrorKind.INTERNAL,
    }
)

#: the tenant usage is recorded under when access control is off
ANONYMOUS = "anonymous"
#: the longest key id usage records hold (the column is 128 characters)
_KEY_ID_MAX = 120


@dataclass(slots=True)
class InferenceRequest:
    model: str
    version: str | None
    inputs: list[Tensor]
    outputs: list[RequestedOutput] | None = None
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    #: ``time.monotonic()`` instant after which the caller no longer waits (its timeout or
    #: gRPC deadline); work not started by then is refused with DEADLINE_EXCEEDED
    deadline: float | None = None
    #: the caller's ``Cache-Control`` (REST header, gRPC metadata); None: the request
    #: parameter ``cache_control``, if any (core/serving/caching.py)
    cache_control: str | None = None


@dataclass(slots=True)
class InferenceResponse:
    model_name: str
    model_version: str
    outputs: list[Tensor]
    requested: list[RequestedOutput] | None = None
    id: str | None = None
    parameters: Parameters = field(default_factory=dict)
    #: the tightest rate limit that applied (limit, remaining, reset), for response headers
    rate_limit: dict[str, float] | None = None
    #: for a model that caches: "hit", "miss" or "stale" (an expired entry answered for a
    #: failing model); None: the model does not cache or the cache is off
    cache: str | None = None
    #: a cached answer: when it was computed (``time.time()``), for HTTP caches' ``Age``
    cached_at: float | None = None


@dataclass(frozen=True, slots=True)
class CompletedInference:
    """A successful inference, as listeners see it: who asked, what, and the answer.

    ``inputs`` are the validated input arrays by name (batch dimension first)."""

    principal: Principal | None
    request: InferenceRequest
    response: InferenceResponse
    manifest: ModelManifest
    inputs: dict[str, np.ndarray[Any, Any]]


class InferenceListener(Protocol):
    """Told of each successful inference, on the request path, after the answer is built.

    ``completed`` must not block or do I/O: hand the work to a background task."""

    def completed(self, inference: CompletedInference) -> None: ...


class InferenceService:
    """Inference, metadata, health, statistics and repository control for every adapter."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        server_name: str = "modelgate",
        admission: Admission | None = None,
        usage: UsageSink | None = None,
        listeners: Sequence[InferenceListener] = (),
        default_timeout_s: float | None = None,
        tracer: Tracer | None = None,
        observer: InferenceObserver | None = None,
        anomalies: AnomalyDetector | None = None,
        cache: ResultCache | None = None,
        deployments: DeploymentRouter | None = None,
        shadows: ShadowRunner | None = None,
        audit: AuditLog | None = None,
    ):
        self.registry = registry
        #: loads and unloads on request, with their audit trail
        self.control = ModelControl(registry, audit)
        self.server_name = server_name
        #: the deadline of a request that brings none (None: no deadline)
        self.default_timeout_s = default_timeout_s
        self.admission = admission
        self.usage = usage
        #: told of every request's outcome, tenant and usage (metrics)
        self.observer = observer
        #: told of every successful inference, in order (payload logging, monitoring)
        self.listeners = tuple(listeners)
        #: spans of admission, queueing and the runtime call; None: tracing is off
        self.tracer = tracer
        #: scores the inputs of models with an ``anomaly`` section; None: nothing is
        self.anomalies = anomalies
        #: answers of models with a ``cache`` section; None: caching is off
        self.cache = cache
        #: picks the version of a request that names none (core/traffic/routing.py); None: the
        #: registry's default answers
        self.deployments = deployments
        #: runs the shadow copies a deployment asks for (core/traffic/shadow.py)
        self.shadows = shadows

    # -- health and metadata -------------------------------------------------------------
    def server_metadata(self) -> dict[str, Any]:
        return {"name": self.server_name, "version": __version__, "extensions": list(EXTENSIONS)}

    def server_ready(self) -> bool:
        return self.registry.ready

    async def authorize(
        self, principal: Principal | None, name: str, version: str | None, scope: Scope
    ) -> None:
        """NOT_FOUND unless ``principal`` may use ``scope`` on the model (None: auth is off)."""
        if principal is not None:
            require_model(principal, await self.registry.manifest(name), version, scope)

    async def model_ready(
        self, name: str, version: str | None, principal: Principal | None = None
    ) -> bool:
        """Ready means loaded and serving; an unknown model or version is NOT_FOUND."""
        await self.authorize(principal, name, version, Scope.MODELS_READ)
        loaded = self.registry.get(name, version)
        if loaded is None:
            if name not in self.registry.repository.names():
                raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown model '{name}'")
            return False
        return True

    async def model_metadata(
        self, name: str, version: str | None, principal: Principal | None = None
    ) -> dict[str, Any]:
        await self.authorize(principal, name, version, Scope.MODELS_READ)
        loaded = await self.registry.acquire(name, version)
        manifest = loaded.manifest
        return {
            "name": name,
            "versions": [str(v.version) for v in self.registry.versions(name)],
            "platform": manifest.platform,
            "inputs": [tensor_metadata(spec) for spec in manifest.inputs],
            "outputs": [tensor_metadata(spec) for spec in manifest.outputs],
            "parameters": card_parameters(manifest),
        }

    async def model_config(
        self, name: str, version: str | None, principal: Principal | None = None
    ) -> dict[str, Any]:
        """The model's configuration (Triton's model_configuration extension, JSON form)."""
        await self.authorize(principal, name, version, Scope.MODELS_READ)
        loaded = await self.registry.acquire(name, version)
        manifest = loaded.manifest
        batching = manifest.batching
        config: dict[str, Any] = {
            "name": name,
            "platform": manifest.platform,
            "backend": manifest.runtime,
            "max_batch_size": batching.max_batch_size if batching else 0,
            "input": [config_tensor(s, batching is not None) for s in manifest.inputs],
            "output": [config_tensor(s, batching is not None) for s in manifest.outputs],
            "version_policy": {"all": {}}
            if manifest.version_policy == "all"
            else manifest.version_policy,
            "instance_group": [
                {
                    "count": manifest.instances,
                    "kind": "KIND_GPU" if manifest.hardware.prefer == "gpu" else "KIND_CPU",
                }
            ],
            "parameters": {k: {"string_value": str(v)} for k, v in manifest.labels.items()},
        }
        if batching is not None:
            config["dynamic_batching"] = {
                "max_queue_delay_microseconds": batching.max_queue_delay_us,
                "default_queue_policy": {"max_queue_size": batching.max_queue_size},
            }
        return config

    async def statistics(
        self, name: str | None, version: str | None, principal: Principal | None = None
    ) -> dict[str, Any]:
        require_scope(principal, Scope.MODELS_READ)
        if name:
            await self.authorize(principal, name, version, Scope.MODELS_READ)
            loaded = self.registry.versions(name)
            if not loaded and name not in self.registry.repository.names():
                raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown model '{name}'")
            if version:
                loaded = [v for v in loaded if str(v.version) == version]
                if not loaded:
                    raise ModelgateError(
                        ErrorKind.NOT_FOUND, f"version '{version}' of model '{name}' is not loaded"
                    )
        else:
            loaded = [
                v for n in await self.visible_models(principal) for v in self.registry.versions(n)
            ]
        return {"model_stats": [v.stats.as_dict() for v in loaded]}

    async def visible_models(self, principal: Principal | None) -> list[str]:
        """Names of the models this principal may see (every model when auth is off)."""
        names = await asyncio.to_thread(self.registry.repository.names)
        if principal is None:
            return names
        visible = []
        for name in names:
            try:
                manifest = await self.registry.manifest(name)
            except ModelgateError:
                continue  # a model whose manifest does not load is shown to no tenant
            if can_see(principal, manifest):
                visible.append(name)
        return visible

    # -- repository control --------------------------------------------------------------
    async def repository_index(
        self, ready_only: bool = False, principal: Principal | None = None
    ) -> list[dict[str, str]]:
        require_scope(principal, Scope.MODELS_READ)
        visible = set(await self.visible_models(principal))
        rows = [r for r in self.registry.index() if r["name"] in visible]
        return [r for r in rows if r["state"] == "READY"] if ready_only else rows

    async def load(
        self,
        name: str,
        config: dict[str, Any] | None = None,
        principal: Principal | None = None,
        source_ip: str | None = None,
    ) -> None:
        """Who may load, what an override may change, the audit: core/serving/model_control.py."""
        await self.control.load(name, config, principal, source_ip)

    async def unload(
        self, name: str, principal: Principal | None = None, source_ip: str | None = None
    ) -> None:
        await self.control.unload(name, principal, source_ip)

    # -- inference -----------------------------------------------------------------------
    async def infer(
        self,
        request: InferenceRequest,
        principal: Principal | None = None,
        choice: Choice | None = None,
    ) -> InferenceResponse:
        """Run one inference; when the model cannot answer (see :data:`FALLBACK_ON`) and its
        manifest names ``fallbacks``, the first of them that answers does, and the response
        says so (``parameters["fallback_from"]``). Each attempt is admitted and metered
        under the model that ran it."""
        try:
            return await self._infer_once(request, principal, choice)
        except ModelgateError as exc:
            if exc.kind not in FALLBACK_ON:
                raise
            fallbacks = await self._fallbacks(request.model)
            if not fallbacks:
                raise
            for name in fallbacks:
                attempt = replace(request, model=name, version=None)
                try:
                    response = await self._infer_once(attempt, principal, None)
                except ModelgateError:
                    continue
                response.parameters["fallback_from"] = request.model
                return response
            raise

    async def _fallbacks(self, model: str) -> tuple[str, ...]:
        try:
            return (await self.registry.manifest(model)).fallbacks
        except ModelgateError:
            return ()

    async def _infer_once(
        self,
        request: InferenceRequest,
        principal: Principal | None = None,
        choice: Choice | None = None,
    ) -> InferenceResponse:
        """``choice``: the deployment's pick, when the caller made it (embeddings);
        otherwise a request that names no version is routed here."""
        if choice is None and not request.version and self.deployments is not None:
            choice = self.deployments.choose(request.model, principal, request.parameters)
            if choice is not None and self.tracer is not None:
                _route_span(self.tracer, choice)
        loaded = self._serving(request, choice)
        if loaded is None:
            # Authorize before a first-use load, so nobody loads a model they may not see.
            await self.authorize(principal, request.model, request.version, Scope.INFER)
            version = choice.version if choice is not None else request.version
            loaded = await self.registry.acquire(request.model, version)
        if choice is not None and str(loaded.version) != choice.version:
            choice = None  # the deployment's version is gone: the default answered
        elif principal is not None:
            require_model(principal, loaded.manifest, request.version, Scope.INFER)
        start = time.perf_counter_ns()
        loaded.enter()  # before any await: a reload now waits for this request to finish
        admission = self.admission
        limit = None
        admitted = False
        deadline = request.deadline
        if deadline is None and self.default_timeout_s is not None:
            deadline = time.monotonic() + self.default_timeout_s
        timing = Timing(deadline=deadline)
        rows = tokens = 0
        status = "internal"
        anomaly = None
        ticket: CacheTicket | None = None
        cached: CachedResult | None = None
        try:
            if deadline is not None and time.monotonic() >= deadline:
                raise deadline_exceeded()
            inputs, rows = validate_inputs(loaded.manifest, request.inputs)
            if loaded.manifest.limits.max_total_tokens is not None:  # an embedding model
                await check_tokens(loaded.manifest, loaded.runtime, inputs)
            requested = select_outputs(loaded.manifest, request.outputs)
            if self.anomalies is not None and loaded.manifest.anomaly is not None:
                # before admission and the runtime: a rejected request costs neither
                anomaly = self.anomalies.screen(loaded, inputs)
            if self.cache is not None and loaded.manifest.cache is not None:
                tenant_id = principal.tenant_id if principal is not None else ANONYMOUS
                ticket = self.cache.ticket(
                    loaded, tenant_id, request.parameters, request.cache_control, inputs, requested
                )
            if admission is not None:
                if self.tracer is None:
                    limit = await admission.admit(principal, loaded.manifest, rows)
                else:
                    admit = admission.admit(principal, loaded.manifest, rows)
                    limit = await traced(self.tracer, "admission", admit)
                admitted = True
            # after admission: a hit is limited, counted and metered like any request
            if ticket is not None:
                lookup = ticket.lookup(loaded.stats)
                cached = await (
                    lookup if self.tracer is None else traced(self.tracer, "cache", lookup)
                )
            if cached is not None:
                pass  # the runtime is skipped
            elif self.tracer is None:
                arrays = await loaded.runtime.infer(inputs, timing)
            else:
                arrays = await _traced_runtime(self.tracer, loaded, inputs, timing)
            status = "ok"
        except ModelgateError as exc:
            if ticket is not None:  # an expired entry may answer for a failing model
                cached = ticket.stale_for(exc.kind)
            if cached is None:
                status = exc.kind.value
                loaded.stats.failed(time.perf_counter_ns() - start, status)
                raise
            status = "ok"
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        finally:
            loaded.leave()
            if admitted:
                assert admission is not None
                admission.release(principal)
            if status == "ok" and loaded.manifest.embedding is not None:
                tokens = cached.tokens if cached is not None else _tokens(loaded.manifest, arrays)
            elapsed_ns = time.perf_counter_ns() - start
            if choice is not None and choice.window is not None:  # a canary step's outcome
                choice.window.add(status, elapsed_ns / 1e9)
            tenant = principal.tenant_id if principal is not None else ANONYMOUS
            version = str(loaded.version)
            used_rows = rows if status == "ok" else 0
            if self.usage is not None:
                self.usage.record(
                    tenant,
                    _key_id(principal),
                    request.model,
                    version,
                    hardware=loaded.hardware,
                    status=status,
                    cache_hit=cached is not None,
                    rows=used_rows,
                    tokens=tokens,
                    latency_ms=elapsed_ns / 1e6,
                    compute_ms=timing.compute_ns / 1e6,
                )
            if self.observer is not None:
                self.observer.served(
                    request.model, version, tenant, status, elapsed_ns / 1e9, used_rows, tokens
                )
        if tokens and principal is not None and admission is not None and admission.quotas:
            admission.quotas.add_tokens(principal, tokens)  # no principal: access control off
        if cached is not None:
            outputs = list(cached.outputs)
            loaded.stats.cached(time.perf_counter_ns() - start)
        else:
            outputs = output_tensors(loaded.manifest, arrays, requested)
            loaded.stats.succeeded(
                rows, time.perf_counter_ns() - start, timing.queue_ns, timing.compute_ns
            )
            if not loaded.batched:
                loaded.stats.batch(rows, timing.compute_ns)
            if ticket is not None:
                ticket.keep(str(loaded.version), outputs, rows, tokens)
        response = InferenceResponse(
            model_name=request.model,
            model_version=str(loaded.version),
            outputs=outputs,
            requested=requested,
            id=request.id,
            rate_limit=rate_limit_details(limit) if limit is not None else None,
        )
        if ticket is not None:
            response.cache = ticket.outcome(cached)
            response.cached_at = cached.stored_at if cached is not None else None
        if timing.parameters and cached is None:  # what the node said (its anomaly check)
            response.parameters.update(timing.parameters)
        if choice is not None:
            response.parameters["deployment_variant"] = choice.variant
            response.parameters["deployment_stage"] = choice.stage
            if choice.shadow is not None and self.shadows is not None and cached is None:
                # after the answer is built; the copy runs in the background
                took = (time.perf_counter_ns() - start) / 1e9
                self.shadows.mirror(choice, inputs, arrays, took)
        if anomaly is not None:
            response.parameters.update(anomaly)
        if timing.hardware is not None and timing.hardware != loaded.manifest.hardware.prefer:
            # a gateway found no node of the preferred hardware: the answer says where it ran
            response.parameters["hardware_fallback"] = timing.hardware
        for listener in self.listeners:
            listener.completed(
                CompletedInference(principal, request, response, loaded.manifest, inputs)
            )
        return response

    def _serving(self, request: InferenceRequest, choice: Choice | None) -> LoadedVersion | None:
        """The loaded version that answers; a deployment naming a version the repository
        no longer has falls back to the registry's default rather than failing."""
        if choice is None:
            return self.registry.get(request.model, request.version)
        try:
            return self.registry.get(request.model, choice.version)
        except ModelgateError:
            return self.registry.get(request.model, None)


async def _traced_runtime(
    tracer: Tracer, loaded: LoadedVersion, inputs: dict[str, np.ndarray[Any, Any]], timing: Timing
) -> dict[str, np.ndarray[Any, Any]]:
    """The runtime call, with its spans recorded afterwards from ``timing`` (so the batcher
    needs no tracer): the wait in the batcher's queue, then the run of the batch."""
    called = time.perf_counter_ns()
    try:
        arrays = await loaded.runtime.infer(inputs, timing)
    except BaseException as exc:
        kind = exc.kind if isinstance(exc, ModelgateError) else None
        # a full queue refuses before anything runs
        span = tracer.start("queue" if kind is ErrorKind.OVERLOADED else "runtime", called)
        if kind is not None:
            span.fail(kind.value)
        else:
            span.fail("cancelled" if isinstance(exc, asyncio.CancelledError) else "internal")
        span.end()
        raise
    ran = called + timing.queue_ns
    if loaded.batched:
        tracer.start("queue", called).end(ran)
    span = tracer.start("runtime", ran)
    span.set("modelgate.model", loaded.name)
    span.set("modelgate.model_version", loaded.version)
    span.set("modelgate.batch_size", timing.batch_size)
    span.set("modelgate.hardware", timing.hardware or loaded.hardware)
    if timing.node is not None:  # a gateway's call: the node that answered
        span.set("modelgate.node", timing.node)
    span.end(ran + timing.compute_ns)
    return arrays


def _route_span(tracer: Tracer, choice: Choice) -> None:
    """The deployment's pick, as an instant span (the choice is a hash and a lookup)."""
    span = tracer.start("route")
    span.set("modelgate.model", choice.model)
    span.set("modelgate.model_version", choice.version)
    span.set("modelgate.deployment_variant", choice.variant)
    span.set("modelgate.deployment_stage", choice.stage)
    span.end()


def _key_id(principal: Principal | None) -> str | None:
    """What usage records as the key: the key id, or ``jwt:<subject>``, ``admin:...``."""
    if principal is None:
        return None
    if principal.kind == "key":
        return principal.subject
    who = f"{principal.kind}:{principal.subject}"
    if len(who) > _KEY_ID_MAX:  # a long JWT subject: a stable digest fits the column
        who = f"{principal.kind}:sha256:{hashlib.sha256(principal.subject.encode()).hexdigest()}"
    return who


def _tokens(manifest: ModelManifest, arrays: dict[str, np.ndarray[Any, Any]]) -> int:
    """Tokens an embedding model used: its second output counts them per row."""
    if len(manifest.outputs) < 2:
        return 0
    return int(arrays[manifest.outputs[1].name].sum())
