"""A version's input checks worked out once, when it loads, instead of on every request.

:func:`modelgate.core.serving.signature.validate_inputs` used to look each input's spec up by
a linear search of the manifest, walk both shapes in a generator and re-derive the limits per
request. The plan holds, per input name, what the request is compared with (datatype, rank,
the fixed dimensions, whether NaN/Infinity is refused), so a typical request costs one dict
lookup and a few integer compares per input. The error messages are the signature's own,
word for word: clients and tests match them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.request_size import check_rows, check_texts
from modelgate.core.serving.tensors import Tensor
from modelgate.errors import ModelgateError, invalid

__all__ = ["InputCheck", "ValidationPlan"]


@dataclass(frozen=True, slots=True)
class InputCheck:
    """One input of the signature, as the request's tensor is compared with it."""

    datatype: str
    #: the declared shape (for messages) and its rank
    shape: tuple[int, ...]
    rank: int
    #: (position, size) of each dimension that is not -1
    fixed: tuple[tuple[int, int], ...]
    #: NaN and Infinity are refused (the spec's ``allow_nonfinite`` is false)
    finite: bool
    #: a BYTES input, counted against the text limits
    texts: bool


class ValidationPlan:
    """The checks of one manifest's inputs; build it once per loaded version."""

    __slots__ = ("_checks", "_count", "_expected", "_input_names", "manifest", "max_rows")

    def __init__(self, manifest: ModelManifest) -> None:
        self.manifest = manifest
        self.max_rows = manifest.limits.max_rows or 0
        self._checks = {
            spec.name: InputCheck(
                datatype=spec.datatype,
                shape=spec.shape,
                rank=len(spec.shape),
                fixed=tuple((i, d) for i, d in enumerate(spec.shape) if d != -1),
                finite=not spec.allow_nonfinite,
                texts=spec.datatype == "BYTES",
            )
            for spec in manifest.inputs
        }
        self._count = len(manifest.inputs)
        self._input_names = tuple(spec.name for spec in manifest.inputs)
        self._expected = ", ".join(self._input_names)

    def validate(self, tensors: list[Tensor]) -> tuple[dict[str, np.ndarray[Any, Any]], int]:
        """Check inputs against the signature and the manifest's ``limits``; return them by
        name with the batch size (see :func:`~modelgate.core.serving.signature.validate_inputs`)."""
        checks = self._checks
        manifest = self.manifest
        inputs: dict[str, np.ndarray[Any, Any]] = {}
        rows = -1
        texts = 0
        for tensor in tensors:
            name = tensor.name
            check = checks.get(name)
            if check is None:
                raise invalid(
                    f"unexpected input '{name}' for model '{manifest.name}' "
                    f"(it takes: {self._expected})"
                )
            if name in inputs:
                raise invalid(f"input '{name}' is given twice")
            if tensor.datatype != check.datatype:
                raise invalid(
                    f"input '{name}' has datatype {tensor.datatype}, "
                    f"model '{manifest.name}' expects {check.datatype}"
                )
            data = tensor.data
            shape = data.shape
            if len(shape) != check.rank:
                raise self._wrong_shape(name, shape, check)
            for i, want in check.fixed:  # a loop, not any(): no generator per request
                if shape[i] != want:
                    raise self._wrong_shape(name, shape, check)
            if shape:
                if rows not in (-1, shape[0]):
                    raise invalid("inputs disagree on the batch size (first dimension)")
                rows = shape[0]
                if rows > self.max_rows:  # before any pass over the data
                    check_rows(manifest, rows)
            if check.texts:
                texts = check_texts(manifest, name, data, texts)
            if check.finite and data.dtype.kind == "f" and not _all_finite(data):
                raise invalid(
                    f"input '{name}' holds NaN or Infinity, which model "
                    f"'{manifest.name}' does not accept"
                )
            inputs[name] = data
        if len(inputs) != self._count:
            missing = [n for n in self._input_names if n not in inputs]
            raise invalid(f"missing input(s) {', '.join(missing)} for model '{manifest.name}'")
        if rows == 0:
            raise invalid("the batch is empty (first dimension is 0)")
        return inputs, max(rows, 1)

    def _wrong_shape(self, name: str, shape: tuple[int, ...], check: InputCheck) -> ModelgateError:
        return invalid(
            f"input '{name}' has shape {list(shape)}, model "
            f"'{self.manifest.name}' expects {list(check.shape)}"
        )


def _all_finite(data: np.ndarray[Any, Any]) -> bool:
    """No NaN or Infinity in ``data`` (a float array). Counted by ``np.count_nonzero``, a
    plain C loop: for a row of features, ``ndarray.all`` and ``logical_and.reduce`` cost two
    to three times as much in numpy's reduction set-up alone."""
    return int(np.count_nonzero(np.isfinite(data))) == data.size
