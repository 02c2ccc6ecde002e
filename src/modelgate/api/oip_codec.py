"""OIP v2 REST bodies <-> core requests and responses, JSON and binary tensor data. Outside
``api/rest`` because job items are stored in the same JSON (:mod:`modelgate.api.job_codec`),
and the job worker must not import the REST adapter.

Binary tensor data (Triton's extension, used by ``tritonclient.http`` by default): the body
is a JSON header of ``Inference-Header-Content-Length`` bytes followed by raw little-endian
tensors, each announced by ``parameters.binary_data_size`` on its input, in input order.
BYTES elements are each prefixed by a 4-byte little-endian length.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson

from modelgate.api.tensor_bytes import from_bytes, to_bytes
from modelgate.core.serving.requests import InferenceRequest, InferenceResponse
from modelgate.core.serving.signature import RequestedOutput
from modelgate.core.serving.tensors import Tensor, element_count, numpy_dtype
from modelgate.errors import invalid

__all__ = ["decode_infer_request", "encode_infer_response", "encode_json"]

_INT_KINDS = frozenset("iu")
_NUMBER_KINDS = frozenset("iuf")
#: the binary section of a body without one (a read-only view: shared by every request)
_NO_BINARY = memoryview(b"")


def encode_json(payload: Any) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


def decode_infer_request(
    model: str,
    version: str | None,
    body: bytes,
    header_length: int | None,
    max_elements: int,
) -> InferenceRequest:
    if header_length is not None:
        if header_length <= 0 or header_length > len(body):
            raise invalid(
                f"Inference-Header-Content-Length {header_length} does not fit a body of "
                f"{len(body)} bytes"
            )
        header, binary = body[:header_length], memoryview(body)[header_length:]
    else:
        header, binary = body, _NO_BINARY
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
        tensor, used = _decode_input(raw, binary, offset, max_elements)
        offset += used
        inputs.append(tensor)
    if offset != len(binary):
        raise invalid(f"the binary section holds {len(binary)} bytes but inputs announce {offset}")
    return InferenceRequest(
        model=model,
        version=version,
        inputs=inputs,
        outputs=_decode_outputs(doc.get("outputs")),
        id=_optional_str(doc, "id"),
        parameters=_parameters(doc.get("parameters"), "request"),
    )


def _decode_input(
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
    parameters = raw.get("parameters")  # checked when given: rarely, for JSON data
    size = (
        None
        if parameters is None
        else _parameters(parameters, f"input '{name}'").get("binary_data_size")
    )
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
    return Tensor(name, datatype, _from_json(name, datatype, shape, count, raw["data"])), 0


def _from_json(
    name: str, datatype: str, shape: list[int], count: int, data: Any
) -> np.ndarray[Any, Any]:
    dtype = numpy_dtype(datatype)
    if not isinstance(data, list):
        data = [data]
    if datatype == "BYTES":
        flat = _flatten(name, data)
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
                if kind in "fO":  # wide integers (or not integers): told apart exactly
                    return _wide_integers(name, datatype, dtype, shape, data)
                raise invalid(f"input '{name}' ({datatype}) must hold integers")
            info = np.iinfo(dtype)
            # integers numpy read as the type itself (INT64, the usual) are within its range
            if array.dtype != dtype and (array.min() < info.min or array.max() > info.max):
                raise invalid(f"input '{name}' has values outside the range of {datatype}")
        elif kind not in _NUMBER_KINDS:
            raise invalid(f"input '{name}' ({datatype}) must hold numbers")
    array = array.astype(dtype, copy=False)
    # data nested as the shape (the usual body) needs no reshape; flat data does
    return array if array.shape == tuple(shape) else array.reshape(shape)


def _wide_integers(
    name: str, datatype: str, dtype: np.dtype[Any], shape: list[int], data: list[Any]
) -> np.ndarray[Any, Any]:
    """Integer data numpy read as float64 or as objects: integers no single numpy integer
    type holds (0 and 2**63 + 1, valid UINT64, where float64 would round 2**63 + 1; -1
    and 2**63; anything past 2**64), read exactly here, or not integers at all. Integers are
    refused when outside the datatype's range and read otherwise; anything else is refused
    as not integers. Only data numpy could not read as integers comes here (a valid body's
    only when it holds such UINT64 values), so other data pays nothing for it."""
    flat = _flatten(name, data)
    if not all(type(value) is int for value in flat):
        raise invalid(f"input '{name}' ({datatype}) must hold integers")
    info = np.iinfo(dtype)
    if min(flat) < info.min or max(flat) > info.max:
        raise invalid(f"input '{name}' has values outside the range of {datatype}")
    return np.array(flat, dtype=dtype).reshape(shape)


def _flatten(name: str, data: list[Any]) -> list[Any]:
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


def _decode_outputs(raw: Any) -> list[RequestedOutput] | None:
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
                item["name"], _parameters(item.get("parameters"), f"output '{item['name']}'")
            )
        )
    return outputs


def _parameters(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise invalid(f"parameters of {where} must be an object")
    for key, value in raw.items():
        if not isinstance(value, str | int | float | bool):
            raise invalid(f"parameter '{key}' of {where} must be a string, number or boolean")
    return raw


def _optional_str(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is not None and not isinstance(value, str):
        raise invalid(f"'{key}' must be a string")
    return value


def encode_infer_response(
    response: InferenceResponse, request_parameters: dict[str, Any]
) -> tuple[bytes, int | None]:
    """The response body and, when it carries binary tensors, the JSON header's length.

    The usual answer (JSON data, no output asking for binary) builds each output entry as
    one dict literal: measured, that is cheaper than copying precomputed per-version
    templates, and the per-output binary lookups are made only when a request asks for
    binary data (tests/unit/api/test_oip_encode_oracle.py keeps the bytes identical)."""
    binary_default = bool(request_parameters.get("binary_data_output", False))
    requested = response.requested
    if binary_default or (requested and _any_binary(requested)):
        return _encode_binary(response, binary_default)
    outputs = [
        {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.data.shape,  # a tuple: orjson writes the same array as for a list
            "data": _json_data(tensor),
        }
        for tensor in response.outputs
    ]
    return encode_json(_document(response, outputs)), None


def _any_binary(requested: list[RequestedOutput]) -> bool:
    for output in requested:
        if output.parameters and output.parameters.get("binary_data", False):
            return True
    return False


def _json_data(tensor: Tensor) -> Any:
    if tensor.datatype == "BYTES":
        return [_text(x) for x in tensor.data.reshape(-1)]
    return tensor.data.ravel()  # C order, a copy only when not contiguous


def _document(response: InferenceResponse, outputs: list[dict[str, Any]]) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "model_name": response.model_name,
        "model_version": response.model_version,
    }
    if response.id is not None:
        doc["id"] = response.id
    if response.parameters:
        doc["parameters"] = response.parameters
    doc["outputs"] = outputs
    return doc


def _encode_binary(response: InferenceResponse, binary_default: bool) -> tuple[bytes, int | None]:
    """An answer where some outputs travel as raw bytes after the JSON header."""
    wants = {
        o.name: o.parameters.get("binary_data", binary_default) for o in response.requested or ()
    }
    outputs: list[dict[str, Any]] = []
    chunks: list[bytes] = []
    for tensor in response.outputs:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": tensor.data.shape,
        }
        if wants.get(tensor.name, binary_default):
            raw = to_bytes(tensor.datatype, tensor.data)
            entry["parameters"] = {"binary_data_size": len(raw)}
            chunks.append(raw)
        else:
            entry["data"] = _json_data(tensor)
        outputs.append(entry)
    header = encode_json(_document(response, outputs))
    if not chunks:
        return header, None
    return b"".join([header, *chunks]), len(header)


def _text(item: Any) -> str:
    return item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item)
