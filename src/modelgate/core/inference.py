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
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from modelgate import __version__
from modelgate.core.admission import Admission, rate_limit_details
from modelgate.core.anomaly import AnomalyDetector
from modelgate.core.authorization import can_see, require_model, require_scope
from modelgate.core.identity import Principal, Scope
from modelgate.core.manifest import ModelManifest, TensorSpec
from modelgate.core.ports import InferenceObserver, Timing, UsageSink
from modelgate.core.registry import LoadedVersion, ModelRegistry
from modelgate.core.tensors import Parameters, Tensor
from modelgate.core.tracing import Tracer, traced
from modelgate.errors import ErrorKind, ModelgateError, deadline_exceeded, invalid

__all__ = [
    "ANONYMOUS",
    "EXTENSIONS",
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


#: the tenant usage is recorded under when access control is off
ANONYMOUS = "anonymous"
#: the longest key id usage records hold (the column is 128 characters)
_KEY_ID_MAX = 120


@dataclass(slots=True)
class RequestedOutput:
    name: str
    parameters: Parameters = field(default_factory=dict)


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
    ):
        self.registry = registry
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
            "inputs": [_tensor_metadata(spec) for spec in manifest.inputs],
            "outputs": [_tensor_metadata(spec) for spec in manifest.outputs],
            "parameters": _card_parameters(manifest),
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
            "input": [_config_tensor(s, batching is not None) for s in manifest.inputs],
            "output": [_config_tensor(s, batching is not None) for s in manifest.outputs],
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
        self, name: str, config: dict[str, Any] | None = None, principal: Principal | None = None
    ) -> None:
        await self.authorize(principal, name, None, Scope.MODELS_WRITE)
        await self.registry.load(name, config)

    async def unload(self, name: str, principal: Principal | None = None) -> None:
        await self.authorize(principal, name, None, Scope.MODELS_WRITE)
        await self.registry.unload(name)

    # -- inference -----------------------------------------------------------------------
    async def infer(
        self, request: InferenceRequest, principal: Principal | None = None
    ) -> InferenceResponse:
        loaded = self.registry.get(request.model, request.version)
        if loaded is None:
            # Authorize before a first-use load, so nobody loads a model they may not see.
            await self.authorize(principal, request.model, request.version, Scope.INFER)
            loaded = await self.registry.acquire(request.model, request.version)
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
        try:
            if deadline is not None and time.monotonic() >= deadline:
                raise deadline_exceeded()
            inputs, rows = _validate(loaded.manifest, request.inputs)
            requested = _select_outputs(loaded.manifest, request.outputs)
            if self.anomalies is not None and loaded.manifest.anomaly is not None:
                # before admission and the runtime: a rejected request costs neither
                anomaly = self.anomalies.screen(loaded, inputs)
            if admission is not None:
                if self.tracer is None:
                    limit = await admission.admit(principal, loaded.manifest, rows)
                else:
                    admit = admission.admit(principal, loaded.manifest, rows)
                    limit = await traced(self.tracer, "admission", admit)
                admitted = True
            if self.tracer is None:
                arrays = await loaded.runtime.infer(inputs, timing)
            else:
                arrays = await _traced_runtime(self.tracer, loaded, inputs, timing)
            status = "ok"
        except ModelgateError as exc:
            status = exc.kind.value
            loaded.stats.failed(time.perf_counter_ns() - start, status)
            raise
        except asyncio.CancelledError:
            status = "cancelled"
            raise
        finally:
            loaded.leave()
            if admitted:
                assert admission is not None
                admission.release(principal)
            if status == "ok" and loaded.manifest.embedding is not None:
                tokens = _tokens(loaded.manifest, arrays)
            elapsed_ns = time.perf_counter_ns() - start
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
                    cache_hit=False,
                    rows=used_rows,
                    tokens=tokens,
                    latency_ms=elapsed_ns / 1e6,
                    compute_ms=timing.compute_ns / 1e6,
                )
            if self.observer is not None:
                self.observer.served(
                    request.model, version, tenant, status, elapsed_ns / 1e9, used_rows, tokens
                )
        if tokens and admission is not None and admission.quotas is not None:
            assert principal is not None
            admission.quotas.add_tokens(principal, tokens)
        outputs = _outputs(loaded.manifest, arrays, requested)
        loaded.stats.succeeded(
            rows, time.perf_counter_ns() - start, timing.queue_ns, timing.compute_ns
        )
        if not loaded.batched:
            loaded.stats.batch(rows, timing.compute_ns)
        response = InferenceResponse(
            model_name=request.model,
            model_version=str(loaded.version),
            outputs=outputs,
            requested=requested,
            id=request.id,
            rate_limit=rate_limit_details(limit) if limit is not None else None,
        )
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
    span.set("modelgate.hardware", loaded.hardware)
    span.end(ran + timing.compute_ns)
    return arrays


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


def _validate(
    manifest: ModelManifest, tensors: list[Tensor]
) -> tuple[dict[str, np.ndarray[Any, Any]], int]:
    """Check inputs against the signature; return them by name with the batch size."""
    inputs: dict[str, np.ndarray[Any, Any]] = {}
    rows = -1
    for tensor in tensors:
        spec = manifest.input(tensor.name)
        if spec is None:
            expected = ", ".join(s.name for s in manifest.inputs)
            raise invalid(
                f"unexpected input '{tensor.name}' for model '{manifest.name}' "
                f"(it takes: {expected})"
            )
        if tensor.name in inputs:
            raise invalid(f"input '{tensor.name}' is given twice")
        if tensor.datatype != spec.datatype:
            raise invalid(
                f"input '{tensor.name}' has datatype {tensor.datatype}, "
                f"model '{manifest.name}' expects {spec.datatype}"
            )
        shape = tensor.data.shape
        if len(shape) != len(spec.shape) or any(
            want != -1 and got != want for got, want in zip(shape, spec.shape, strict=True)
        ):
            raise invalid(
                f"input '{tensor.name}' has shape {list(shape)}, model "
                f"'{manifest.name}' expects {list(spec.shape)}"
            )
        if shape:
            if rows not in (-1, shape[0]):
                raise invalid("inputs disagree on the batch size (first dimension)")
            rows = shape[0]
        if (
            not spec.allow_nonfinite
            and tensor.data.dtype.kind == "f"
            and not bool(np.isfinite(tensor.data).all())
        ):
            raise invalid(
                f"input '{tensor.name}' holds NaN or Infinity, which model "
                f"'{manifest.name}' does not accept"
            )
        inputs[tensor.name] = tensor.data
    if len(inputs) != len(manifest.inputs):
        missing = [s.name for s in manifest.inputs if s.name not in inputs]
        raise invalid(f"missing input(s) {', '.join(missing)} for model '{manifest.name}'")
    if rows == 0:
        raise invalid("the batch is empty (first dimension is 0)")
    return inputs, max(rows, 1)


def _select_outputs(
    manifest: ModelManifest, requested: list[RequestedOutput] | None
) -> list[RequestedOutput] | None:
    if not requested:
        return None
    seen: set[str] = set()
    for output in requested:
        spec = manifest.output(output.name)
        if spec is None:
            raise invalid(f"unexpected output '{output.name}' for model '{manifest.name}'")
        if output.name in seen:
            raise invalid(f"output '{output.name}' is requested twice")
        seen.add(output.name)
        k = output.parameters.get("classification")
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 1):
            raise invalid(f"classification count for '{output.name}' must be a positive integer")
    return requested


def _outputs(
    manifest: ModelManifest,
    arrays: dict[str, np.ndarray[Any, Any]],
    requested: list[RequestedOutput] | None,
) -> list[Tensor]:
    if requested is None:
        return [Tensor(spec.name, spec.datatype, arrays[spec.name]) for spec in manifest.outputs]
    out: list[Tensor] = []
    for item in requested:
        spec = manifest.output(item.name)
        assert spec is not None
        data = arrays[spec.name]
        k = item.parameters.get("classification")
        if k is not None:
            out.append(Tensor(spec.name, "BYTES", _classify(data, int(k), spec.labels)))
        else:
            out.append(Tensor(spec.name, spec.datatype, data))
    return out


def _classify(
    scores: np.ndarray[Any, Any], k: int, labels: tuple[str, ...] | None
) -> np.ndarray[Any, Any]:
    """Triton's classification extension: top-k "score:index[:label]" strings per row."""
    batch = scores.reshape(scores.shape[0], -1) if scores.ndim > 1 else scores.reshape(1, -1)
    k = min(k, batch.shape[1])
    top = np.argsort(-batch, axis=1, kind="stable")[:, :k]
    out = np.empty(top.shape, dtype=object)
    for r, row in enumerate(top):
        for c, index in enumerate(row):
            text = f"{float(batch[r, index]):f}:{int(index)}"
            if labels and int(index) < len(labels):
                text += f":{labels[int(index)]}"
            out[r, c] = text.encode()
    return out if scores.ndim > 1 else out.reshape(-1)


def _tensor_metadata(spec: TensorSpec) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": spec.name, "datatype": spec.datatype, "shape": list(spec.shape)}
    params: dict[str, Any] = {}
    if spec.feature_names:
        params["feature_names"] = ",".join(spec.feature_names)
    if spec.labels:
        params["labels"] = ",".join(spec.labels)
    if params:
        meta["parameters"] = params
    return meta


def _config_tensor(spec: TensorSpec, batched: bool) -> dict[str, Any]:
    dims = list(spec.shape[1:] if batched else spec.shape)
    return {
        "name": spec.name,
        "data_type": f"TYPE_{spec.datatype.replace('BYTES', 'STRING')}",
        "dims": dims,
    }


def _card_parameters(manifest: ModelManifest) -> dict[str, Any]:
    """Card and labels as OIP parameters (values must be string, number or bool)."""
    params: dict[str, Any] = {}
    for key, value in {**manifest.card, **manifest.labels}.items():
        params[key] = value if isinstance(value, str | int | float | bool) else str(value)
    params["runtime"] = manifest.runtime
    return params
