"""``inference.ModelInferRequest`` / ``ModelInferResponse`` <-> core requests and responses.

An input's data comes either from its typed ``contents`` or from ``raw_input_contents``, one
raw buffer per input in input order (``tritonclient.grpc`` always sends raw). Raw tensors are
little-endian; each BYTES element is prefixed by its 4-byte little-endian length. FP16 has no
typed field, so it travels raw only.

Every output goes back in ``raw_output_contents``, as Triton answers: ``tritonclient.grpc``'s
``as_numpy`` reads it, and it avoids building one protobuf scalar per element.
"""

from __future__ import annotations

from functools import lru_cache
from math import prod
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2

from modelgate.api.tensor_bytes import from_bytes, to_bytes
from modelgate.core.serving.requests import InferenceRequest, InferenceResponse
from modelgate.core.serving.signature import RequestedOutput
from modelgate.core.serving.tensors import (
    DATATYPES,
    Parameters,
    Tensor,
    element_count,
    numpy_dtype,
)
from modelgate.errors import invalid

__all__ = [
    "contents_array",
    "decode_infer_request",
    "decode_parameters",
    "encode_infer_response",
]

_Response = service_pb2.ModelInferResponse
_InferOutputTensor = _Response.InferOutputTensor

# The typed field of InferTensorContents that carries each datatype.
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
# The little-endian dtype of each fixed-size datatype, as raw tensors carry it.
_RAW_DTYPES: dict[str, np.dtype[Any]] = {
    name: numpy_dtype(name).newbyteorder("<") for name in DATATYPES - {"BYTES", "BF16"}
}
# Datatypes narrower than their field, whose values need a range check.
_NARROW = frozenset(["INT8", "INT16", "UINT8", "UINT16"])


def decode_infer_request(request: Any, max_elements: int) -> InferenceRequest:
    """Decode a ``ModelInferRequest``; INVALID_ARGUMENT or PAYLOAD_TOO_LARGE when malformed.

    The hot path of every call: a raw numeric tensor is read with one ``np.frombuffer``
    (its little-endian dtype looked up once per datatype), and the empty ``outputs`` and
    ``parameters`` that most requests send build nothing."""
    raw = request.raw_input_contents
    items = request.inputs
    if not items:
        raise invalid("the request has no inputs")
    if raw and len(raw) != len(items):
        raise invalid(
            f"raw_input_contents holds {len(raw)} buffers for {len(items)} inputs; "
            "when raw_input_contents is used it must hold one buffer per input"
        )
    inputs: list[Tensor] = []
    for index, item in enumerate(items):
        name = item.name
        if not name:
            raise invalid("an input has no name")
        datatype = item.datatype
        shape = list(item.shape)
        count = _element_count(shape, max_elements)
        if raw:
            if item.HasField("contents"):
                raise invalid(
                    f"input '{name}' has contents while the request uses raw_input_contents; "
                    "use one or the other for all inputs"
                )
            chunk = raw[index]
            dtype = _RAW_DTYPES.get(datatype)
            if dtype is not None and len(chunk) == count * dtype.itemsize:
                data = np.frombuffer(chunk, dtype=dtype).reshape(shape)
            else:  # BYTES, an unknown datatype or a wrong size: checked, named in the error
                data = from_bytes(name, datatype, shape, count, chunk)
        else:
            data = contents_array(name, datatype, shape, count, item.contents)
        inputs.append(
            Tensor(name, datatype, data, decode_parameters(item.parameters))
            if item.parameters
            else Tensor(name, datatype, data)
        )
    wanted = request.outputs
    return InferenceRequest(
        request.model_name,
        request.model_version or None,
        inputs,
        [
            RequestedOutput(o.name, decode_parameters(o.parameters) if o.parameters else {})
            for o in wanted
        ]
        if wanted
        else None,
        request.id or None,
        decode_parameters(request.parameters) if request.parameters else {},
    )


def _element_count(shape: list[int], limit: int) -> int:
    """:func:`element_count` of a proto's shape (int64s, so only the sign and the size are
    in doubt): one product when it is in bounds, else the full check for its error."""
    if shape and min(shape) < 0:
        return element_count(shape, limit)
    count = prod(shape)
    return count if count <= limit else element_count(shape, limit)


def contents_array(
    name: str, datatype: str, shape: list[int], count: int, contents: Any
) -> np.ndarray[Any, Any]:
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        numpy_dtype(datatype)  # raises for unknown datatypes and BF16
        raise invalid(f"input '{name}' ({datatype}) must be sent in raw_input_contents")
    values = getattr(contents, field)
    if len(values) != count:
        raise invalid(
            f"input '{name}' has {len(values)} elements in {field}, shape {shape} needs {count}"
        )
    if datatype == "BYTES":
        array = np.empty(count, dtype=object)
        array[:] = list(values)
        return array.reshape(shape)
    dtype = numpy_dtype(datatype)
    if datatype in _NARROW and count:
        wide = np.array(values, dtype=np.int64)
        info = np.iinfo(dtype)
        if wide.min() < info.min or wide.max() > info.max:
            raise invalid(f"input '{name}' has values outside the range of {datatype}")
        return wide.astype(dtype).reshape(shape)
    return np.array(values, dtype=dtype).reshape(shape)


def decode_parameters(params: Any) -> Parameters:
    """An ``InferParameter`` (or ``ModelRepositoryParameter``) map as plain Python values."""
    out: Parameters = {}
    for key, param in params.items():
        choice = param.WhichOneof("parameter_choice")
        if choice is not None:
            out[key] = getattr(param, choice)
    return out


def encode_infer_response(response: InferenceResponse) -> Any:
    """A ``ModelInferResponse`` with every output in ``raw_output_contents``.

    What a model version answers is the same from call to call but for the tensors' bytes
    (and the shape's rows): the names, datatypes and shapes come from a template kept per
    distinct head (:func:`_head`), copied in one ``CopyFrom``, which costs a third of
    building the output messages anew."""
    outputs = response.outputs
    message = _Response()
    message.CopyFrom(
        _head(
            response.model_name,
            response.model_version,
            tuple([(t.name, t.datatype, t.data.shape) for t in outputs]),
        )
    )
    if response.id:
        message.id = response.id
    message.raw_output_contents.extend([to_bytes(t.datatype, t.data) for t in outputs])
    for key, value in response.parameters.items():
        _set_parameter(message.parameters[key], value)
    if response.cache is not None:  # REST says it in the X-Modelgate-Cache header
        message.parameters["cache"].string_param = response.cache
    return message


@lru_cache(maxsize=512)
def _head(
    model_name: str, model_version: str, outputs: tuple[tuple[str, str, tuple[int, ...]], ...]
) -> Any:
    """The response's fields that do not change from call to call (never mutated: it is
    shared). Bounded: a client sending ever new row counts only evicts older heads."""
    return _Response(
        model_name=model_name,
        model_version=model_version,
        outputs=[_InferOutputTensor(name=n, datatype=d, shape=s) for n, d, s in outputs],
    )


def _set_parameter(param: Any, value: Any) -> None:
    # bool before int: bool is an int in Python.
    if isinstance(value, bool):
        param.bool_param = value
    elif isinstance(value, int):
        param.int64_param = value
    elif isinstance(value, float):
        param.double_param = value
    else:
        param.string_param = str(value)
