"""scikit-learn models stored with skops: loaded without unpickling.

skops only builds types it trusts. Beyond its defaults, a manifest may list more in
``runtime_options.trusted_types``; anything else refuses to load. Which estimator method
fills which output is ``runtime_options.methods`` (default: first output ``predict``,
second ``predict_proba``). The model takes one 2-D input.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import skops.io as sio

from modelgate.core.serving.artifacts import artifact_path
from modelgate.core.serving.ports import Arrays, VersionSource
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["SkopsPredictor", "load"]

_DEFAULT_METHODS = ("predict", "predict_proba")


class SkopsPredictor:
    def __init__(self, estimator: Any, methods: dict[str, str], input_name: str):
        self._estimator = estimator
        self._methods = methods
        self._input = input_name

    def predict(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        x = inputs[self._input]
        return {
            name: np.asarray(getattr(self._estimator, method)(x))
            for name, method in self._methods.items()
        }

    def close(self) -> None:
        del self._estimator


def load(source: VersionSource) -> SkopsPredictor:
    manifest = source.manifest
    artifact = manifest.artifact if manifest.artifact.endswith(".skops") else "model.skops"
    path = artifact_path(source, artifact)
    trusted = [str(t) for t in manifest.runtime_options.get("trusted_types", [])]
    untrusted = [t for t in sio.get_untrusted_types(file=path) if t not in trusted]
    if untrusted:
        raise ModelgateError(
            ErrorKind.INVALID_ARGUMENT,
            f"{artifact!r} holds types that are not trusted: {untrusted}; list them in "
            "runtime_options.trusted_types only if you trust the file's author",
        )
    estimator = sio.load(path, trusted=trusted or None)
    methods = manifest.runtime_options.get("methods") or {
        spec.name: method for spec, method in zip(manifest.outputs, _DEFAULT_METHODS, strict=False)
    }
    for name, method in methods.items():
        if not callable(getattr(estimator, method, None)):
            raise ModelgateError(
                ErrorKind.INVALID_ARGUMENT, f"estimator has no method '{method}' for '{name}'"
            )
    return SkopsPredictor(estimator, dict(methods), manifest.inputs[0].name)
