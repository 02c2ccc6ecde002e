"""numpy arrays <-> OIP v2 REST inference bodies, JSON or with Triton's binary tensor data.

Binary tensor data: the body is a JSON header of ``Inference-Header-Content-Length`` bytes,
then each tensor's raw bytes in input (or output) order, each announced by
``parameters.binary_data_size``. Elements are little-endian, packed, row-major; a BYTES
element is a 4-byte little-endian length followed by its bytes. The only module that needs
numpy: the client imports it when ``infer`` is first called.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from modelgate_client._models import InferResult

__all__ = ["TensorCodec", "datatype_of", "decode_tensor", "encode_tensor", "numpy_dtype"]

_LENGTH = struct.Struct("<I")

_DTYPES: dict[str, str] = {
    "BOOL": "?",
    "UINT8": "u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
_DATATYPES = {np.dtype(code).str.lstrip("<>|="): name for name, code in _DTYPES.items()}


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype of an OIP datatype (BYTES: ``object``, holding ``bytes``)."""
    if datatype == "BYTES":
        return np.dtype(object)
    try:
        return np.dtype(_DTYPES[datatype])
    except KeyError:
        raise ValueError(f"datatype {datatype!r} has no numpy equivalent") from None


def datatype_of(array: npt.NDArray[Any]) -> str:
    """The OIP datatype of an array: text, bytes and object arrays are BYTES."""
    if array.dtype.kind in "OSU":
        return "BYTES"
    name = _DATATYPES.get(array.dtype.str.lstrip("<>|="))
    if name is None:
        raise ValueError(f"arrays of dtype {array.dtype} have no OIP datatype")
    return name


def encode_tensor(datatype: str, array: npt.NDArray[Any]) -> bytes:
    """The raw bytes of a tensor, as binary tensor data carries them."""
    if datatype == "BYTES":
        parts: list[bytes] = []
        for item in array.reshape(-1):
            blob = _as_bytes(item)
            parts.append(_LENGTH.pack(len(blob)))
            parts.append(blob)
        return b"".join(parts)
    return np.ascontiguousarray(array, dtype=numpy_dtype(datatype)).tobytes()


def decode_tensor(datatype: str, shape: Sequence[int], raw: bytes) -> npt.NDArray[Any]:
    """The array ``raw`` holds; ValueError when its size does not fit the shape."""
    count = 1
    for dim in shape:
        count *= int(dim)
    if datatype == "BYTES":
        items: list[bytes] = []
        offset = 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise ValueError("a BYTES element's length is cut off")
            (length,) = _LENGTH.unpack_from(raw, offset)
            offset += 4
            if offset + length > len(raw):
                raise ValueError("a BYTES element runs past the tensor's data")
            items.append(raw[offset : offset + length])
            offset += length
        if len(items) != count:
            raise ValueError(f"{len(items)} BYTES elements do not fit shape {list(shape)}")
        array = np.empty(count, dtype=object)
        array[:] = items
        return array.reshape(shape)
    dtype = numpy_dtype(datatype)
    if len(raw) != count * dtype.itemsize:
        raise ValueError(f"{len(raw)} bytes do not fit shape {list(shape)} of {datatype}")
    # a copy: the answer's buffer is not kept alive, and callers may write to the array
    return np.frombuffer(raw, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def _as_bytes(item: Any) -> bytes:
    if isinstance(item, bytes):
        return item
    if isinstance(item, np.bytes_):
        return bytes(item)
    return str(item).encode("utf-8")


def _json_data(datatype: str, array: npt.NDArray[Any]) -> list[Any]:
    if datatype == "BYTES":
        try:
            return [_as_bytes(x).decode("utf-8") for x in array.reshape(-1)]
        except UnicodeDecodeError:
            raise ValueError(
                "a BYTES element is not UTF-8 text, which JSON cannot carry: send binary=True"
            ) from None
    flat: list[Any] = array.reshape(-1).tolist()
    return flat


class TensorCodec:
    """Builds inference bodies from arrays and reads arrays from answers."""

    def encode_request(
        self,
        inputs: Mapping[str, Any],
        *,
        outputs: Sequence[str] | None,
        binary: bool,
        request_id: str | None = None,
        parameters: Mapping[str, Any] | None = None,
    ) -> tuple[bytes, int | None]:
        """The body and, when it carries binary data, its JSON header's length."""
        if not inputs:
            raise ValueError("inputs must name at least one tensor")
        entries: list[dict[str, Any]] = []
        chunks: list[bytes] = []
        for name, value in inputs.items():
            array = _as_array(value)
            datatype = datatype_of(array)
            entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
            if binary:
                raw = encode_tensor(datatype, array)
                entry["parameters"] = {"binary_data_size": len(raw)}
                chunks.append(raw)
            else:
                entry["data"] = _json_data(datatype, array)
            entries.append(entry)
        doc: dict[str, Any] = {"inputs": entries}
        if request_id is not None:
            doc["id"] = request_id
        params = dict(parameters or {})
        if outputs is not None:
            doc["outputs"] = [
                {"name": o, "parameters": {"binary_data": True}} if binary else {"name": o}
                for o in outputs
            ]
        elif binary:
            params["binary_data_output"] = True
        if params:
            doc["parameters"] = params
        try:
            header = json.dumps(doc, separators=(",", ":"), allow_nan=False).encode()
        except ValueError:  # NaN or infinity: not JSON numbers
            raise ValueError(
                "NaN and infinity are not JSON numbers: send them with binary=True"
            ) from None
        if not binary:
            return header, None
        return b"".join([header, *chunks]), len(header)

    def decode_response(self, content: bytes, header_length: int | None) -> InferResult:
        """An inference answer; ValueError when the body does not hold what it announces."""
        if header_length is None:
            header, binary = content, b""
        else:
            if not 0 < header_length <= len(content):
                raise ValueError(f"Inference-Header-Content-Length {header_length} is wrong")
            header, binary = content[:header_length], content[header_length:]
        doc = json.loads(header)
        offset = 0
        outputs: dict[str, npt.NDArray[Any]] = {}
        datatypes: dict[str, str] = {}
        for entry in doc.get("outputs", []):
            name, datatype, shape = entry["name"], entry["datatype"], entry["shape"]
            size = (entry.get("parameters") or {}).get("binary_data_size")
            if size is not None:
                if offset + size > len(binary):
                    raise ValueError(f"output {name!r} runs past the answer's binary data")
                outputs[name] = decode_tensor(datatype, shape, binary[offset : offset + size])
                offset += size
            else:
                outputs[name] = _from_json(datatype, shape, entry.get("data", []))
            datatypes[name] = datatype
        return InferResult(
            model_name=str(doc.get("model_name", "")),
            model_version=str(doc.get("model_version", "")),
            id=doc.get("id"),
            parameters=dict(doc.get("parameters") or {}),
            outputs=outputs,
            datatypes=datatypes,
        )


def _as_array(value: Any) -> npt.NDArray[Any]:
    array = np.asarray(value)
    if array.dtype.kind == "U":  # text: each element as UTF-8 bytes
        encoded = np.empty(array.shape, dtype=object)
        encoded.reshape(-1)[:] = [s.encode("utf-8") for s in array.reshape(-1).tolist()]
        return encoded
    return array


def _from_json(datatype: str, shape: Sequence[int], data: Any) -> npt.NDArray[Any]:
    if datatype == "BYTES":
        flat = np.asarray(data, dtype=object).reshape(-1)
        array = np.empty(flat.size, dtype=object)
        array[:] = [x.encode("utf-8") if isinstance(x, str) else x for x in flat]
        return array.reshape(shape)
    return np.asarray(data, dtype=numpy_dtype(datatype).newbyteorder("=")).reshape(shape)
