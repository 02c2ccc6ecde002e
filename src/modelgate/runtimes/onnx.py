"""ONNX Runtime: one InferenceSession per model version.

Execution providers come from what the machine has: CUDA when ONNX Runtime reports it and
the manifest prefers a GPU, else CPU (logged when a GPU was preferred). ``runtime_options``
may set ``intra_op_threads``, ``inter_op_threads``, ``graph_optimization``
(disable|basic|extended|all), ``providers`` and ``allow_spinning`` (true|false: whether the
thread pools' idle threads spin-wait for work, ONNX Runtime's
``session.intra_op.allow_spinning`` and ``session.inter_op.allow_spinning``; unset: ONNX
Runtime's default, which spins). The text-embedding runtime builds its session here too.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import onnxruntime as ort

from modelgate.core.serving.artifacts import artifact_path
from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.ports import Arrays, VersionSource
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["OnnxPredictor", "create_session", "load", "providers_for", "session_options"]

_OPTIMIZATION = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
#: the most threads a session's pool may be given (a manifest asking for more is refused)
MAX_THREADS = 256
log = logging.getLogger("modelgate.runtimes")

#: the session config entries ``runtime_options.allow_spinning`` sets, both to one value
SPINNING_ENTRIES = ("session.intra_op.allow_spinning", "session.inter_op.allow_spinning")


def providers_for(manifest: ModelManifest) -> list[str]:
    """``runtime_options.providers`` as given; else CUDA (then CPU) when the manifest prefers
    a GPU and ONNX Runtime offers CUDA; else the CPU, with a warning if a GPU was preferred."""
    wanted = manifest.runtime_options.get("providers")
    if wanted:
        return [str(p) for p in wanted]
    if manifest.hardware.prefer != "gpu":
        return ["CPUExecutionProvider"]
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    # Said once per load: the CPU build of ONNX Runtime installed beside the GPU build hides
    # CUDA (docs/model-repository.md, "Running on a GPU"), which looks like a slow GPU.
    log.warning(
        "model '%s' prefers a GPU, but ONNX Runtime %s offers no CUDA execution provider "
        "(%s): it runs on the CPU",
        manifest.name,
        ort.__version__,
        ", ".join(available),
    )
    return ["CPUExecutionProvider"]


def session_options(manifest: ModelManifest) -> ort.SessionOptions:
    """The session options ``manifest.runtime_options`` ask for; a bad value is
    INVALID_ARGUMENT naming the field, before anything is loaded."""
    options = ort.SessionOptions()
    opts = manifest.runtime_options
    options.intra_op_num_threads = _threads(manifest, "intra_op_threads")
    options.inter_op_num_threads = _threads(manifest, "inter_op_threads")
    level = opts.get("graph_optimization", "all")
    if not isinstance(level, str) or level not in _OPTIMIZATION:
        raise _bad_option(manifest, "graph_optimization", f"one of {', '.join(_OPTIMIZATION)}")
    options.graph_optimization_level = _OPTIMIZATION[level]
    spinning = opts.get("allow_spinning")
    if spinning is not None:
        if not isinstance(spinning, bool):  # "false" or 0 would read as a choice it is not
            raise _bad_option(manifest, "allow_spinning", "true or false")
        for entry in SPINNING_ENTRIES:
            options.add_session_config_entry(entry, "1" if spinning else "0")
    return options


def _threads(manifest: ModelManifest, field: str) -> int:
    """A thread count from 0 (ONNX Runtime's choice) to ``MAX_THREADS``; 1 when unset."""
    value = manifest.runtime_options.get(field, 1)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_THREADS:
        raise _bad_option(manifest, field, f"a whole number from 0 to {MAX_THREADS}")
    return value


def _bad_option(manifest: ModelManifest, field: str, expected: str) -> ModelgateError:
    value = manifest.runtime_options.get(field)
    return ModelgateError(
        ErrorKind.INVALID_ARGUMENT,
        f"invalid manifest for model '{manifest.name}': runtime_options.{field} must be "
        f"{expected}, not {value!r}",
    )


def create_session(path: str, manifest: ModelManifest) -> ort.InferenceSession:
    """A session for the file at ``path`` (resolved and checked by
    :func:`~modelgate.core.serving.artifacts.artifact_path`); errors name ``manifest.artifact``."""
    options = session_options(manifest)
    try:
        return ort.InferenceSession(path, sess_options=options, providers=providers_for(manifest))
    except Exception as exc:  # onnxruntime raises its own exception types
        # its messages repeat the file's host path: show the manifest's name for it
        reason = str(exc).replace(path, manifest.artifact)
        raise ModelgateError(
            ErrorKind.INVALID_ARGUMENT,
            f"cannot load artifact {manifest.artifact!r} of model '{manifest.name}': {reason}",
        ) from exc


class OnnxPredictor:
    def __init__(self, session: ort.InferenceSession, manifest: ModelManifest):
        self._session = session
        session_inputs = {i.name for i in session.get_inputs()}
        session_outputs = [o.name for o in session.get_outputs()]
        missing = [s.name for s in manifest.inputs if s.name not in session_inputs]
        missing += [s.name for s in manifest.outputs if s.name not in session_outputs]
        if missing:
            raise ModelgateError(
                ErrorKind.INVALID_ARGUMENT,
                f"manifest of '{manifest.name}' names tensors the ONNX graph lacks: {missing}",
            )
        self._outputs = [s.name for s in manifest.outputs]

    @property
    def providers(self) -> list[str]:
        return list(self._session.get_providers())

    def predict(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        results = self._session.run(
            self._outputs, inputs if isinstance(inputs, dict) else dict(inputs)
        )
        return dict(zip(self._outputs, results, strict=True))

    def close(self) -> None:
        del self._session


def load(source: VersionSource) -> OnnxPredictor:
    path = artifact_path(source, source.manifest.artifact)
    return OnnxPredictor(create_session(path, source.manifest), source.manifest)
