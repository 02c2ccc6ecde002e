"""The inference use case: the request path every protocol adapter calls, as named steps.

REST (OIP JSON and binary), gRPC, the OpenAI adapter and the job worker all decode into
:class:`~modelgate.core.serving.requests.InferenceRequest`, call
:meth:`InferenceService.infer` and encode the answer, so routing, authorization, validation,
admission, caching, batching, metering and the listeners happen once, the same way for
every protocol.

This is the module that composes the contexts (traffic, access, monitoring, admission,
serving). :meth:`InferenceService._infer_once` lists the steps in the order of the request
path in docs/architecture.md, each a method called with what it needs; a step that is one
awaited call answers that call's awaitable, so the steps cost a method call each and no
coroutine, await or object per request that the path did not have before.

One concept over 400 lines: the steps are read together, top to bottom, and a step moved
to another module would hide the order (and the state each one is handed) that this file
exists to show.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from modelgate.core.access.authorization import require_model
from modelgate.core.access.identity import Principal, Scope
from modelgate.core.admission.admission import Admission, rate_limit_details
from modelgate.core.admission.fairness import fair_weight
from modelgate.core.admission.ports import Decision, UsageSink
from modelgate.core.admission.usage import usage_key_id
from modelgate.core.monitoring.anomaly import AnomalyDetector
from modelgate.core.pipeline.explanations import EXPLAIN, Explanations, explain
from modelgate.core.pipeline.spans import route_span, traced_runtime
from modelgate.core.serving.caching import CacheTicket, ResultCache
from modelgate.core.serving.catalog import ModelCatalog
from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.ports import CachedResult, InferenceObserver, Timing, Tracer
from modelgate.core.serving.registry import LoadedVersion, ModelRegistry
from modelgate.core.serving.request_size import check_tokens
from modelgate.core.serving.requests import (
    ANONYMOUS,
    CompletedInference,
    InferenceListener,
    InferenceRequest,
    InferenceResponse,
)
from modelgate.core.serving.signature import (
    RequestedOutput,
    output_tensors,
    select_outputs,
)
from modelgate.core.serving.tensors import Parameters, Tensor
from modelgate.core.serving.tracing import traced
from modelgate.core.traffic.routing import Choice, DeploymentRouter
from modelgate.core.traffic.shadow import ShadowRunner
from modelgate.errors import ErrorKind, ModelgateError, deadline_exceeded

__all__ = ["FALLBACK_ON", "InferenceService"]

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

#: the runtime's arrays of a request the cache answered: the runtime did not run (never written)
_NOT_RUN: dict[str, np.ndarray[Any, Any]] = {}

#: the input or output arrays of one request, by name
_Arrays = dict[str, np.ndarray[Any, Any]]


class InferenceService:
    """One inference through every context, for every adapter. What else an adapter asks
    of the models (metadata, health, statistics, load and unload) is :attr:`catalog`'s."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        catalog: ModelCatalog | None = None,
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
        forwarded: Callable[[Principal | None], bool] | None = None,
        forwarded_listeners: Sequence[InferenceListener] = (),
        explanations: Explanations | None = None,
    ):
        self.registry = registry
        #: the models' metadata and control, and who may see them (None: a catalog of
        #: ``registry`` with no audit trail)
        self.catalog = catalog if catalog is not None else ModelCatalog(registry)
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
        #: a node's test for a call its gateway forwarded, whose usage, feedback and
        #: payload the gateway recorded and whose model rate limit it applied
        #: (core/gateway/node_calls.py): such a call is not counted against the model's
        #: limit, not cached twice, not metered into ``usage``, and is handed only to
        #: ``forwarded_listeners``. None: every call is (an all-in-one server, a gateway)
        self.forwarded = forwarded
        self.forwarded_listeners = tuple(forwarded_listeners)
        #: computes the attributions a request's ``parameters.explain`` asks for
        #: (core/pipeline/explanations.py); None: such requests are refused
        self.explanations = explanations

    async def infer(
        self,
        request: InferenceRequest,
        principal: Principal | None = None,
        choice: Choice | None = None,
    ) -> InferenceResponse:
        """Run one inference; when the model cannot answer (see :data:`FALLBACK_ON`) and its
        manifest names ``fallbacks``, the first of them that answers does, and the response
        says so (``parameters["fallback_from"]``). Each attempt is admitted and metered
        under the model that ran it. A request carrying ``parameters.explain`` is
        :func:`~modelgate.core.pipeline.explanations.explain`'s, which comes back here
        without it."""
        if EXPLAIN in request.parameters:
            return await explain(self, request, principal, choice)
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
        """One attempt, the request path's steps in order. ``choice``: the deployment's
        pick, when the caller made it (embeddings); otherwise it is made here."""
        choice = self._route(request, principal, choice)
        loaded = self._serving(request, choice)
        if loaded is None:  # a first use: authorized before it loads
            loaded = await self._load(request, principal, choice)
        choice = self._authorize(request, principal, loaded, choice)
        # a call a node's gateway forwarded: the gateway limited, metered and recorded it
        forwarded = self.forwarded is not None and self.forwarded(principal)
        start = time.perf_counter_ns()
        loaded.enter()  # before any await: a reload now waits for this request to finish
        timing = Timing(deadline=self._deadline(request), critical=request.critical)
        admission = self.admission
        admitted = False
        limit: Decision | None = None
        ticket: CacheTicket | None = None
        cached: CachedResult | None = None
        arrays = _NOT_RUN
        rows = 0
        status = "internal"
        try:
            inputs, rows = self._validate(request, loaded, timing)
            if loaded.manifest.limits.max_total_tokens is not None:  # an embedding model
                await check_tokens(loaded.manifest, loaded.runtime, inputs)
            requested = select_outputs(loaded.manifest, request.outputs)
            # before admission: a rejection costs none
            anomaly = self._screen(request, loaded, inputs, forwarded)
            ticket = self._ticket(request, principal, loaded, inputs, requested, forwarded)
            if admission is not None:
                limit = await self._admit(
                    admission, principal, request, loaded, rows, choice, timing, forwarded
                )
                admitted = True
            if ticket is not None:  # after admission: a hit is limited and metered like any
                cached = await self._lookup(ticket, loaded)
            if cached is None:
                arrays = await self._run(loaded, inputs, timing)
            status = "ok"
        except ModelgateError as exc:
            # an expired entry may answer for a failing model
            cached = ticket.stale_for(exc.kind) if ticket is not None else None
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
            tokens = self._meter(
                request,
                principal,
                loaded,
                choice,
                status,
                rows,
                cached,
                arrays,
                start,
                timing,
                forwarded,
            )
        if tokens:
            self._charge_tokens(principal, tokens)
        outputs = self._collect_outputs(
            loaded, requested, cached, arrays, rows, tokens, start, timing, ticket
        )
        response = self._respond(
            request, loaded, choice, outputs, requested, limit, ticket, cached, anomaly, timing
        )
        self._mirror(choice, inputs, arrays, cached, start)
        self._notify(principal, request, response, loaded, inputs, forwarded)
        return response

    # -- the steps, in order -------------------------------------------------------------
    def _route(
        self, request: InferenceRequest, principal: Principal | None, choice: Choice | None
    ) -> Choice | None:
        """The deployment's pick for a request that names no version (None: the model has
        no deployment, or the request names its version)."""
        if choice is None and not request.version and self.deployments is not None:
            choice = self.deployments.choose(request.model, principal, request.parameters)
            if choice is not None and self.tracer is not None:
                route_span(self.tracer, choice)
        return choice

    def _serving(self, request: InferenceRequest, choice: Choice | None) -> LoadedVersion | None:
        """The loaded version that answers; a deployment naming a version the repository
        no longer has falls back to the registry's default rather than failing."""
        if choice is None:
            return self.registry.get(request.model, request.version)
        try:
            return self.registry.get(request.model, choice.version)
        except ModelgateError:
            return self.registry.get(request.model, None)

    async def _load(
        self, request: InferenceRequest, principal: Principal | None, choice: Choice | None
    ) -> LoadedVersion:
        """A version not loaded yet, loaded once whoever asks, after authorization, so
        nobody loads a model they may not see."""
        await self.catalog.authorize(principal, request.model, request.version, Scope.INFER)
        version = choice.version if choice is not None else request.version
        return await self.registry.acquire(request.model, version)

    @staticmethod
    def _authorize(
        request: InferenceRequest,
        principal: Principal | None,
        loaded: LoadedVersion,
        choice: Choice | None,
    ) -> Choice | None:
        """NOT_FOUND unless the principal may infer with the version that answers; the
        route, dropped when its version is gone and the default answered."""
        if principal is not None:
            require_model(principal, loaded.manifest, request.version, Scope.INFER)
        if choice is not None and str(loaded.version) != choice.version:
            return None  # the deployment's version is gone: the default answered
        return choice

    def _deadline(self, request: InferenceRequest) -> float | None:
        """The caller's deadline, or the default timeout's from now (None: no deadline)."""
        if request.deadline is None and self.default_timeout_s is not None:
            return time.monotonic() + self.default_timeout_s
        return request.deadline

    @staticmethod
    def _validate(
        request: InferenceRequest, loaded: LoadedVersion, timing: Timing
    ) -> tuple[_Arrays, int]:
        """The input arrays by name and their rows, checked against the manifest's
        signature and limits; DEADLINE_EXCEEDED when the caller no longer waits."""
        if timing.deadline is not None and time.monotonic() >= timing.deadline:
            raise deadline_exceeded()
        return loaded.plan.validate(request.inputs)

    def _screen(
        self, request: InferenceRequest, loaded: LoadedVersion, inputs: _Arrays, forwarded: bool
    ) -> Parameters | None:
        """The anomaly check of a model with an ``anomaly`` section: the response's
        parameters, or INVALID_ARGUMENT when it rejects. Not on a node for a call whose
        gateway checked it (its caller's request, before merging it with others)."""
        if self.anomalies is None or loaded.manifest.anomaly is None:
            return None
        if forwarded and request.screened:
            return None
        return self.anomalies.screen(loaded, inputs)

    def _ticket(
        self,
        request: InferenceRequest,
        principal: Principal | None,
        loaded: LoadedVersion,
        inputs: _Arrays,
        requested: list[RequestedOutput] | None,
        forwarded: bool = False,
    ) -> CacheTicket | None:
        """The result-cache key and directives of a model with a ``cache`` section; None
        for a call a node's gateway ``forwarded``: the gateway looked its answer up and
        keeps it (a second lookup and copy here would cost a Redis round trip each way)."""
        if self.cache is None or loaded.manifest.cache is None or forwarded:
            return None
        tenant_id = principal.tenant_id if principal is not None else ANONYMOUS
        return self.cache.ticket(
            loaded, tenant_id, request.parameters, request.cache_control, inputs, requested
        )

    def _admit(
        self,
        admission: Admission,
        principal: Principal | None,
        request: InferenceRequest,
        loaded: LoadedVersion,
        rows: int,
        choice: Choice | None,
        timing: Timing,
        forwarded: bool = False,
    ) -> Awaitable[Decision | None]:
        """Batch size, shedding, concurrency, rate limits and quotas (core/admission). A
        request no deployment routed is answered by the version its path names, so a
        refusal by that model's own limit may be noted under the path's model and version
        (core/admission/refusals.py). The tenant and its weight go on ``timing``, where the
        batcher takes waiting requests per tenant in turn (core/serving/fair_queue.py); on a
        node, a gateway's call takes the turn of the tenant it is for
        (core/gateway/tenant_metadata.py), and a gateway forwards them with the priority. A
        call a node's gateway ``forwarded`` is not counted against the model's own rate
        limit again: the gateway did."""
        if principal is not None:
            behalf = principal.on_behalf
            if behalf is None:
                timing.tenant = principal.tenant_id
                timing.weight = fair_weight(principal.plan)
                timing.priority = principal.plan.priority
            else:
                timing.tenant = behalf.tenant
                timing.weight = behalf.weight
                timing.priority = behalf.priority
        named = (request.model, request.version) if choice is None else None
        admit = admission.admit(
            principal,
            loaded.manifest,
            rows,
            named,
            served=(str(loaded.version), loaded.hardware),
            model_limit=not forwarded,
        )
        return admit if self.tracer is None else traced(self.tracer, "admission", admit)

    def _lookup(self, ticket: CacheTicket, loaded: LoadedVersion) -> Awaitable[CachedResult | None]:
        """A fresh cached answer, or None (the model runs)."""
        lookup = ticket.lookup(loaded.stats)
        return lookup if self.tracer is None else traced(self.tracer, "cache", lookup)

    def _run(self, loaded: LoadedVersion, inputs: _Arrays, timing: Timing) -> Awaitable[_Arrays]:
        """The version's runtime: the batcher's queue, then the model."""
        if self.tracer is None:
            return loaded.runtime.infer(inputs, timing)
        return traced_runtime(self.tracer, loaded, inputs, timing)

    def _meter(
        self,
        request: InferenceRequest,
        principal: Principal | None,
        loaded: LoadedVersion,
        choice: Choice | None,
        status: str,
        rows: int,
        cached: CachedResult | None,
        arrays: _Arrays,
        start: int,
        timing: Timing,
        forwarded: bool = False,
    ) -> int:
        """Every outcome, failures included, to the canary window, usage (not a call a
        node's gateway forwarded: the gateway metered it) and metrics; answers the tokens
        an embedding model used."""
        tokens = 0
        if status == "ok" and loaded.manifest.embedding is not None:
            tokens = cached.tokens if cached is not None else _tokens(loaded.manifest, arrays)
        elapsed_ns = time.perf_counter_ns() - start
        if choice is not None and choice.window is not None:  # a canary step's outcome
            choice.window.add(status, elapsed_ns / 1e9)
        tenant = principal.tenant_id if principal is not None else ANONYMOUS
        version = str(loaded.version)
        used_rows = rows if status == "ok" else 0
        if self.usage is not None and not forwarded:
            self.usage.record(
                tenant,
                usage_key_id(principal),
                request.model,
                version,
                hardware=loaded.hardware,
                status=status,
                cache_hit=cached is not None,
                rows=used_rows,
                tokens=tokens,
                latency_ms=elapsed_ns / 1e6,
                compute_ms=timing.charged_ns / 1e6,  # its share of a merged batch
            )
        if self.observer is not None:
            self.observer.served(
                request.model, version, tenant, status, elapsed_ns / 1e9, used_rows, tokens
            )
        return tokens

    def _charge_tokens(self, principal: Principal | None, tokens: int) -> None:
        """An embedding model's tokens, added to the tenant's token quotas in the
        background (no principal: access control is off)."""
        admission = self.admission
        if principal is not None and admission is not None and admission.quotas:
            admission.quotas.add_tokens(principal, tokens)

    @staticmethod
    def _collect_outputs(
        loaded: LoadedVersion,
        requested: list[RequestedOutput] | None,
        cached: CachedResult | None,
        arrays: _Arrays,
        rows: int,
        tokens: int,
        start: int,
        timing: Timing,
        ticket: CacheTicket | None,
    ) -> list[Tensor]:
        """The requested outputs, from the cache or the runtime's arrays, counted in the
        version's statistics; a fresh answer is kept for the cache."""
        if cached is not None:
            outputs = list(cached.outputs)
            loaded.stats.cached(time.perf_counter_ns() - start)
            return outputs
        outputs = output_tensors(loaded.manifest, arrays, requested)
        loaded.stats.succeeded(
            rows, time.perf_counter_ns() - start, timing.queue_ns, timing.compute_ns
        )
        if not loaded.batched:
            loaded.stats.batch(rows, timing.compute_ns)
        if ticket is not None:
            ticket.keep(str(loaded.version), outputs, rows, tokens)
        return outputs

    @staticmethod
    def _respond(
        request: InferenceRequest,
        loaded: LoadedVersion,
        choice: Choice | None,
        outputs: list[Tensor],
        requested: list[RequestedOutput] | None,
        limit: Decision | None,
        ticket: CacheTicket | None,
        cached: CachedResult | None,
        anomaly: Parameters | None,
        timing: Timing,
    ) -> InferenceResponse:
        """The answer, with what the steps found: the rate limit, the cache's outcome,
        the node's and the deployment's parameters, the anomaly score, where it ran."""
        response = InferenceResponse(
            request.model,
            str(loaded.version),
            outputs,
            requested,
            request.id,
            {},  # parameters: filled in below
            rate_limit_details(limit) if limit is not None else None,
        )
        if ticket is not None:
            response.cache = ticket.outcome(cached)
            response.cached_at = cached.stored_at if cached is not None else None
        parameters = response.parameters
        if timing.parameters and cached is None:  # what the node said (its anomaly check)
            parameters.update(timing.parameters)
        if choice is not None:
            parameters["deployment_variant"] = choice.variant
            parameters["deployment_stage"] = choice.stage
        if anomaly is not None:
            parameters.update(anomaly)
        if timing.hardware is not None and timing.hardware != loaded.manifest.hardware.prefer:
            # a gateway found no node of the preferred hardware: the answer says where it ran
            parameters["hardware_fallback"] = timing.hardware
        return response

    def _mirror(
        self,
        choice: Choice | None,
        inputs: _Arrays,
        arrays: _Arrays,
        cached: CachedResult | None,
        start: int,
    ) -> None:
        """The deployment's shadow copy, started in the background after the answer is
        built (a cached answer is not copied: the model did not run)."""
        if choice is None or choice.shadow is None or self.shadows is None or cached is not None:
            return
        self.shadows.mirror(choice, inputs, arrays, (time.perf_counter_ns() - start) / 1e9)

    def _notify(
        self,
        principal: Principal | None,
        request: InferenceRequest,
        response: InferenceResponse,
        loaded: LoadedVersion,
        inputs: _Arrays,
        forwarded: bool = False,
    ) -> None:
        """The listeners, in order, each handed the one (frozen) record of the inference
        (a node hands a call its gateway forwarded only to ``forwarded_listeners``)."""
        listeners = self.forwarded_listeners if forwarded else self.listeners
        if not listeners:
            return
        completed = CompletedInference(principal, request, response, loaded.manifest, inputs)
        for listener in listeners:
            listener.completed(completed)


def _tokens(manifest: ModelManifest, arrays: _Arrays) -> int:
    """Tokens an embedding model used: its second output counts them per row."""
    name = manifest.token_output
    return 0 if name is None else int(arrays[name].sum())
