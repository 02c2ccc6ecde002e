"""The OIP REST decoder was trimmed (issue 11: an input's ``parameters`` are checked only
when given, data nested as the shape is not reshaped); these properties hold it to the
function it replaced, kept here as the oracle, over random bodies: every datatype, nested
and flat data, counts that do not fit the shape, booleans, strings, nulls and integers out of
range where numbers are expected, input parameters (valid, invalid, binary sizes), requested
outputs, ids. Both decode the same tensors (values, dtype and shape) or refuse with the same
kind and message. One change since is kept in the oracle too: integer data numpy reads as
float64 (values of int64's and uint64's ranges mixed) is read exactly."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgate.api.oip_codec import decode_infer_request
from modelgate.api.tensor_bytes import from_bytes
from modelgate.core.serving.requests import InferenceRequest
from modelgate.core.serving.signature import RequestedOutput
from modelgate.core.serving.tensors import DATATYPES, Tensor, element_count, numpy_dtype
from modelgate.errors import ModelgateError, invalid

_INT_KINDS = frozenset("iu")
_NUMBER_KINDS = frozenset("iuf")


def _old_decode(
    model: str, version: str | None, body: bytes, header_length: int | None, max_elements: int
) -> InferenceRequest:
    """decode_infer_request as it was before the trim, verbatim."""
    if header_length is not None:
        if header_length <= 0 or header_length > len(body):
            raise invalid(
                f"Inference-Header-Content-Length {header_length} does not fit a body of "
                f"{len(body)} bytes"
            )
        header, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        header, binary = body, memoryview(b"")
    if not header:
        raise invalid("the request body is empty")
    try:
        doc = orjson.loads(header)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"malformed JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise invalid("the request body must be a JSON object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise invalid("'inputs' must be a non-empty list")
    offset = 0
    inputs: list[Tensor] = []
    for raw in raw_inputs:
        tensor, used = _old_decode_input(raw, binary, offset, max_elements)
        offset += used
        inputs.append(tensor)
    if offset != len(binary):
        raise invalid(f"the binary section holds {len(binary)} bytes but inputs announce {offset}")
    return InferenceRequest(
        model=model,
        version=version,
        inputs=inputs,
        outputs=_old_outputs(doc.get("outputs")),
        id=_old_optional_str(doc, "id"),
        parameters=_old_parameters(doc.get("parameters"), "request"),
    )


def _old_decode_input(
    raw: Any, binary: memoryview, offset: int, max_elements: int
) -> tuple[Tensor, int]:
    if not isinstance(raw, dict):
        raise invalid("each input must be a JSON object")
    name = raw.get("name")
    datatype = raw.get("datatype")
    shape = raw.get("shape")
    if not isinstance(name, str) or not name:
        raise invalid("an input has no 'name'")
    if not isinstance(datatype, str):
        raise invalid(f"input '{name}' has no 'datatype'")
    if not isinstance(shape, list):
        raise invalid(f"input '{name}' has no 'shape' list")
    count = element_count(shape, max_elements)
    parameters = _old_parameters(raw.get("parameters"), f"input '{name}'")
    size = parameters.get("binary_data_size")
    if size is not None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise invalid(f"input '{name}': binary_data_size must be a non-negative integer")
        if offset + size > len(binary):
            raise invalid(f"input '{name}' announces {size} binary bytes past the body's end")
        if "data" in raw:
            raise invalid(f"input '{name}' has both 'data' and binary_data_size")
        array = from_bytes(name, datatype, shape, count, binary[offset : offset + size])
        return Tensor(name, datatype, array), size
    if "data" not in raw:
        raise invalid(f"input '{name}' has no 'data'")
    return Tensor(name, datatype, _old_from_json(name, datatype, shape, count, raw["data"])), 0


def _old_from_json(
    name: str, datatype: str, shape: list[int], count: int, data: Any
) -> np.ndarray[Any, Any]:
    dtype = numpy_dtype(datatype)
    if not isinstance(data, list):
        data = [data]
    if datatype == "BYTES":
        flat = _old_flatten(name, data)
        if len(flat) != count:
            raise invalid(f"input '{name}' has {len(flat)} elements, shape {shape} needs {count}")
        array = np.empty(count, dtype=object)
        for i, item in enumerate(flat):
            if not isinstance(item, str):
                raise invalid(f"input '{name}' (BYTES) must hold strings")
            array[i] = item.encode("utf-8")
        return array.reshape(shape)
    try:
        array = np.asarray(data)
    except (ValueError, TypeError):
        raise invalid(f"input '{name}' has ragged or mixed 'data'") from None
    if array.size != count:
        raise invalid(f"input '{name}' has {array.size} elements, shape {shape} needs {count}")
    kind = array.dtype.kind
    if count:
        if datatype == "BOOL":
            if kind != "b":
                raise invalid(f"input '{name}' (BOOL) must hold true/false")
        elif dtype.kind in _INT_KINDS:
            if kind not in _INT_KINDS:
                # the one change since the trim: integers no single numpy type holds (0 and
                # 2**63 for UINT64, read as float64: found by
                # tests/sdk/test_sdk_codec_server.py) are read exactly, and refused as out of
                # range where they are, as the decoder now does (data numpy reads as objects
                # is told apart the same way)
                flat = _old_flatten(name, data)
                wide = kind in "fO"
                if not wide or not all(type(v) is int for v in flat):
                    raise invalid(f"input '{name}' ({datatype}) must hold integers")
                info = np.iinfo(dtype)
                if min(flat) < info.min or max(flat) > info.max:
                    raise invalid(f"input '{name}' has values outside the range of {datatype}")
                return np.array(flat, dtype=dtype).reshape(shape)
            info = np.iinfo(dtype)
            if array.min() < info.min or array.max() > info.max:
                raise invalid(f"input '{name}' has values outside the range of {datatype}")
        elif kind not in _NUMBER_KINDS:
            raise invalid(f"input '{name}' ({datatype}) must hold numbers")
    return array.astype(dtype, copy=False).reshape(shape)


def _old_flatten(name: str, data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    stack = [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                if len(stack) > 32:
                    raise invalid(f"input '{name}' is nested too deeply")
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def _old_outputs(raw: Any) -> list[RequestedOutput] | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise invalid("'outputs' must be a list")
    outputs = []
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("name"), str):
            raise invalid("each requested output must be an object with a 'name'")
        outputs.append(
            RequestedOutput(
                item["name"], _old_parameters(item.get("parameters"), f"output '{item['name']}'")
            )
        )
    return outputs


def _old_parameters(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise invalid(f"parameters of {where} must be an object")
    for key, value in raw.items():
        if not isinstance(value, str | int | float | bool):
            raise invalid(f"parameter '{key}' of {where} must be a string, number or boolean")
    return raw


def _old_optional_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid(f"'{key}' must be a string")
    return value


# --- random bodies ------------------------------------------------------------------------

_scalars = st.one_of(
    st.integers(-300, 300),
    st.sampled_from([2**31, -(2**31) - 1, 2**63 - 1, 2**63, 70000, -1]),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.booleans(),
)
_odd = st.one_of(st.none(), st.text(max_size=2), st.just([]), st.just({"a": 1}))
_shapes = st.lists(st.integers(0, 3), min_size=0, max_size=3)
_parameter_sets = st.one_of(
    st.none(),
    st.dictionaries(st.sampled_from(["a", "b"]), st.integers(-2, 2), max_size=2),
    st.just({"a": [1]}),
    st.just("nope"),
    st.sampled_from([{"binary_data_size": 0}, {"binary_data_size": -1}]),
)


def _nested(values: list[Any], shape: list[int]) -> Any:
    """``values`` nested as ``shape`` (flat when it does not fit)."""
    if not shape or int(np.prod(shape)) != len(values) or 0 in shape:
        return values
    if len(shape) == 1:
        return values
    step = len(values) // shape[0]
    return [_nested(values[i * step : (i + 1) * step], shape[1:]) for i in range(shape[0])]


@st.composite
def _inputs(draw: st.DrawFn) -> dict[str, Any]:
    rare = st.sampled_from([False] * 9 + [True])  # an odd body now and then
    datatype = draw(st.sampled_from(sorted(DATATYPES)))
    shape = draw(_shapes)
    count = int(np.prod(shape)) if shape else 1
    size = count + draw(st.sampled_from([0, 0, 0, 1, -1])) if count else 0
    if datatype == "BYTES":
        element: st.SearchStrategy[Any] = st.one_of(st.text(max_size=3), st.integers(0, 3))
    elif draw(rare):
        element = st.one_of(_scalars, _odd)
    else:
        element = _scalars
    values = draw(st.lists(element, min_size=max(size, 0), max_size=max(size, 0)))
    name = "" if draw(rare) else draw(st.sampled_from(["x", "y"]))
    entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": shape}
    layout = "none" if draw(rare) else draw(st.sampled_from(["nested", "flat", "scalar"]))
    if layout == "nested":
        entry["data"] = _nested(values, shape)
    elif layout == "scalar" and len(values) == 1:
        entry["data"] = values[0]  # a scalar for a one-element shape
    elif layout != "none":
        entry["data"] = values
    parameters = draw(_parameter_sets) if draw(st.booleans()) else None
    if parameters is not None:
        entry["parameters"] = parameters
    return entry


@st.composite
def _bodies(draw: st.DrawFn) -> bytes:
    doc: dict[str, Any] = {"inputs": draw(st.lists(_inputs(), min_size=1, max_size=2))}
    if draw(st.booleans()):
        doc["outputs"] = [{"name": "y", "parameters": {"binary_data": draw(st.booleans())}}]
    if draw(st.booleans()):
        doc["id"] = draw(st.one_of(st.text(max_size=3), st.integers(0, 2)))
    return orjson.dumps(doc)


def _outcome(body: bytes, decode: Any) -> Any:
    try:
        with np.errstate(over="ignore"):  # 70000 as FP16 is inf, with a warning, in both
            request = decode("m", "1", body, None, 64)
    except ModelgateError as exc:
        return ("refused", exc.kind, exc.message)
    tensors = [
        (t.name, t.datatype, t.data.dtype, t.data.shape, t.data.tolist(), t.parameters)
        for t in request.inputs
    ]
    return ("decoded", tensors, request.outputs, request.id, request.parameters)


@settings(max_examples=600, deadline=None)
@given(_bodies())
def test_decoding_equals_the_old_decoder(body: bytes) -> None:
    assert _outcome(body, decode_infer_request) == _outcome(body, _old_decode)


def test_nested_data_keeps_its_shape_and_flat_data_is_reshaped() -> None:
    for data in ([[1.5, 2.0, 3.0]], [1.5, 2.0, 3.0]):
        body = orjson.dumps(
            {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": data}]}
        )
        array = decode_infer_request("m", None, body, None, 64).inputs[0].data
        assert array.shape == (1, 3) and array.dtype == np.float32
        assert array.tolist() == [[1.5, 2.0, 3.0]]


def test_integers_that_numpy_would_read_as_floats_are_read_exactly() -> None:
    """0 and 2**63 + 1 in one UINT64 input: numpy alone reads them as float64 (2**63 + 1
    would round to 2**63, and the input was refused as not integers)."""

    def decode(datatype: str, data: list[Any]) -> np.ndarray[Any, Any]:
        raw = '{"inputs":[{"name":"x","datatype":"%s","shape":[2],"data":%s}]}'
        body = (raw % (datatype, orjson.dumps(data).decode())).encode()
        return decode_infer_request("m", None, body, None, max_elements=10).inputs[0].data

    got = decode("UINT64", [0, 2**63 + 1])
    assert got.dtype == np.uint64 and got.tolist() == [0, 2**63 + 1]
    for datatype, data, message in (
        ("UINT64", [1.5, 2**63], "must hold integers"),
        ("UINT64", [-1, 2**63], "outside the range of UINT64"),
        ("INT64", [0, 2**63], "outside the range of INT64"),
        ("INT64", [-1, 2**63], "outside the range of INT64"),
        ("INT8", [-1, 2**63], "outside the range of INT8"),
        ("INT64", [1, None], "must hold integers"),
        ("INT64", [0.5, 2**63], "must hold integers"),
    ):
        with pytest.raises(ModelgateError, match=message):
            decode(datatype, data)
