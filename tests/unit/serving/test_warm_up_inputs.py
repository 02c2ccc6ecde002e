"""What a version is warmed up with: each input's declared example, zeros, or (a python
model's BYTES input without an example) nothing."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from modelgate.core.serving.execution import warm_up_inputs
from modelgate.core.serving.manifest import parse_manifest
from modelgate.errors import ModelgateError

OUT = [{"name": "y", "datatype": "FP32", "shape": [-1]}]


def manifest(runtime: str, *inputs: dict[str, Any]) -> Any:
    return parse_manifest("m", {"runtime": runtime, "inputs": list(inputs), "outputs": OUT})


def test_examples_fill_the_tensor_at_the_warm_up_batch() -> None:
    arrays = warm_up_inputs(
        manifest(
            "python",
            {"name": "text", "datatype": "BYTES", "shape": [-1], "example": '{"a": 1}'},
            {"name": "x", "datatype": "INT64", "shape": [-1, 3], "example": 7},
            {"name": "z", "datatype": "FP32", "shape": [-1, 2]},
        ),
        rows=4,
    )
    assert arrays is not None
    assert arrays["text"].tolist() == [b'{"a": 1}'] * 4
    np.testing.assert_array_equal(arrays["x"], np.full((4, 3), 7, dtype=np.int64))
    np.testing.assert_array_equal(arrays["z"], np.zeros((4, 2), dtype=np.float32))


def test_a_python_models_bytes_input_without_an_example_skips_the_warm_up() -> None:
    text = {"name": "text", "datatype": "BYTES", "shape": [-1]}
    assert warm_up_inputs(manifest("python", text), rows=2) is None
    built_in = warm_up_inputs(manifest("onnxruntime", text), rows=2)  # a tokenizer takes any text
    assert built_in is not None and built_in["text"].tolist() == [b"warm up"] * 2


@pytest.mark.parametrize(
    ("tensor", "says"),
    [
        ({"name": "doc", "datatype": "BYTES", "shape": [-1], "example": 3}, "not a BYTES value"),
        ({"name": "x", "datatype": "FP32", "shape": [-1], "example": "a"}, "not a FP32 value"),
    ],
)
def test_an_example_of_the_wrong_type_is_an_invalid_manifest(
    tensor: dict[str, Any], says: str
) -> None:
    with pytest.raises(ModelgateError) as info:
        manifest("python", tensor)
    assert says in info.value.message
