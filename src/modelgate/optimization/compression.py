"""Candidates that change what the model computes, not only how: magnitude pruning of its
weights, and distillation of a tabular classifier into a smaller student.

Both write an ONNX file the server's ONNX Runtime loads with the original's manifest (same
input and output names, types and shapes), or raise
:class:`~modelgate.optimization.candidates.NothingToDo` when the model has nothing the
method applies to. Their accuracy against the original is measured like every candidate's
(:mod:`modelgate.optimization.measurement`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from modelgate.optimization.material import Material, NothingToDo

__all__ = ["STUDENT_MAX_DEPTH", "distill", "magnitude_prune"]

#: operators whose weight inputs are matrices magnitude pruning zeroes
_WEIGHT_OPS = {"MatMul", "Gemm", "Conv", "ConvTranspose"}
#: ONNX-ML linear models keep their weights in a ``coefficients`` attribute
_LINEAR_OPS = {"LinearClassifier", "LinearRegressor"}
#: the student of distillation: one decision tree this deep at most
STUDENT_MAX_DEPTH = 6
#: a leaf holds at least this share of the training rows' weight (no leaf per outlier)
_MIN_LEAF_SHARE = 0.002


def _zero_smallest(values: np.ndarray[Any, Any], fraction: float) -> tuple[Any, int]:
    """``values`` with its ``fraction`` smallest magnitudes set to zero (ties at the cut
    are all zeroed), and how many entries are zero now."""
    flat = values.ravel()
    count = int(fraction * flat.size)
    if count == 0:
        return values, int(np.count_nonzero(flat == 0))
    cut = np.partition(np.abs(flat), count - 1)[count - 1]
    pruned = np.where(np.abs(values) <= cut, np.zeros_like(values), values)
    return pruned, int(np.count_nonzero(pruned == 0))


def magnitude_prune(source: Path, destination: Path, material: Material) -> str:
    """Zero the ``material.prune_fraction`` smallest-magnitude entries of each weight
    matrix: the float initializers (two or more dimensions) that MatMul, Gemm and Conv
    read, and the coefficients of ONNX-ML linear models. Biases, norms and embeddings'
    lookups are left alone. Dense storage keeps the file's size."""
    import onnx
    from onnx import numpy_helper

    fraction = material.prune_fraction
    model = onnx.load(str(source))
    graph = model.graph
    weights = {name for node in graph.node if node.op_type in _WEIGHT_OPS for name in node.input}
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.DOUBLE, onnx.TensorProto.FLOAT16}
    matrices = zeros = total = 0
    for initializer in graph.initializer:
        if initializer.name not in weights or initializer.data_type not in floats:
            continue
        if len(initializer.dims) < 2:
            continue
        array = numpy_helper.to_array(initializer)
        pruned, zeroed = _zero_smallest(array, fraction)
        initializer.CopyFrom(numpy_helper.from_array(pruned.astype(array.dtype), initializer.name))
        matrices, zeros, total = matrices + 1, zeros + zeroed, total + array.size
    for node in graph.node:
        if node.op_type not in _LINEAR_OPS or node.domain != "ai.onnx.ml":
            continue
        for attribute in node.attribute:
            if attribute.name == "coefficients" and attribute.floats:
                array = np.asarray(attribute.floats, dtype=np.float32)
                pruned, zeroed = _zero_smallest(array, fraction)
                attribute.floats[:] = pruned.tolist()
                matrices, zeros, total = matrices + 1, zeros + zeroed, total + array.size
    if not matrices:
        raise NothingToDo(
            "no weights to prune: no weight matrices (MatMul, Gemm, Conv initializers) or "
            "linear-model coefficients (a tree ensemble's thresholds are not weights)"
        )
    onnx.save(model, str(destination))
    return (
        f"magnitude pruning: the {fraction:.0%} smallest weights of each of {matrices} weight "
        f"matrices set to 0 ({zeros} of {total} now zero); stored dense, so the file keeps "
        "its size"
    )


def _tabular_classifier(model: Any) -> tuple[str, int, str, str]:
    """(input name, feature count, label output, probabilities output) of a classifier
    with one 2-D float input, one integer label output and one 2-D float output."""
    import onnx

    graph = model.graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    reason = (
        "distillation needs a tabular classifier: one FP32 input [N, F], an integer label "
        "output and a probabilities output [N, K]"
    )
    if len(inputs) != 1:
        raise NothingToDo(reason)
    tensor = inputs[0].type.tensor_type
    dims = tensor.shape.dim
    if tensor.elem_type != onnx.TensorProto.FLOAT or len(dims) != 2 or not dims[1].dim_value:
        raise NothingToDo(reason)
    labels = [
        o.name for o in graph.output if o.type.tensor_type.elem_type == onnx.TensorProto.INT64
    ]
    scores = [
        o.name
        for o in graph.output
        if o.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
        and len(o.type.tensor_type.shape.dim) == 2
    ]
    if len(graph.output) != 2 or len(labels) != 1 or len(scores) != 1:
        raise NothingToDo(reason)
    return inputs[0].name, dims[1].dim_value, labels[0], scores[0]


def _opsets(model: Any) -> dict[str, int]:
    found = {o.domain or "": o.version for o in model.opset_import}
    return {"": found.get("", 17), "ai.onnx.ml": max(found.get("ai.onnx.ml", 3), 1)}


def distill(source: Path, destination: Path, material: Material) -> str:
    """Train one decision tree (depth at most :data:`STUDENT_MAX_DEPTH`) on the original's
    probabilities over ``material.training`` (reference rows drawn apart from those the
    candidates are measured on), and export it with skl2onnx under the original's input
    and output names. Soft targets: each row is given once per class, weighted by the
    original's probability of that class, so each leaf's probabilities are the original's
    mean over the rows that reach it."""
    import onnx
    import onnxruntime as ort
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType
    from sklearn.tree import DecisionTreeClassifier

    teacher = onnx.load(str(source), load_external_data=False)
    input_name, width, label_name, scores_name = _tabular_classifier(teacher)
    rows = _training_rows(material.training, width)
    session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    labels, probabilities = session.run([label_name, scores_name], {input_name: rows})
    probabilities = np.asarray(probabilities, dtype=np.float64)
    classes = probabilities.shape[1]
    if classes < 2 or not np.array_equal(np.asarray(labels), probabilities.argmax(axis=1)):
        # the student's labels are class indices: the original's must be too
        raise NothingToDo("distillation needs labels that are the index of the likeliest class")
    features = np.repeat(rows, classes, axis=0)
    targets = np.tile(np.arange(classes), len(rows))
    weights = probabilities.ravel()
    student = DecisionTreeClassifier(
        max_depth=STUDENT_MAX_DEPTH, min_weight_fraction_leaf=_MIN_LEAF_SHARE, random_state=0
    ).fit(features, targets, sample_weight=weights)
    exported = convert_sklearn(
        student,
        initial_types=[(input_name, FloatTensorType([None, width]))],
        options={"zipmap": False},
        target_opset=_opsets(teacher),
    )
    _rename_outputs(exported, {"output_label": label_name, "output_probability": scores_name})
    exported.graph.name = teacher.graph.name or "student"
    onnx.checker.check_model(exported, full_check=True)
    onnx.save(exported, str(destination))
    return (
        f"distilled into a decision tree (depth {student.get_depth()}, "
        f"{student.get_n_leaves()} leaves) trained on the original's probabilities over "
        f"{len(rows)} reference rows"
    )


def _training_rows(training: Mapping[str, Any] | None, width: int) -> Any:
    if not training:
        raise NothingToDo("no tabular reference rows to train a student on")
    rows = np.asarray(next(iter(training.values())))
    if rows.dtype != np.float32 or rows.ndim != 2 or rows.shape[1] != width:
        raise NothingToDo("no tabular reference rows to train a student on")
    return rows


def _rename_outputs(model: Any, renames: dict[str, str]) -> None:
    """skl2onnx's output names become the original's (the manifest's names are the API)."""
    for node in model.graph.node:
        node.output[:] = [renames.get(name, name) for name in node.output]
        node.input[:] = [renames.get(name, name) for name in node.input]
    for output in model.graph.output:
        output.name = renames.get(output.name, output.name)
    # one opset import per domain (the highest): skl2onnx can list the default one twice
    versions: dict[str, int] = {}
    for opset in model.opset_import:
        versions[opset.domain] = max(versions.get(opset.domain, 0), opset.version)
    del model.opset_import[:]
    for domain, version in versions.items():
        entry = model.opset_import.add()
        entry.domain, entry.version = domain, version
