"""The bytes a shared store keeps for one :class:`~modelgate.core.serving.ports.CachedResult`:
``MGR1``, a 4-byte little-endian length, a JSON header (times, rows, tokens, and per
output its name, datatype, shape and byte length), then each output in Triton's raw
layout (numbers little-endian and packed; BYTES as length-prefixed elements)."""

from __future__ import annotations

import struct

import numpy as np
import orjson

from modelgate.api.tensor_bytes import from_bytes, to_bytes
from modelgate.core.serving.ports import CachedResult
from modelgate.core.serving.tensors import Tensor

__all__ = ["decode_result", "encode_result"]

_MAGIC = b"MGR1"
_HEADER = struct.Struct("<I")


def encode_result(result: CachedResult) -> bytes:
    chunks = [to_bytes(t.datatype, t.data) for t in result.outputs]
    header = orjson.dumps(
        {
            "model": result.model,
            "version": result.model_version,
            "rows": result.rows,
            "tokens": result.tokens,
            "stored_at": result.stored_at,
            "fresh_until": result.fresh_until,
            "stale_until": result.stale_until,
            "outputs": [
                {
                    "name": t.name,
                    "datatype": t.datatype,
                    "shape": list(t.data.shape),
                    "size": len(c),
                }
                for t, c in zip(result.outputs, chunks, strict=True)
            ],
        }
    )
    return b"".join((_MAGIC, _HEADER.pack(len(header)), header, *chunks))


def decode_result(raw: bytes) -> CachedResult:
    """The result ``raw`` holds; ValueError (or KeyError, TypeError) when it is not one."""
    if raw[:4] != _MAGIC:
        raise ValueError("not a cached result")
    (length,) = _HEADER.unpack_from(raw, 4)
    offset = 8 + length
    header = orjson.loads(raw[8:offset])
    view = memoryview(raw)
    outputs = []
    for item in header["outputs"]:
        shape = [int(d) for d in item["shape"]]
        chunk = view[offset : offset + int(item["size"])]
        offset += int(item["size"])
        data = from_bytes(item["name"], item["datatype"], shape, int(np.prod(shape)), chunk)
        data = np.array(data, copy=True)  # own the memory, native byte order...
        data.flags.writeable = False  # ...and read-only, as entries in memory are
        outputs.append(Tensor(item["name"], item["datatype"], data))
    if offset != len(raw):
        raise ValueError("trailing bytes after a cached result")
    return CachedResult(
        model=str(header["model"]),
        model_version=str(header["version"]),
        outputs=tuple(outputs),
        rows=int(header["rows"]),
        tokens=int(header["tokens"]),
        stored_at=float(header["stored_at"]),
        fresh_until=float(header["fresh_until"]),
        stale_until=float(header["stale_until"]),
    )
