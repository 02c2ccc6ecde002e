"""The SDK's tensor codec against the server's own (``modelgate.api.oip_codec``), property
based: what the client sends, the server reads as the same arrays; what the server answers,
the client reads as the same arrays; binary tensor data and JSON alike."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from modelgate_client._tensors import TensorCodec

from modelgate.api.oip_codec import decode_infer_request, encode_infer_response
from modelgate.core.serving.requests import InferenceResponse
from modelgate.core.serving.signature import RequestedOutput
from modelgate.core.serving.tensors import Tensor

NUMERIC = {
    "BOOL": "?", "UINT8": "u1", "UINT16": "<u2", "UINT32": "<u4", "UINT64": "<u8",
    "INT8": "i1", "INT16": "<i2", "INT32": "<i4", "INT64": "<i8", "FP16": "<f2",
    "FP32": "<f4", "FP64": "<f8",
}  # fmt: skip
SHAPES = hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=4)
CODEC = TensorCodec()


@st.composite
def tensors(draw: st.DrawFn, *, json: bool) -> tuple[str, np.ndarray[Any, Any]]:
    """(datatype, array): numeric (finite for JSON) or BYTES (UTF-8 text for JSON)."""
    datatype = draw(st.sampled_from([*NUMERIC, "BYTES"]))
    if datatype == "BYTES":
        shape = draw(SHAPES)
        size = int(np.prod(shape))
        element = st.text(max_size=6).map(str.encode) if json else st.binary(max_size=6)
        array = np.empty(size, dtype=object)
        array[:] = draw(st.lists(element, min_size=size, max_size=size))
        return datatype, array.reshape(shape)
    dtype = np.dtype(NUMERIC[datatype])
    elements = hnp.from_dtype(dtype, allow_nan=not json, allow_infinity=not json)
    return datatype, draw(hnp.arrays(dtype, SHAPES, elements=elements))


def _same(got: np.ndarray[Any, Any], sent: np.ndarray[Any, Any]) -> None:
    assert got.shape == sent.shape
    if sent.dtype == object:
        assert got.tolist() == sent.tolist()
    else:
        assert got.dtype.kind == sent.dtype.kind and got.dtype.itemsize == sent.dtype.itemsize
        np.testing.assert_array_equal(got, sent)


@given(st.booleans(), st.data())
def test_the_server_reads_what_the_client_sends(binary: bool, data: st.DataObject) -> None:
    drawn = data.draw(st.lists(tensors(json=not binary), min_size=1, max_size=3))
    inputs = {f"in{i}": array for i, (_, array) in enumerate(drawn)}
    body, header_length = CODEC.encode_request(inputs, outputs=None, binary=binary)
    request = decode_infer_request("m", None, body, header_length, max_elements=10**6)
    assert [t.name for t in request.inputs] == list(inputs)
    for tensor, (datatype, array) in zip(request.inputs, drawn, strict=True):
        assert tensor.datatype == datatype
        _same(tensor.data, array)


@given(st.booleans(), st.data())
def test_the_client_reads_what_the_server_answers(binary: bool, data: st.DataObject) -> None:
    drawn = data.draw(st.lists(tensors(json=not binary), min_size=1, max_size=3))
    outputs = [Tensor(f"out{i}", d, a) for i, (d, a) in enumerate(drawn)]
    response = InferenceResponse("m", "3", outputs, requested=None, id="r-1")
    body, header_length = encode_infer_response(response, {"binary_data_output": binary})
    result = CODEC.decode_response(body, header_length)
    assert result.model_version == "3" and result.id == "r-1"
    assert list(result.outputs) == [t.name for t in outputs]
    for tensor in outputs:
        assert result.datatypes[tensor.name] == tensor.datatype
        _same(result.outputs[tensor.name], tensor.data)


def test_a_requested_binary_output_travels_binary() -> None:
    probabilities = np.array([[0.25, 0.75]], np.float32)
    response = InferenceResponse(
        "m", "1", [Tensor("p", "FP32", probabilities), Tensor("label", "INT64", np.array([1]))],
        requested=[RequestedOutput("p", {"binary_data": True}), RequestedOutput("label")],
    )  # fmt: skip
    body, header_length = encode_infer_response(response, {})
    assert header_length is not None
    result = CODEC.decode_response(body, header_length)
    np.testing.assert_array_equal(result["p"], probabilities)
    assert result["label"].tolist() == [1]
