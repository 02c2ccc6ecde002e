"""Custom Python models: import the class a manifest names and run it (see modelgate.model)."""

from __future__ import annotations

import importlib.util
import sys
from typing import Any

import numpy as np

from modelgate.core.serving.artifacts import artifact_path
from modelgate.core.serving.ports import Arrays, VersionSource
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.model import PythonModel

__all__ = ["PythonPredictor", "load"]


class PythonPredictor:
    def __init__(self, model: PythonModel):
        self._model = model

    def predict(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        outputs = self._model.predict(dict(inputs))
        return {name: np.asarray(value) for name, value in outputs.items()}

    def close(self) -> None:
        self._model.close()


def load(source: VersionSource) -> PythonPredictor:
    manifest = source.manifest
    artifact = manifest.artifact if manifest.artifact.endswith(".py") else "model.py"
    class_name = str(manifest.runtime_options.get("class", ""))
    if not class_name:
        raise ModelgateError(
            ErrorKind.INVALID_ARGUMENT,
            f"python model '{manifest.name}' needs runtime_options.class",
        )
    path = artifact_path(source, artifact)
    module_name = f"modelgate_user_{manifest.name.replace('-', '_')}_v{source.version}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ModelgateError(ErrorKind.INVALID_ARGUMENT, f"cannot import {artifact!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, PythonModel)):
        raise ModelgateError(
            ErrorKind.INVALID_ARGUMENT,
            f"{artifact!r} of model '{manifest.name}' has no PythonModel subclass named "
            f"{class_name}",
        )
    model = cls(source.path, dict(manifest.runtime_options))
    model.load()
    return PythonPredictor(model)
