"""Triton's raw tensor layout, shared by binary tensor data (REST) and
``raw_input_contents`` / ``raw_output_contents`` (gRPC): elements little-endian and packed,
row-major; a BYTES element is a 4-byte little-endian length followed by its bytes."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np

from modelgate.core.serving.tensors import numpy_dtype
from modelgate.errors import invalid

__all__ = ["from_bytes", "to_bytes"]

_LENGTH = struct.Struct("<I")


def from_bytes(
    name: str, datatype: str, shape: list[int], count: int, chunk: bytes | memoryview
) -> np.ndarray[Any, Any]:
    """The tensor ``chunk`` holds; INVALID_ARGUMENT naming the input when it does not fit."""
    if datatype == "BYTES":
        items = _split(name, memoryview(chunk))
        if len(items) != count:
            raise invalid(f"input '{name}' has {len(items)} elements, shape {shape} needs {count}")
        array = np.empty(count, dtype=object)
        array[:] = items
        return array.reshape(shape)
    dtype = numpy_dtype(datatype).newbyteorder("<")
    expected = count * dtype.itemsize
    if len(chunk) != expected:
        raise invalid(
            f"input '{name}' has {len(chunk)} raw bytes, shape {shape} of {datatype} needs "
            f"{expected}"
        )
    return np.frombuffer(chunk, dtype=dtype).reshape(shape)


def to_bytes(datatype: str, data: np.ndarray[Any, Any]) -> bytes:
    if datatype == "BYTES":
        parts: list[bytes] = []
        for item in data.reshape(-1):
            blob = item if isinstance(item, bytes) else str(item).encode()
            parts.append(_LENGTH.pack(len(blob)))
            parts.append(blob)
        return b"".join(parts)
    if data.dtype.byteorder == ">":
        data = data.astype(data.dtype.newbyteorder("<"))
    return np.ascontiguousarray(data).tobytes()


def _split(name: str, view: memoryview) -> list[bytes]:
    items: list[bytes] = []
    offset, end = 0, len(view)
    while offset < end:
        if offset + 4 > end:
            raise invalid(f"input '{name}': truncated BYTES element length")
        (length,) = _LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise invalid(f"input '{name}': a BYTES element runs past its raw data")
        items.append(bytes(view[offset : offset + length]))
        offset += length
    return items
