"""The OIP REST encoder was rewritten to build less per answer (issue 11); these properties
hold it to the function it replaced, kept here as the oracle, byte for byte, over random
answers: datatypes, shapes (empty, scalar, non-contiguous), ids, parameters, requested
outputs with and without binary data and the request-wide ``binary_data_output``."""

from __future__ import annotations

from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgate.api.oip_codec import encode_infer_response, encode_json
from modelgate.api.tensor_bytes import to_bytes
from modelgate.core.serving.requests import InferenceResponse
from modelgate.core.serving.signature import RequestedOutput
from modelgate.core.serving.tensors import Tensor


def _old_encode(
    response: InferenceResponse, request_parameters: dict[str, Any]
) -> tuple[bytes, int | None]:
    """encode_infer_response as it was before the rewrite, verbatim."""
    binary_default = bool(request_parameters.get("binary_data_output", False))
    wants = {
        o.name: o.parameters.get("binary_data", binary_default) for o in response.requested or ()
    }
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for tensor in response.outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.shape,
        }
        if wants.get(tensor.name, binary_default):
            raw = to_bytes(tensor.datatype, tensor.data)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        elif tensor.datatype == "BYTES":
            entry["data"] = [_text(x) for x in tensor.data.reshape(-1)]
        else:
            entry["data"] = np.ascontiguousarray(tensor.data).reshape(-1)
        outputs.append(entry)
    doc: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = outputs
    header = encode_json(doc)
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def _text(item: Any) -> str:
    return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)


_NUMERIC = {
    "BOOL": np.bool_,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "UINT16": np.uint16,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
_shapes = st.lists(st.integers(0, 3), min_size=0, max_size=3)
_params = st.dictionaries(
    st.sampled_from(["anomaly_score", "cache", "x"]),
    st.one_of(st.booleans(), st.integers(-5, 5), st.text(max_size=4)),
    max_size=2,
)
_binary_flag = st.one_of(st.none(), st.booleans(), st.integers(0, 1))


@st.composite
def _tensor(draw: st.DrawFn, name: str) -> Tensor:
    datatype = draw(st.sampled_from([*_NUMERIC, "BYTES"]))
    shape = tuple(draw(_shapes))
    count = int(np.prod(shape)) if shape else 1
    if datatype == "BYTES":
        items = draw(
            st.lists(
                st.one_of(st.binary(max_size=4), st.text(max_size=3)),
                min_size=count,
                max_size=count,
            )
        )
        data = np.empty(count, dtype=object)
        for i, item in enumerate(items):
            data[i] = item
        data = data.reshape(shape)
    else:
        values = draw(st.lists(st.integers(0, 100), min_size=count, max_size=count))
        data = np.array(values, dtype=np.float64).astype(_NUMERIC[datatype]).reshape(shape)
        if data.ndim == 2 and draw(st.booleans()):
            data = data.T  # not C-contiguous
    return Tensor(name, datatype, data)


@st.composite
def _answers(draw: st.DrawFn) -> tuple[InferenceResponse, dict[str, Any]]:
    names = draw(st.lists(st.sampled_from("abcd"), min_size=1, max_size=3, unique=True))
    outputs = [draw(_tensor(n)) for n in names]
    requested = None
    if draw(st.booleans()):
        requested = []
        for name in draw(st.permutations(names)):
            flag = draw(_binary_flag)
            requested.append(RequestedOutput(name, {} if flag is None else {"binary_data": flag}))
    response = InferenceResponse(
        model_name=draw(st.sampled_from(["credit-risk", "m\u00e9"])),
        model_version=draw(st.sampled_from(["1", "2"])),
        outputs=outputs,
        requested=requested,
        id=draw(st.one_of(st.none(), st.text(max_size=4))),
        parameters=draw(_params),
    )
    flag = draw(_binary_flag)
    return response, {} if flag is None else {"binary_data_output": flag}


@settings(max_examples=400, deadline=None)
@given(_answers())
def test_encoding_is_byte_identical_to_the_old_encoder(
    answer: tuple[InferenceResponse, dict[str, Any]],
) -> None:
    response, request_parameters = answer
    assert encode_infer_response(response, request_parameters) == _old_encode(
        response, request_parameters
    )
