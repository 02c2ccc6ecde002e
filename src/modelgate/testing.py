"""Fakes for testing code that uses the core: an in-memory repository and predictors that record
their calls. Shipped in the package so that users' tests can use them too; imports no pytest."""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from modelgate.core.serving.manifest import parse_manifest
from modelgate.core.serving.ports import Arrays, VersionSource
from modelgate.errors import ErrorKind, ModelgateError


class RecordingPredictor:
    """y = x * factor; records the batch sizes it was called with."""

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


MANIFEST: dict[str, Any] = {
    "runtime": "python",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
}


class MemoryRepository:
    """Models defined in memory: name -> {version: manifest dict}."""

    def __init__(self, models: dict[str, dict[int, dict[str, Any]]]) -> None:
        self.models = models

    def names(self) -> list[str]:
        return sorted(self.models)

    def versions(self, name: str, override: Mapping[str, Any] | None = None) -> list[VersionSource]:
        if name not in self.models:
            raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown model '{name}'")
        out: list[VersionSource] = []
        for version, data in sorted(self.models[name].items()):
            merged = {**MANIFEST, **data, **(override or {})}
            out.append(
                VersionSource(
                    version, f"/nonexistent/{name}/{version}", parse_manifest(name, merged)
                )
            )
        return out
