"""Running a synchronous :class:`Predictor` from the event loop: inline or in a thread.

Handing a 4 µs ONNX call to a thread pool halves throughput (measured on this project's
machine), so cheap models run inline; anything that could hold the loop for long runs in a
worker thread. The choice is made per model version at warm-up (:func:`measure`).
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import Executor
from typing import Any

import numpy as np

from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.ports import Arrays, Predictor, Timing
from modelgate.core.serving.tensors import numpy_dtype
from modelgate.errors import ErrorKind, ModelgateError, deadline_exceeded

__all__ = ["PredictorRuntime", "measure", "run_predict", "warm_up_inputs"]


def run_predict(predictor: Predictor, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
    """Call ``predict``, turning a runtime's own exception into an INTERNAL error."""
    try:
        return predictor.predict(inputs)
    except ModelgateError:
        raise
    except Exception as exc:  # a runtime library raises its own types; report, never crash
        raise ModelgateError(ErrorKind.INTERNAL, f"model execution failed: {exc}") from exc


class PredictorRuntime:
    """Adapts a synchronous predictor to :class:`ModelRuntime`."""

    def __init__(self, predictor: Predictor, *, offload: bool, executor: Executor | None = None):
        self.predictor = predictor
        self.offload = offload
        self._executor = executor

    @property
    def queue_depth(self) -> int:
        return 0

    def predict(self, inputs: Arrays) -> dict[str, np.ndarray[Any, Any]]:
        return run_predict(self.predictor, inputs)

    async def infer(
        self, inputs: Arrays, timing: Timing | None = None
    ) -> dict[str, np.ndarray[Any, Any]]:
        deadline = timing.deadline if timing is not None else None
        if deadline is not None and time.monotonic() >= deadline:
            raise deadline_exceeded()
        start = time.perf_counter_ns()
        if self.offload:
            loop = asyncio.get_running_loop()
            outputs = await loop.run_in_executor(
                self._executor, run_predict, self.predictor, inputs
            )
        else:
            outputs = run_predict(self.predictor, inputs)
        if timing is not None:
            timing.compute_ns = time.perf_counter_ns() - start
        return outputs

    def close(self) -> None:
        self.predictor.close()


#: what a BYTES input without an example gets at warm-up, for the built-in runtimes (a
#: tokenizer or a text pipeline takes any text); a python model's own code may parse its
#: input, so it gets no made-up value
_WARM_UP_TEXT = b"warm up"


def warm_up_inputs(manifest: ModelManifest, rows: int) -> dict[str, np.ndarray[Any, Any]] | None:
    """Inputs matching the signature, for warm-up: each input's declared ``example``, else
    zeros (or a short text); None when a python model's BYTES input declares no example:
    no value is known to be valid, so the version is not warmed up."""
    arrays: dict[str, np.ndarray[Any, Any]] = {}
    for spec in manifest.inputs:
        shape = [
            rows if i == 0 and d == -1 else (1 if d == -1 else d) for i, d in enumerate(spec.shape)
        ]
        example = spec.example
        if spec.datatype == "BYTES":
            if example is None and manifest.runtime == "python":
                return None
            text = _WARM_UP_TEXT if example is None else str(example).encode()
            arrays[spec.name] = np.full(shape, text, dtype=object)
        else:
            dtype = numpy_dtype(spec.datatype)
            arrays[spec.name] = np.full(shape, example or 0, dtype=dtype)
    return arrays


def measure(predictor: Predictor, inputs: Arrays, repeat: int = 3) -> float:
    """The fastest of ``repeat`` calls, in seconds (the first call also warms caches)."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run_predict(predictor, inputs)
        best = min(best, time.perf_counter() - start)
    return best
