"""Explanations on request: an inference whose ``parameters.explain`` is true answers, with
its outputs, each row's feature attributions (docs/explanations.md).

:meth:`InferenceService.infer` hands a request that carries the ``explain`` parameter to
:func:`explain`, whatever the protocol (OIP REST and gRPC, job items), so a request without
it pays one dictionary lookup. The steps, in order:

1. the parameter must be a boolean (INVALID_ARGUMENT otherwise); false is a plain inference;
2. the caller may use the model, and the model explains (its manifest has an ``explain``
   section: INVALID_ARGUMENT otherwise); a version the learning loop trained from tenants'
   data (its card's ``trained_by``) only for operators unless ``learned_for_tenants``
   (PERMISSION_DENIED);
3. at most ``max_rows`` rows, and no more than the plan's ``explanations_per_minute`` (the
   server's ``default_per_minute`` when the plan sets none) could ever allow
   (PAYLOAD_TOO_LARGE: no retry helps);
4. a place in the compute slots, fairly shared between tenants (:mod:`.explain_slots`:
   OVERLOADED when the tenant's share is taken, DEADLINE_EXCEEDED when the deadline passes
   while it waits), then the rows against the tenant's GCRA bucket (RATE_LIMITED). Every
   refusal so far comes before the inference: it is neither run nor billed;
5. holding its slot, the inference itself, as any (its admission, limits, metering,
   listeners), without the ``explain`` parameter, then the attributions of the version that
   answered, in a worker thread: the ``linear`` method or KernelSHAP
   (:mod:`modelgate.core.serving.attribution`);
6. metered as a usage unit of their own (rows explained) with their compute time, and added
   to the answer: an output ``<output>_attributions`` (FP32, [rows, features], in the input's
   feature order) and the ``explain_*`` parameters.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from modelgate.core.access.identity import Principal, Scope
from modelgate.core.admission.ports import ExplanationMeter, RateLimiter
from modelgate.core.admission.usage import usage_key_id
from modelgate.core.pipeline.explain_slots import ExplainSlots, Reservation
from modelgate.core.serving.attribution import (
    Attribution,
    KernelAttributor,
    ModelFunction,
    Rows,
    apply_link,
    linear_attributions,
    model_function,
    predictor_of,
    reference_background,
    reference_means,
)
from modelgate.core.serving.learning_spec import trained_by_loop
from modelgate.core.serving.manifest import (
    ExplainSpec,
    ModelManifest,
    explained_column,
    explained_output,
)
from modelgate.core.serving.ports import VersionSource
from modelgate.core.serving.profiles import read_reference
from modelgate.core.serving.requests import ANONYMOUS, InferenceRequest, InferenceResponse
from modelgate.core.serving.tensors import Tensor
from modelgate.errors import ErrorKind, ModelgateError, invalid

if TYPE_CHECKING:
    from modelgate.core.pipeline.inference import InferenceService
    from modelgate.core.serving.registry import LoadedVersion
    from modelgate.core.traffic.routing import Choice

__all__ = ["EXPLAIN", "ExplainPolicy", "Explanations", "explain", "explain_requested"]

log = logging.getLogger("modelgate.explanations")

#: the request parameter that asks for attributions
EXPLAIN = "explain"
#: what the attributions output of output ``o`` is called
SUFFIX = "_attributions"
#: a plan's limit on rows explained is per this many seconds
WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class ExplainPolicy:
    """How much work explanations may take (settings ``explain_*``)."""

    #: rows one request may ask to explain
    max_rows: int = 16
    #: KernelSHAP's coalition samples per row
    samples: int = 4096
    #: KernelSHAP's background rows, drawn from the reference profile
    background_rows: int = 32
    #: explanations computed at once, each in a worker thread
    concurrency: int = 2
    #: explanations waiting for a thread; more are refused (OVERLOADED)
    queue: int = 8
    #: explanations one tenant may have waiting; more are refused (OVERLOADED)
    tenant_queue: int = 4
    #: rows explained per minute for a plan whose ``explanations_per_minute`` is unset
    #: (0: such a plan may not explain)
    default_per_minute: int = 60
    #: may tenants explain a model retrained from tenants' data (its ``learning``
    #: section)? Otherwise only operators (``tenants:admin``) may
    learned_for_tenants: bool = False
    #: input elements per runtime call (a block of rows)
    block_elements: int = 1 << 22


@dataclass(frozen=True, slots=True)
class _Prepared:
    """What a version needs to be explained, worked out on its first explanation."""

    model: ModelFunction
    #: the reference means (linear) or the background rows (kernel_shap)
    reference: Rows


def explain_requested(parameters: dict[str, object]) -> bool:
    """The ``explain`` parameter's value; INVALID_ARGUMENT unless it is a boolean."""
    value = parameters.get(EXPLAIN, False)
    if not isinstance(value, bool):
        raise invalid(f"parameter '{EXPLAIN}' must be true or false, not {value!r}")
    return value


class Explanations:
    """Computes attributions for the inference service, bounded by ``policy``."""

    def __init__(
        self,
        policy: ExplainPolicy,
        kernel: KernelAttributor,
        *,
        limiter: RateLimiter | None = None,
        meter: ExplanationMeter | None = None,
        on_explained: Callable[[str, str, int], None] | None = None,
    ):
        self.policy = policy
        self._kernel = kernel
        self._limiter = limiter
        self._meter = meter
        #: told (model, method, rows) of each explanation (metrics)
        self._on_explained = on_explained
        self._prepared: weakref.WeakKeyDictionary[LoadedVersion, _Prepared] = (
            weakref.WeakKeyDictionary()
        )
        self._slots = ExplainSlots(policy.concurrency, policy.queue, policy.tenant_queue)
        #: explanations computed by this process (tests, and the statistics of docs)
        self.explained = 0

    def check(self, principal: Principal | None, manifest: ModelManifest, rows: int) -> int:
        """The request against what never changes with a retry: the model explains, the
        caller may see its reference profile, and ``rows`` fits the bounds and the plan's
        limit. The plan's limit on rows explained per minute (0: none may be)."""
        _check_explains(manifest)
        if (
            trained_by_loop(manifest.card)
            and not self.policy.learned_for_tenants
            and principal is not None
            and Scope.TENANTS_ADMIN.value not in principal.scopes
        ):
            raise ModelgateError(
                ErrorKind.PERMISSION_DENIED,
                f"this version of '{manifest.name}' was trained by the learning loop from "
                "tenants' data: only operators may explain it "
                "(MODELGATE_EXPLAIN_LEARNED_MODELS, docs/explanations.md)",
            )
        if rows > self.policy.max_rows:
            raise ModelgateError(
                ErrorKind.PAYLOAD_TOO_LARGE,
                f"explanations are limited to {self.policy.max_rows} rows per request, not {rows}",
            )
        limit = self.limit_of(principal)
        if limit == 0:
            raise ModelgateError(
                ErrorKind.PERMISSION_DENIED,
                "the plan allows no explanations (its explanations_per_minute is 0"
                + (", the server's default" if _plan_limit(principal) is None else "")
                + ")",
            )
        if rows > limit:  # never fits, however long the caller waits: not worth a retry
            raise ModelgateError(
                ErrorKind.PAYLOAD_TOO_LARGE,
                f"the plan allows {limit} explained rows per minute; this request asks {rows}",
            )
        return limit

    def limit_of(self, principal: Principal | None) -> int:
        """Rows explained per minute the caller's plan allows: its own
        ``explanations_per_minute``, else the server's default."""
        limit = _plan_limit(principal)
        return self.policy.default_per_minute if limit is None else limit

    def reserve(self, principal: Principal | None) -> Reservation:
        """A place in the compute slots for the caller's tenant (OVERLOADED when its share
        is taken), before anything is spent on the request."""
        return self._slots.reserve(_tenant(principal))

    async def wait(self, reservation: Reservation, deadline: float | None) -> None:
        """Until the reservation holds a slot (DEADLINE_EXCEEDED if ``deadline`` passes)."""
        await self._slots.wait(reservation, deadline)

    def release(self, reservation: Reservation) -> None:
        """The reservation's slot (or turn) back, to the next tenant's turn."""
        self._slots.release(reservation)

    async def charge(self, principal: Principal | None, rows: int, limit: int) -> None:
        """``rows`` against the tenant's rows explained per minute (RATE_LIMITED)."""
        if self._limiter is None:
            return
        decision = await self._limiter.hit(
            f"explain:{_tenant(principal)}", limit, WINDOW_S, cost=rows
        )
        if not decision.allowed:
            raise ModelgateError(
                ErrorKind.RATE_LIMITED,
                f"explanation limit exceeded: the plan allows {limit} explained rows per minute",
                retry_after=decision.retry_after_s,
                details={
                    "limit": decision.limit,
                    "remaining": decision.remaining,
                    "reset": decision.reset_after_s,
                },
            )

    async def attribute(self, loaded: LoadedVersion, rows: Rows) -> Attribution:
        """The attributions of ``rows`` by ``loaded``, in a worker thread (the caller holds
        a slot)."""
        spec = loaded.manifest.explain
        assert spec is not None
        return await asyncio.to_thread(self._compute, loaded, spec, rows)

    def _compute(self, loaded: LoadedVersion, spec: ExplainSpec, rows: Rows) -> Attribution:
        prepared = self._prepared.get(loaded)
        if prepared is None:  # once per version: its reference profile, read from disk
            prepared = self._prepared[loaded] = self._prepare(loaded, spec)
        if spec.method == "linear":
            return linear_attributions(prepared.model, rows, prepared.reference, spec.link)
        samples = self.policy.samples
        values, base, evaluations = self._kernel.attribute(
            prepared.model, rows, prepared.reference, spec.link, samples
        )
        outputs = apply_link(spec.link, prepared.model(rows))
        # KernelSHAP enumerates every coalition when the samples allow (2^F - 2 of them):
        # the attributions are then exact Shapley values for the background, and the same
        # for the same request; beyond that it samples them at random
        used = min(samples, 2 ** rows.shape[1] - 2) if rows.shape[1] < 62 else samples
        return Attribution(
            values, base, "kernel_shap", spec.link, outputs, evaluations + len(rows), used
        )

    def _prepare(self, loaded: LoadedVersion, spec: ExplainSpec) -> _Prepared:
        predictor = predictor_of(loaded.runtime)
        if predictor is None:
            raise ModelgateError(
                ErrorKind.FAILED_PRECONDITION,
                f"model '{loaded.name}' runs on another node: explanations are computed "
                "where the model runs",
            )
        manifest = loaded.manifest
        model = model_function(predictor, manifest, spec, self.policy.block_elements)
        profile = read_reference(VersionSource(loaded.version, loaded.path, manifest))
        names = _feature_names(manifest)
        if spec.method == "linear":
            return _Prepared(model, reference_means(profile, names))
        background = reference_background(profile, names, self.policy.background_rows)
        return _Prepared(model, background)

    def metered(
        self,
        principal: Principal | None,
        loaded: LoadedVersion,
        attribution: Attribution,
        compute_ms: float,
    ) -> None:
        """The rows explained and their compute, to usage and metrics."""
        self.explained += 1
        rows = len(attribution.values)
        if self._meter is not None:
            self._meter.record_explanation(
                principal.tenant_id if principal is not None else ANONYMOUS,
                usage_key_id(principal),
                loaded.name,
                str(loaded.version),
                hardware=loaded.hardware,
                rows=rows,
                compute_ms=compute_ms,
            )
        if self._on_explained is not None:
            self._on_explained(loaded.name, attribution.method, rows)


async def explain(
    service: InferenceService,
    request: InferenceRequest,
    principal: Principal | None,
    choice: Choice | None,
) -> InferenceResponse:
    """The inference of a request that carries ``parameters.explain`` (the steps: the
    module's docstring)."""
    plain = replace(
        request, parameters={k: v for k, v in request.parameters.items() if k != EXPLAIN}
    )
    if not explain_requested(request.parameters):
        return await service.infer(plain, principal, choice)
    explanations = service.explanations
    if explanations is None:
        raise invalid("this server does not compute explanations")
    await service.catalog.authorize(principal, request.model, request.version, Scope.INFER)
    loaded = service.registry.get(request.model, request.version)
    manifest = loaded.manifest if loaded is not None else None
    if manifest is None:
        manifest = await service.registry.manifest(request.model)
    count = _rows(request)
    limit = explanations.check(principal, manifest, count)
    # the slot first: a refusal (its share taken, its deadline passed while waiting, its
    # rate limit) comes before the inference, which is then neither run nor billed
    reservation = explanations.reserve(principal)
    try:
        await explanations.wait(reservation, request.deadline)
        await explanations.charge(principal, count, limit)
        response = await service.infer(plain, principal, choice)
        answered = service.registry.get(response.model_name, response.model_version)
        if answered is None:
            raise ModelgateError(
                ErrorKind.UNAVAILABLE,
                f"model '{response.model_name}' was unloaded while explaining",
            )
        explanations.check(principal, answered.manifest, count)
        arrays, _ = answered.plan.validate(plain.inputs)
        rows = np.asarray(arrays[answered.manifest.inputs[0].name], dtype=np.float64)
        start = time.perf_counter()
        attribution = await explanations.attribute(answered, rows)
    finally:
        explanations.release(reservation)
    explanations.metered(principal, answered, attribution, (time.perf_counter() - start) * 1e3)
    return _attach(response, answered.manifest, attribution)


def _check_explains(manifest: ModelManifest) -> None:
    if manifest.explain is None:
        raise invalid(
            f"model '{manifest.name}' does not support explanations: its manifest has no "
            "'explain' section (docs/explanations.md)"
        )


def _plan_limit(principal: Principal | None) -> int | None:
    return principal.plan.explanations_per_minute if principal is not None else None


def _tenant(principal: Principal | None) -> str:
    """The tenant whose share and budget an explanation counts towards."""
    if principal is None:
        return ANONYMOUS
    if principal.on_behalf is not None:
        return principal.on_behalf.tenant
    return principal.tenant_id


def _rows(request: InferenceRequest) -> int:
    """The rows the request asks about (its first input's first dimension)."""
    if not request.inputs or request.inputs[0].data.ndim == 0:
        return 1
    return int(request.inputs[0].data.shape[0])


def _feature_names(manifest: ModelManifest) -> list[str]:
    tensor = manifest.inputs[0]
    names = tensor.feature_names
    if names is None or len(names) != tensor.shape[1]:
        raise ModelgateError(
            ErrorKind.FAILED_PRECONDITION,
            f"explanations need the feature_names of input '{tensor.name}' (one per column), "
            "which its reference profile's statistics are keyed by",
        )
    return list(names)


def _attach(
    response: InferenceResponse, manifest: ModelManifest, attribution: Attribution
) -> InferenceResponse:
    """A copy of ``response`` with the attributions: the listeners (payload logging,
    feedback) hold the inference's own answer, and read it after this returns."""
    spec = manifest.explain
    assert spec is not None
    output = explained_output(manifest, spec)
    assert output is not None
    values = attribution.values.astype(np.float32)
    attributions = Tensor(f"{output.name}{SUFFIX}", "FP32", values)
    explained = replace(
        response,
        outputs=[*response.outputs, attributions],
        parameters=dict(response.parameters),
    )
    parameters = explained.parameters
    parameters["explain_method"] = attribution.method
    parameters["explain_output"] = output.name
    column = explained_column(output, spec)
    if column is not None:  # the label of the column explained, else its index
        labels = output.labels or ()
        parameters["explain_target"] = labels[column] if column < len(labels) else str(column)
    parameters["explain_link"] = attribution.link
    parameters["explain_base_value"] = attribution.base_value
    parameters["explain_evaluations"] = attribution.evaluations
    if attribution.samples is not None:
        parameters["explain_samples"] = attribution.samples
    return explained
