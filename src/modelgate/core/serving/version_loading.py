"""Version loading: one version's artifact made a warm runtime, and load failures named.

A version is loaded in a worker thread with its runtime's loader, warmed up at its largest
batch (which decides whether it runs inline on the event loop or in a thread, unless its
manifest says), and wrapped in its batcher. A failure names the model and version, never a
folder of the host. :class:`~modelgate.core.serving.registry.ModelRegistry` decides when.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any, TypeVar

from modelgate.core.serving.batching import BatchingRuntime
from modelgate.core.serving.execution import PredictorRuntime, measure, warm_up_inputs
from modelgate.core.serving.ports import (
    InferenceObserver,
    ModelRuntime,
    Predictor,
    PredictorLoader,
    VersionSource,
)
from modelgate.core.serving.statistics import VersionStats
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["WarmRuntime", "run_load_step", "warm_runtime"]

# The registry's logger, as before loading had a module of its own: operators' log filters
# keep matching the "loaded ..." lines.
log = logging.getLogger("modelgate.registry")
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class WarmRuntime:
    """A version's runtime, ready to serve, and what the registry records of it."""

    runtime: ModelRuntime
    stats: VersionStats
    #: runs in a worker thread (True) or inline on the event loop
    offload: bool
    #: the hardware class it runs on ("cpu", "gpu"), for usage and prices
    hardware: str
    #: bytes on disk of its folder: the memory estimate used by the budget
    size_bytes: int


def warm_runtime(
    source: VersionSource,
    loaders: Mapping[str, PredictorLoader],
    *,
    observer: InferenceObserver | None,
    executor: Executor | None,
    inline_threshold_s: float,
) -> WarmRuntime:
    """Load one version with its runtime's loader (in the calling worker thread), warm it up
    at its largest batch, and choose inline or thread from how long that took."""
    manifest = source.manifest
    loader = loaders.get(manifest.runtime)
    if loader is None:
        raise ModelgateError(ErrorKind.UNSUPPORTED, f"no runtime '{manifest.runtime}'")
    predictor = loader(source)
    rows = manifest.batching.max_batch_size if manifest.batching else 1
    try:
        took = _warm_up(predictor, source, rows)
    except BaseException:
        predictor.close()
        raise
    # not warmed up: not measured either, so a thread (it may be slow) unless the manifest says
    offload = {"inline": False, "thread": True}.get(
        manifest.execution, took is None or took > inline_threshold_s
    )
    warm_up = "no warm-up" if took is None else f"warm-up {took * 1e3:.3f} ms at {rows} rows"
    log.info(
        "loaded %s v%d (%s, %s)",
        manifest.name,
        source.version,
        "thread" if offload else "inline",
        warm_up,
    )
    sink = observer.version(manifest.name, str(source.version)) if observer else None
    stats = VersionStats(manifest.name, str(source.version), sink)
    runtime: ModelRuntime = PredictorRuntime(predictor, offload=offload, executor=executor)
    if manifest.batching is not None:
        runtime = BatchingRuntime(
            runtime,
            manifest.batching,
            observer=stats,
            concurrency=manifest.instances,
            units_output=manifest.token_output,
        )
    return WarmRuntime(
        runtime=runtime,
        stats=stats,
        offload=offload,
        hardware=_hardware(predictor),
        size_bytes=_folder_size(source.path),
    )


def _warm_up(predictor: Predictor, source: VersionSource, rows: int) -> float | None:
    """The warm-up's fastest call in seconds; None: skipped (a python model's BYTES input
    declares no example). A model that fails on its warm-up inputs fails its load as
    UNAVAILABLE, logged with the model's own traceback."""
    manifest = source.manifest
    inputs = warm_up_inputs(manifest, rows)
    if inputs is None:
        log.info(
            "%s v%d: not warmed up: its BYTES inputs declare no example (model.yaml "
            "inputs[].example)",
            manifest.name,
            source.version,
        )
        return None
    try:
        return measure(predictor, inputs)
    except ModelgateError as exc:
        if exc.kind is not ErrorKind.INTERNAL:
            raise
        log.warning(
            "%s v%d failed its warm-up", manifest.name, source.version, exc_info=exc.__cause__
        )
        examples = all(spec.example is not None for spec in manifest.inputs)
        hint = "" if examples else "; declare a valid example for each input (inputs[].example)"
        raise ModelgateError(
            ErrorKind.UNAVAILABLE, f"failed its warm-up: {exc.message}{hint}"
        ) from exc


async def run_load_step(source: VersionSource, work: Callable[[Any], _T], arg: Any) -> _T:
    """``work(arg)`` in a worker thread; a failure names the model and version and no path
    on the host (runtimes' and libraries' messages may hold them)."""
    where = f"model '{source.manifest.name}' version {source.version}"
    try:
        return await asyncio.to_thread(work, arg)
    except ModelgateError as exc:
        message = _without_paths(exc.message, source)
        if f"version {source.version}" not in message:
            message = f"{where}: {message}"
        if message == exc.message:
            raise
        raise ModelgateError(
            exc.kind, message, retry_after=exc.retry_after, details=exc.details
        ) from exc
    except Exception as exc:
        reason = _without_paths(str(exc), source)
        raise ModelgateError(
            ErrorKind.INVALID_ARGUMENT, f"failed to load {where}: {type(exc).__name__}: {reason}"
        ) from exc


def _without_paths(text: str, source: VersionSource) -> str:
    """``text`` with the version's and model's folders (as given and as resolved) replaced
    by the model's name and version."""
    if not source.path:
        return text
    version = os.path.normpath(source.path)
    model = os.path.dirname(version)
    name = source.manifest.name
    for folder, shown in (
        (os.path.realpath(version), f"{name}/{source.version}"),
        (version, f"{name}/{source.version}"),
        (os.path.realpath(model), name),
        (model, name),
    ):
        text = text.replace(folder, shown)
    return text


def _hardware(predictor: object) -> str:
    """ "gpu" when the predictor says it runs on a GPU execution provider, else "cpu"."""
    providers = getattr(predictor, "providers", None)
    if isinstance(providers, list) and any(
        p in ("CUDAExecutionProvider", "TensorrtExecutionProvider") for p in providers
    ):
        return "gpu"
    return "cpu"


def _folder_size(path: str) -> int:
    """Bytes on disk of a version folder: the memory estimate used by the budget."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for file in files:
            try:
                total += os.path.getsize(os.path.join(root, file))
            except OSError:
                continue
    return total
