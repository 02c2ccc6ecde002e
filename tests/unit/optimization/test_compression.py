"""Magnitude pruning zeroes the smallest share of each weight matrix and nothing else, and
distillation refuses models that are not tabular classifiers (what they do to the demo
credit-risk model is measured in tests/e2e/test_optimize.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from onnx import helper, numpy_helper

from modelgate.optimization.compression import _zero_smallest, distill, magnitude_prune
from modelgate.optimization.material import Material, NothingToDo


def _linear_layer(path: Path, weights: np.ndarray, bias: np.ndarray) -> None:
    """y = x @ W + b: one weight matrix, one bias vector."""
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["h"]), helper.make_node("Add", ["h", "b"], ["y"])],
        "layer",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, weights.shape[0]])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, weights.shape[1]])],
        initializer=[numpy_helper.from_array(weights, "W"), numpy_helper.from_array(bias, "b")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path))


def test_pruning_zeroes_the_smallest_weights_and_leaves_biases(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    weights = rng.normal(size=(8, 4)).astype(np.float32)
    bias = np.full(4, 0.001, dtype=np.float32)  # tiny, but not a weight matrix
    source, pruned = tmp_path / "model.onnx", tmp_path / "pruned.onnx"
    _linear_layer(source, weights, bias)
    note = magnitude_prune(source, pruned, Material(prune_fraction=0.5))
    assert "16 of 32 now zero" in note
    graph = onnx.load(str(pruned)).graph
    got = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    kept = np.abs(weights) > np.median(np.abs(weights))
    assert np.array_equal(got["W"], np.where(kept, weights, 0))
    assert np.array_equal(got["b"], bias)
    x = rng.normal(size=(3, 8)).astype(np.float32)
    session = ort.InferenceSession(str(pruned), providers=["CPUExecutionProvider"])
    assert np.allclose(session.run(None, {"x": x})[0], x @ got["W"] + bias, atol=1e-5)


def test_a_model_without_weights_has_nothing_to_prune_or_distill(tmp_path: Path) -> None:
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "relu",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [None, 3])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [None, 3])],
    )
    source = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(source))
    with pytest.raises(NothingToDo, match="no weights to prune"):
        magnitude_prune(source, tmp_path / "out.onnx", Material())
    rows = {"x": np.zeros((10, 3), dtype=np.float32)}
    with pytest.raises(NothingToDo, match="tabular classifier"):
        distill(source, tmp_path / "out.onnx", Material(training=rows))
    assert not (tmp_path / "out.onnx").exists()


@settings(max_examples=50, deadline=None)
@given(
    values=st.lists(st.floats(-1e6, 1e6, width=32), min_size=1, max_size=64),
    fraction=st.floats(0.01, 0.99),
)
def test_at_least_the_fraction_is_zero_and_no_larger_weight_is(
    values: list[float], fraction: float
) -> None:
    array = np.asarray(values, dtype=np.float32)
    pruned, zeros = _zero_smallest(array, fraction)
    assert zeros == int(np.count_nonzero(pruned == 0)) >= int(fraction * array.size)
    survivors = pruned != 0
    assert np.array_equal(pruned[survivors], array[survivors])
    if survivors.any() and (~survivors).any():
        assert np.abs(array[~survivors]).max() <= np.abs(array[survivors]).min()
