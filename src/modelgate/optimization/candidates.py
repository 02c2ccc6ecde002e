"""Ways to make an optimized copy of an ONNX model file.

Each method writes ``destination`` from ``source`` (reading what else it needs from a
:class:`~modelgate.optimization.material.Material`) and returns a one-line note on what it
did, or raises :class:`NothingToDo` when the model has nothing the method changes (a tree
ensemble has no weight matrices to quantize). The server's ONNX Runtime loads every result.
Pruning and distillation live in :mod:`modelgate.optimization.compression`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelgate.optimization.compression import distill, magnitude_prune
from modelgate.optimization.material import CalibrationFeeds, Material, NothingToDo

__all__ = ["METHODS", "CalibrationFeeds", "Material", "Method", "NothingToDo"]

#: operators that dynamic and static quantization leave in the graph when they changed it
_QUANTIZED_OPS = {"MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "QuantizeLinear"}


@dataclass(frozen=True)
class Method:
    name: str
    description: str
    write: Callable[[Path, Path, Material], str]
    #: the result is another kind of model (its card's ``algorithm`` is the note's)
    replaces_algorithm: bool = False


def _graph_extended(source: Path, destination: Path, _: Material) -> str:
    # EXTENDED, not ALL: ALL adds layout transforms (NCHWc) tied to the CPU that ran it, which
    # ONNX Runtime's docs say not to save. EXTENDED's fused nodes are ONNX Runtime contrib
    # ops, which every ONNX Runtime loads.
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(destination)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), sess_options=options, providers=["CPUExecutionProvider"])
    return "ONNX Runtime offline graph optimization, level extended"


def _dynamic_int8(source: Path, destination: Path, _: Material) -> str:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # per-channel 7-bit weights: per-tensor scales lose most of a transformer's accuracy, and
    # reduce_range avoids int16 saturation on CPUs without VNNI (demo/minilm.py measures both)
    with _quiet():
        quantize_dynamic(
            str(source),
            str(destination),
            weight_type=QuantType.QInt8,
            per_channel=True,
            reduce_range=True,
        )
    _require_quantized(destination)
    return "int8 dynamic: QInt8 per-channel weights (7 bit), activations per call"


def _static_int8(source: Path, destination: Path, material: Material) -> str:
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # untyped base
        def __init__(self) -> None:
            self._feeds: Iterator[dict[str, Any]] = iter(feeds)

        def get_next(self) -> dict[str, Any] | None:
            return next(self._feeds, None)

    import onnx

    feeds: CalibrationFeeds = material.calibration
    if not feeds:
        raise NothingToDo("no calibration inputs")
    graph = onnx.load(str(source), load_external_data=False).graph
    wanted = {node.name for node in graph.input}
    feeds = [{k: v for k, v in feed.items() if k in wanted} for feed in feeds]
    with _quiet():
        quantize_static(
            str(source),
            str(destination),
            Reader(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    _require_quantized(destination)
    return f"int8 static (QDQ), MinMax calibration on {len(feeds)} reference inputs"


@contextmanager
def _quiet() -> Iterator[None]:
    """Mute the quantizer's advice, logged on the root logger at WARNING for every model."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def _require_quantized(path: Path) -> None:
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    if not any(node.op_type in _QUANTIZED_OPS for node in graph.node):
        raise NothingToDo("no operator with weights to quantize (MatMul, Conv, Gemm)")


METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("graph-extended", "ONNX Runtime graph optimization", _graph_extended),
        Method("dynamic-int8", "dynamic int8 quantization", _dynamic_int8),
        Method("static-int8", "static int8 quantization", _static_int8),
        Method("magnitude-prune", "magnitude pruning of weight matrices", magnitude_prune),
        Method("distill", "distillation into a decision tree", distill, replaces_algorithm=True),
    )
}
