"""Tensors as the core sees them: an OIP datatype, a shape and a numpy array.

BYTES tensors are numpy object arrays of ``bytes``. Every protocol adapter decodes into
:class:`Tensor` and encodes from it, so datatype rules live here once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelgate.errors import ErrorKind, ModelgateError, invalid

__all__ = [
    "DATATYPES",
    "Parameters",
    "Tensor",
    "datatype_of",
    "element_count",
    "numpy_dtype",
]

Parameters = dict[str, Any]

# OIP datatype -> numpy dtype. BF16 is part of the protocol but has no numpy dtype.
_NUMPY: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}
DATATYPES = frozenset([*_NUMPY, "BF16"])
_BY_NUMPY = {dt: name for name, dt in _NUMPY.items() if name != "BYTES"}


def numpy_dtype(datatype: str) -> np.dtype[Any]:
    """The numpy dtype for an OIP datatype; INVALID_ARGUMENT or UNSUPPORTED otherwise."""
    try:
        return _NUMPY[datatype]
    except KeyError:
        if datatype == "BF16":  # no numpy dtype; no model here declares it either
            raise invalid("datatype BF16 is not supported by this server") from None
        raise invalid(f"unknown datatype '{datatype}'") from None


def datatype_of(array: np.ndarray[Any, Any]) -> str:
    """The OIP datatype of a numpy array (object and string arrays are BYTES)."""
    if array.dtype.kind in "OSU":
        return "BYTES"
    try:
        return _BY_NUMPY[array.dtype]
    except KeyError:
        raise ModelgateError(
            ErrorKind.INTERNAL, f"numpy dtype {array.dtype} has no OIP datatype"
        ) from None


def element_count(shape: list[int] | tuple[int, ...], limit: int) -> int:
    """Validate a request shape and return its element count, before any allocation.

    Rejects negative dimensions and products over ``limit`` (PAYLOAD_TOO_LARGE), so a
    shape like [2**40, 2**40] never reaches numpy.
    """
    count = 1
    for dim in shape:
        if not isinstance(dim, int) or isinstance(dim, bool):
            raise invalid(f"shape {list(shape)!r} must hold integers")
        if dim < 0:
            raise invalid(f"shape {list(shape)!r} has a negative dimension")
        count *= dim
        if count > limit:
            raise ModelgateError(
                ErrorKind.PAYLOAD_TOO_LARGE,
                f"shape {list(shape)!r} has more than the limit of {limit} elements",
            )
    return count


@dataclass(slots=True)
class Tensor:
    """A named tensor. ``data`` already has ``shape`` and the numpy dtype of ``datatype``."""

    name: str
    datatype: str
    data: np.ndarray[Any, Any]
    parameters: Parameters = field(default_factory=dict)

    @property
    def shape(self) -> list[int]:
        return list(self.data.shape)
