"""The model registry: which versions are loaded, their state, and their life cycle.

Over 400 lines but one concept: loading, swapping, draining and evicting share one table of
models and one load in flight per model, and their orderings are checked best side by side.

- ``start`` loads and warms every ``preload`` model; the server is ready only after.
- A request for a model that is in the repository but not loaded loads it (single flight).
- ``load`` (re)loads all of a model's versions side by side with the serving ones and swaps
  them in only when every version loaded; a failure leaves the old versions serving and
  raises the error. Replaced and unloaded versions drain their in-flight requests before
  they are closed, so no request fails because of a reload.
- ``evict`` unloads models idle for longer than ``idle_unload_s`` and, while the estimated
  memory of loaded models is over ``memory_budget_bytes``, the least likely needed soon
  (with a ``need`` ranking: :mod:`modelgate.core.serving.preloading`), least recently
  used among equals. ``preload`` (``warm: always``) models are pinned, and the model whose
  load made room is never the one evicted for it.

How one version is loaded and warmed up is :mod:`modelgate.core.serving.version_loading`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.ports import (
    InferenceObserver,
    ModelRepository,
    ModelRuntime,
    PredictorLoader,
    VersionSource,
)
from modelgate.core.serving.statistics import VersionStats
from modelgate.core.serving.validation_plan import ValidationPlan
from modelgate.core.serving.version_loading import run_load_step, warm_runtime
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["LoadedVersion", "ModelRegistry", "RegistryPolicy", "VersionState"]

log = logging.getLogger("modelgate.registry")


class VersionState(enum.Enum):
    READY = "READY"
    LOADING = "LOADING"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class RegistryPolicy:
    inline_threshold_s: float = 0.001
    idle_unload_s: float | None = None
    memory_budget_bytes: int | None = None
    drain_timeout_s: float = 30.0


@dataclass(eq=False)
class LoadedVersion:
    name: str
    version: int
    manifest: ModelManifest
    runtime: ModelRuntime
    stats: VersionStats
    size_bytes: int
    batched: bool
    offload: bool
    #: the hardware class it runs on ("cpu", "gpu"), for usage and prices
    hardware: str = "cpu"
    #: the version's folder (its artifact, ``reference.json``); "" when it has none
    path: str = ""
    state: VersionState = VersionState.READY
    inflight: int = 0
    _drained: asyncio.Event | None = None
    #: the input checks, worked out once here rather than on every request
    plan: ValidationPlan = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.plan = ValidationPlan(self.manifest)

    def enter(self) -> None:
        self.inflight += 1

    def leave(self) -> None:
        self.inflight -= 1
        if self.inflight == 0 and self._drained is not None:
            self._drained.set()

    async def drain_and_close(self, drain_s: float) -> None:
        self.state = VersionState.UNLOADING
        if self.inflight:
            self._drained = asyncio.Event()
            try:
                await asyncio.wait_for(self._drained.wait(), drain_s)
            except TimeoutError:
                log.warning(
                    "unloading %s v%d with %d requests still running",
                    self.name,
                    self.version,
                    self.inflight,
                )
        self.state = VersionState.UNAVAILABLE
        await asyncio.to_thread(self.runtime.close)


@dataclass(eq=False)
class _Model:
    name: str
    versions: dict[int, LoadedVersion] = field(default_factory=dict)
    default: int | None = None
    pinned: bool = False
    unloaded: bool = False  # explicitly unloaded: stays so until loaded again
    reason: str = ""
    loading: asyncio.Future[None] | None = None
    last_used: float = 0.0


class ModelRegistry:
    def __init__(
        self,
        repository: ModelRepository,
        loaders: Mapping[str, PredictorLoader],
        *,
        observer: InferenceObserver | None = None,
        executor: Executor | None = None,
        policy: RegistryPolicy = RegistryPolicy(),
        clock: Any = time.monotonic,
        builder: Callable[[VersionSource], LoadedVersion] | None = None,
        load_hooks: Sequence[Callable[[LoadedVersion], None]] = (),
        need: Callable[[str], float] | None = None,
    ):
        self.repository = repository
        self._loaders = loaders
        #: how a version is made ready (in a worker thread); default: load its artifact with
        #: its runtime's loader and warm it up. A gateway builds handles to its nodes instead.
        self._builder = builder or self._build
        #: called with each built version in the loading thread, before it serves (reading
        #: its reference profile); an error fails the load like a build error
        self._load_hooks = tuple(load_hooks)
        #: how likely a model is needed soon (higher: keep it longer); None: recency only
        self.need = need
        self._observer = observer
        self._executor = executor
        self.policy = policy
        self._clock = clock
        self._models: dict[str, _Model] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._ready = False

    # -- life cycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Load and warm every ``preload`` model, then report ready."""
        names = await asyncio.to_thread(self.repository.names)
        preload: list[str] = []
        for name in names:
            try:
                sources = await asyncio.to_thread(self.repository.versions, name)
            except ModelgateError as exc:
                self._model(name).reason = exc.message
                log.error("model %s: %s", name, exc.message)
                continue
            if sources and sources[-1].manifest.preload:
                preload.append(name)
        for name in preload:
            self._model(name).pinned = True  # before loading, so the budget never evicts it
            try:
                await self.load(name)
            except ModelgateError as exc:
                log.error("preloading %s failed: %s", name, exc.message)
        self._ready = True

    async def close(self) -> None:
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for model in list(self._models.values()):
            await self._retire(list(model.versions.values()), drain_s=self.policy.drain_timeout_s)
            model.versions = {}

    @property
    def ready(self) -> bool:
        return self._ready

    def drain(self) -> None:
        """Report not ready from now on (the server is shutting down), so that balancers
        and gateways stop sending work while the requests in flight finish."""
        self._ready = False

    # -- lookups on the request path ---------------------------------------------------
    def get(self, name: str, version: str | None) -> LoadedVersion | None:
        """The serving version, or None when it must be loaded first (see :meth:`acquire`)."""
        model = self._models.get(name)
        if model is None or not model.versions:
            return None
        loaded = self._pick(model, version)
        model.last_used = self._clock()
        return loaded

    async def acquire(self, name: str, version: str | None) -> LoadedVersion:
        loaded = self.get(name, version)
        if loaded is not None:
            return loaded
        model = self._models.get(name)
        if model is not None and model.unloaded:
            raise ModelgateError(
                ErrorKind.UNAVAILABLE,
                f"model '{name}' is unloaded; load it through the repository API",
            )
        if model is None or not model.versions:
            if name not in await asyncio.to_thread(self.repository.names):
                raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown model '{name}'")
            await self._load_once(name)
        loaded = self.get(name, version)
        if loaded is None:
            raise ModelgateError(ErrorKind.UNAVAILABLE, f"model '{name}' is not loaded")
        return loaded

    def _pick(self, model: _Model, version: str | None) -> LoadedVersion:
        if not version:
            number = model.default if model.default in model.versions else max(model.versions)
        else:
            try:
                number = int(version)
            except ValueError:
                raise ModelgateError(
                    ErrorKind.NOT_FOUND, f"unknown version '{version}' of model '{model.name}'"
                ) from None
        loaded = model.versions.get(number)
        if loaded is None:
            raise ModelgateError(
                ErrorKind.NOT_FOUND, f"unknown version '{version}' of model '{model.name}'"
            )
        return loaded

    async def manifest(self, name: str) -> ModelManifest:
        """The serving manifest of a model, read from the repository when it is not loaded;
        NOT_FOUND for an unknown model. Authorization asks this before anything loads."""
        model = self._models.get(name)
        if model is not None and model.versions:
            return model.versions[max(model.versions)].manifest
        sources = await asyncio.to_thread(self.repository.versions, name)
        if not sources:
            raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown model '{name}'")
        return sources[-1].manifest

    def versions(self, name: str) -> list[LoadedVersion]:
        model = self._models.get(name)
        return sorted(model.versions.values(), key=lambda v: v.version) if model else []

    def index(self) -> list[dict[str, str]]:
        """Every model in the repository with its versions' state (Triton's index shape)."""
        rows: list[dict[str, str]] = []
        for name in self.repository.names():
            model = self._models.get(name)
            if model is None or not model.versions:
                state = "LOADING" if model and model.loading else "UNAVAILABLE"
                row = {"name": name, "state": state}
                if model and model.reason:
                    row["reason"] = model.reason
                rows.append(row)
                continue
            for loaded in self.versions(name):
                rows.append(
                    {"name": name, "version": str(loaded.version), "state": loaded.state.value}
                )
        return rows

    # -- loading and unloading ---------------------------------------------------------
    async def _load_once(self, name: str) -> None:
        model = self._model(name)
        if model.loading is not None:
            await asyncio.shield(model.loading)
            return
        await self.load(name)

    async def load(self, name: str, override: Mapping[str, Any] | None = None) -> None:
        if name not in self._models and name not in await asyncio.to_thread(self.repository.names):
            raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown model '{name}'")
        model = self._model(name)
        while model.loading is not None:  # one load at a time per model
            with contextlib.suppress(ModelgateError):
                await asyncio.shield(model.loading)
        model.loading = asyncio.get_running_loop().create_future()
        try:
            sources = await asyncio.to_thread(self.repository.versions, name, override)
            if not sources:
                raise ModelgateError(ErrorKind.INVALID_ARGUMENT, f"model '{name}' has no versions")
            fresh: list[LoadedVersion] = []
            try:
                for source in sources:
                    fresh.append(await run_load_step(source, self._builder, source))
                for hook in self._load_hooks:
                    for source, loaded in zip(sources, fresh, strict=True):
                        await run_load_step(source, hook, loaded)
            except BaseException:
                for loaded in fresh:
                    await asyncio.to_thread(loaded.runtime.close)
                raise
            old = list(model.versions.values())
            model.versions = {v.version: v for v in fresh}
            model.default = sources[-1].manifest.default_version
            model.unloaded = False
            model.reason = ""
            model.last_used = self._clock()
            # The gauge follows what answers: a version served before and after the swap
            # stays 1 (its old copy retires silently); only versions that come or go change.
            for loaded in fresh:
                if not any(v.version == loaded.version for v in old):
                    self._report(loaded, True)
            gone = [v for v in old if v.version not in model.versions]
            for loaded in gone:
                self._report(loaded, False)
            retiring = asyncio.get_running_loop().create_task(
                self._retire(old, self.policy.drain_timeout_s, report=False)
            )
            self._background.add(retiring)  # keep a reference until it is done
            retiring.add_done_callback(self._background.discard)
            model.loading.set_result(None)
        except ModelgateError as exc:
            log.warning("loading model %s failed: %s", name, exc.message)
            model.reason = exc.message
            model.loading.set_exception(exc)
            raise
        except Exception as exc:
            error = ModelgateError(ErrorKind.INVALID_ARGUMENT, f"failed to load '{name}': {exc}")
            log.warning("loading model %s failed: %s", name, error.message)
            model.reason = error.message
            model.loading.set_exception(error)
            raise error from exc
        except BaseException:
            model.loading.cancel()
            raise
        finally:
            future, model.loading = model.loading, None
            if future.done() and not future.cancelled():
                future.exception()  # mark retrieved; waiters got it through shield
        await self.evict(keep=name)

    async def unload(self, name: str) -> None:
        model = self._models.get(name)
        if (model is None or not model.versions) and name not in await asyncio.to_thread(
            self.repository.names
        ):
            raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown model '{name}'")
        model = self._model(name)
        old = list(model.versions.values())
        model.versions = {}
        model.unloaded = True
        model.pinned = False
        model.reason = "unloaded"
        await self._retire(old, self.policy.drain_timeout_s)

    async def evict(self, keep: str | None = None) -> None:
        """Unload idle models, then the least likely needed (least recently used among
        equals) while over the memory budget; never ``keep``, the model just loaded."""
        now = self._clock()
        candidates = [
            m for m in self._models.values() if m.versions and not m.pinned and m.name != keep
        ]
        idle = self.policy.idle_unload_s
        if idle is not None:
            for model in candidates:
                if now - model.last_used >= idle and not any(
                    v.inflight for v in model.versions.values()
                ):
                    await self._evict(model, "unloaded after being idle")
        budget = self.policy.memory_budget_bytes
        if budget is not None:
            need = self.need
            for model in sorted(
                candidates,
                key=lambda m: (need(m.name) if need else 0.0, m.last_used),
            ):
                if self.memory_bytes() <= budget:
                    break
                if model.versions:
                    await self._evict(model, "unloaded to stay within the memory budget")

    async def _evict(self, model: _Model, reason: str) -> None:
        old = list(model.versions.values())
        model.versions = {}
        model.reason = reason
        log.info("model %s %s", model.name, reason)
        await self._retire(old, self.policy.drain_timeout_s)

    def unloaded(self, name: str) -> bool:
        """Whether the model was unloaded through the repository API (it stays so)."""
        model = self._models.get(name)
        return model is not None and model.unloaded

    def memory_bytes(self) -> int:
        return sum(v.size_bytes for m in self._models.values() for v in m.versions.values())

    async def _retire(
        self, versions: list[LoadedVersion], drain_s: float, *, report: bool = True
    ) -> None:
        if report:
            for loaded in versions:
                self._report(loaded, False)
        await asyncio.gather(*(v.drain_and_close(drain_s) for v in versions))

    def _report(self, loaded: LoadedVersion, is_loaded: bool) -> None:
        if self._observer is not None:
            self._observer.loaded(loaded.name, str(loaded.version), is_loaded)

    def _model(self, name: str) -> _Model:
        model = self._models.get(name)
        if model is None:
            model = self._models[name] = _Model(name)
        return model

    def _build(self, source: VersionSource) -> LoadedVersion:
        """Load one version in a worker thread: create, warm up, choose inline or thread."""
        manifest = source.manifest
        warm = warm_runtime(
            source,
            self._loaders,
            observer=self._observer,
            executor=self._executor,
            inline_threshold_s=self.policy.inline_threshold_s,
        )
        return LoadedVersion(
            name=manifest.name,
            version=source.version,
            manifest=manifest,
            runtime=warm.runtime,
            stats=warm.stats,
            size_bytes=warm.size_bytes,
            batched=manifest.batching is not None,
            offload=warm.offload,
            hardware=warm.hardware,
            path=source.path,
        )
