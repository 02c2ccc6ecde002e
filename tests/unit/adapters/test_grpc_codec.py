"""The gRPC codec's shortcuts answer as the plain encoding and decoding did: a response built
from a shared template carries only its own call's fields, and a raw tensor read with one
``np.frombuffer`` is refused for the same reasons, with the same errors, as before."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from tritonclient.grpc import service_pb2

from modelgate.api.grpc.codec import decode_infer_request, encode_infer_response
from modelgate.core.serving.requests import InferenceResponse
from modelgate.core.serving.tensors import Tensor
from modelgate.errors import ErrorKind, ModelgateError


def _response(rows: int, fill: float, **fields: Any) -> InferenceResponse:
    return InferenceResponse(
        "credit-risk",
        "2",
        [
            Tensor("label", "INT64", np.full(rows, int(fill), dtype=np.int64)),
            Tensor("probabilities", "FP32", np.full((rows, 2), fill, dtype=np.float32)),
        ],
        **fields,
    )


def _expected(response: InferenceResponse) -> Any:
    """The message field by field, as Triton answers (every output raw)."""
    tensor = service_pb2.ModelInferResponse.InferOutputTensor
    message = service_pb2.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id or "",
        outputs=[
            tensor(name=t.name, datatype=t.datatype, shape=t.data.shape) for t in response.outputs
        ],
        raw_output_contents=[t.data.tobytes() for t in response.outputs],
    )
    for key, value in response.parameters.items():
        message.parameters[key].double_param = value
    if response.cache is not None:
        message.parameters["cache"].string_param = response.cache
    return message


def test_each_response_carries_only_its_own_call() -> None:
    first = _response(1, 1.0, id="call-1", parameters={"anomaly_score": 0.75}, cache="miss")
    second = _response(1, 0.0)
    third = _response(3, 0.5, id="call-3")
    for response in (first, second, third, first):
        assert encode_infer_response(response) == _expected(response)


def test_an_encoded_response_may_be_changed_without_changing_the_next() -> None:
    message = encode_infer_response(_response(2, 1.0))
    message.outputs[0].shape[0] = 99
    message.model_name = "other"
    message.raw_output_contents.append(b"x")
    again = _response(2, 1.0)
    assert encode_infer_response(again) == _expected(again)


def _raw_request(datatype: str, shape: list[int], raw: bytes) -> Any:
    request = service_pb2.ModelInferRequest(
        model_name="m",
        inputs=[
            service_pb2.ModelInferRequest.InferInputTensor(name="x", datatype=datatype, shape=shape)
        ],
    )
    request.raw_input_contents.append(raw)
    return request


@pytest.mark.parametrize(
    "dtype",
    [
        *("bool", "uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"),
        *("float16", "float32", "float64"),
    ],
)
def test_raw_numeric_tensors_decode_to_their_values(dtype: str) -> None:
    names = {"bool": "BOOL", "float16": "FP16", "float32": "FP32", "float64": "FP64"}
    datatype = names.get(dtype, dtype.upper())
    values = np.arange(6).reshape(2, 3).astype(dtype)
    request = _raw_request(
        datatype, [2, 3], values.astype(values.dtype.newbyteorder("<")).tobytes()
    )
    [tensor] = decode_infer_request(request, 100).inputs
    assert tensor.datatype == datatype
    assert tensor.data.dtype == np.dtype(dtype)
    assert tensor.data.shape == (2, 3)
    assert (tensor.data == values).all()


@pytest.mark.parametrize(
    ("shape", "raw", "kind", "needle"),
    [
        ([2, 3], b"\x00" * 20, ErrorKind.INVALID_ARGUMENT, "has 20 raw bytes, shape [2, 3]"),
        ([-1, 3], b"\x00" * 12, ErrorKind.INVALID_ARGUMENT, "negative dimension"),
        ([2**40, -1], b"", ErrorKind.PAYLOAD_TOO_LARGE, "more than the limit"),
        ([11, 10], b"\x00" * 440, ErrorKind.PAYLOAD_TOO_LARGE, "more than the limit of 100"),
    ],
)
def test_bad_raw_tensors_are_refused_as_before(
    shape: list[int], raw: bytes, kind: ErrorKind, needle: str
) -> None:
    with pytest.raises(ModelgateError) as caught:
        decode_infer_request(_raw_request("FP32", shape, raw), 100)
    assert caught.value.kind is kind
    assert needle in caught.value.message


def test_a_request_without_outputs_or_parameters_asks_for_none() -> None:
    decoded = decode_infer_request(_raw_request("FP32", [1, 1], b"\x00" * 4), 100)
    assert decoded.outputs is None
    assert decoded.parameters == {}
    assert decoded.inputs[0].parameters == {}
    assert decoded.id is None
    assert decoded.version is None
