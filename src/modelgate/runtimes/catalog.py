"""Which runtime name loads with which module; imports stay lazy so that a server with no
skops model never imports skops."""

from __future__ import annotations

import importlib
from collections.abc import Mapping

from modelgate.core.serving.ports import Predictor, PredictorLoader, VersionSource

__all__ = ["loaders"]

_MODULES = {
    "onnxruntime": "modelgate.runtimes.onnx",
    "text-embedding": "modelgate.runtimes.text_embedding",
    "skops": "modelgate.runtimes.skops",
    "python": "modelgate.runtimes.python",
    "stage": "modelgate.runtimes.stage",
}


def _lazy(module: str) -> PredictorLoader:
    def load(source: VersionSource) -> Predictor:
        loader: PredictorLoader = importlib.import_module(module).load
        return loader(source)

    return load


def loaders() -> Mapping[str, PredictorLoader]:
    return {name: _lazy(module) for name, module in _MODULES.items()}
