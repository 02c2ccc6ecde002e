"""Fakes for testing code that uses modelgate's core, shipped with the package (as
``structlog.testing`` and HTTPX's ``MockTransport`` are) so that your tests can use the same
ones modelgate's own tests use.

- :class:`MemoryRepository`: a ``ModelRepository`` whose models are manifest dicts in memory,
  so a registry serves them without a model folder on disk.
- :class:`RecordingPredictor`: a ``Predictor`` that answers ``y = x * factor`` and records the
  batch size of every call, and can be made slow or failing.
- :data:`DEFAULT_MANIFEST`: the manifest every ``MemoryRepository`` version starts from, the
  signature ``RecordingPredictor`` serves.
- :class:`ManualClock`: a clock (seconds) that moves only when the test moves it, for the
  many parts that take ``clock=`` (rate limits, leases, queue-delay shedding, key caches).

A registry over both, in any test runner (this module imports neither pytest nor a server)::

    import asyncio
    import numpy as np
    from modelgate.core.serving.registry import ModelRegistry
    from modelgate.testing import MemoryRepository, RecordingPredictor

    async def main() -> None:
        predictor = RecordingPredictor(factor=3.0)
        registry = ModelRegistry(
            MemoryRepository({"m": {1: {}}}), {"python": lambda source: predictor}
        )
        loaded = await registry.acquire("m", None)
        out = await loaded.runtime.infer({"x": np.ones((4, 2), np.float32)})
        assert out["y"][0, 0] == 3.0
        assert predictor.calls[-1] == 4  # after the registry's warm-up calls
        await registry.close()

    asyncio.run(main())
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from modelgate.core.gateway.nodes import NodeInfo
from modelgate.core.serving.manifest import parse_manifest
from modelgate.core.serving.ports import Arrays, VersionSource
from modelgate.errors import ErrorKind, ModelgateError

__all__ = [
    "DEFAULT_MANIFEST",
    "ManualClock",
    "MemoryRepository",
    "RecordingPredictor",
    "StaticDirectory",
]


class ManualClock:
    """``clock()`` answers :attr:`now`, which only the test moves (``clock.now += 0.5``)."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingPredictor:
    """``y = x * factor``, a ``Predictor`` for the signature of :data:`DEFAULT_MANIFEST`.

    ``calls`` lists the batch size (rows of ``x``) of every ``predict``, a registry's warm-up
    calls first, so a test sees how requests were merged or split. ``delay`` seconds of sleep
    make each call slow (in the calling thread, as a real model's compute would be); a call
    whose ``x`` holds the value ``fail_on`` raises ``RuntimeError("boom")``. ``closed`` turns
    true on ``close``. Safe to call from several threads at once, as the port requires.
    """

    def __init__(
        self, factor: float = 2.0, delay: float = 0.0, fail_on: float | None = None
    ) -> None:
        self.factor = factor
        self.delay = delay
        self.fail_on = fail_on
        self.calls: list[int] = []
        self.closed = False
        self._lock = threading.Lock()

    def predict(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        x = inputs["x"]
        with self._lock:
            self.calls.append(int(x.shape[0]))
        if self.delay:
            time.sleep(self.delay)
        if self.fail_on is not None and bool((x == self.fail_on).any()):
            raise RuntimeError("boom")
        return {"y": x * self.factor}

    def close(self) -> None:
        self.closed = True


#: A Python-runtime model taking ``x`` and answering ``y``, both FP32 of shape ``[-1, 2]``.
DEFAULT_MANIFEST: dict[str, Any] = {
    "runtime": "python",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
}


class MemoryRepository:
    """A ``ModelRepository`` of models defined in memory: ``{name: {version: manifest}}``.

    Each version's manifest is :data:`DEFAULT_MANIFEST` updated with the version's dict and
    then with a load's ``override``, validated as a model folder's ``model.yaml`` would be (a
    bad one raises INVALID_ARGUMENT); an unknown name raises NOT_FOUND. Versions have no
    folder: their ``path`` names one that does not exist, so pair the repository with
    loaders that read nothing from disk (a ``RecordingPredictor``, or your own model built
    in memory). ``models`` may be changed between calls: each call reads it afresh, as the
    port says a repository reads its manifests.
    """

    def __init__(self, models: dict[str, dict[int, dict[str, Any]]]) -> None:
        self.models = models

    def names(self) -> list[str]:
        return sorted(self.models)

    def versions(self, name: str, override: Mapping[str, Any] | None = None) -> list[VersionSource]:
        if name not in self.models:
            raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown model '{name}'")
        out: list[VersionSource] = []
        for version, data in sorted(self.models[name].items()):
            merged = {**DEFAULT_MANIFEST, **data, **(override or {})}
            out.append(
                VersionSource(
                    version, f"/nonexistent/{name}/{version}", parse_manifest(name, merged)
                )
            )
        return out


class StaticDirectory:
    """A gateway's node directory that always finds the same nodes (``found``; a test may
    replace the list to make nodes come and go)."""

    def __init__(self, nodes: list[NodeInfo]):
        self.found = nodes

    async def nodes(self) -> list[NodeInfo]:
        return self.found

    async def close(self) -> None:
        return None
