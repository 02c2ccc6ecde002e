"""Turning exported rows into what a trainer may see, and saying what was taken out.

Per row, everything but the inputs and the label is dropped (prediction and request ids,
tenant, subject pseudonym, timestamps, the model's own answer); text inputs are redacted
again (``core/governance/redaction.py``: the payload log redacts when it writes, this
catches rows logged before a pattern existed); the columns the manifest marks ``sensitive``
or ``identifier`` (``learning.columns``: a feature name, or an input's name for the whole
input) are removed from the trainer's copy. Rows without logged inputs, with inputs that do
not fit the signature, with a text value longer than ``learning.max_text_chars``, past the
data set's ``learning.max_dataset_bytes`` (the newest rows are kept), or repeating another
row's inputs and label are left out and counted.

The evaluation keeps the full rows of its held-out split and the protected attributes'
groups: modelgate runs both versions on them; no trainer sees them.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelgate.core.governance.redaction import redact_text
from modelgate.core.serving.learning_spec import LearningSpec
from modelgate.core.serving.manifest import ModelManifest
from modelgate.core.serving.tensors import numpy_dtype

__all__ = ["DROPPED_FIELDS", "SanitizedData", "sanitize"]

#: what each exported row carries besides its inputs and label, none of it for a trainer
DROPPED_FIELDS: tuple[str, ...] = (
    "prediction_id",
    "row",
    "tenant_id",
    "request_id",
    "inference_id",
    "subject",
    "model",
    "version",
    "created_at",
    "expires_at",
    "labelled_at",
    "predicted",
    "score",
)


@dataclass
class SanitizedData:
    """The full rows (for evaluation), which columns the trainer keeps, and the report."""

    #: input name -> [rows, ...] as the manifest's datatype (every column)
    inputs: dict[str, np.ndarray[Any, Any]]
    labels: np.ndarray[Any, Any]
    #: protected attribute -> each row's group (as fairness audits record it)
    groups: dict[str, list[str]]
    #: input name -> indices of the columns a trainer may see; an input absent: removed
    kept: dict[str, list[int]]
    report: dict[str, Any] = field(default_factory=dict)
    #: each row's tenant, for the per-tenant held-out split only (no trainer sees it)
    tenants: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def trainer_inputs(self, rows: np.ndarray[Any, Any]) -> dict[str, np.ndarray[Any, Any]]:
        """The trainer's copy of ``rows`` (indices): kept inputs and columns only."""
        return {
            name: np.ascontiguousarray(self.inputs[name][rows][:, columns])
            if self.inputs[name].ndim == 2
            else self.inputs[name][rows]
            for name, columns in self.kept.items()
        }

    def digest(self, rows: np.ndarray[Any, Any]) -> str:
        """SHA-256 of the trainer's copy of ``rows`` and their labels (the lineage's data
        set hash: the same rows give the same hash)."""
        digest = hashlib.sha256()
        for name, array in sorted(self.trainer_inputs(rows).items()):
            digest.update(name.encode() + b"\0" + str(array.shape).encode())
            digest.update(
                array.tobytes() if array.dtype != object else json.dumps(array.tolist()).encode()
            )
        digest.update(np.ascontiguousarray(self.labels[rows]).tobytes())
        return digest.hexdigest()


def sanitize(
    rows: list[dict[str, Any]], manifest: ModelManifest, spec: LearningSpec
) -> SanitizedData:
    removed_inputs = {t.name for t in manifest.inputs if t.name in spec.columns}
    kept: dict[str, list[int]] = {}
    removed_columns: dict[str, dict[str, str]] = {}
    for tensor in manifest.inputs:
        if tensor.name in removed_inputs:
            removed_columns[tensor.name] = {"*": spec.columns[tensor.name]}
            continue
        names = tensor.feature_names or ()
        marks: dict[str, str] = {n: spec.columns[n] for n in names if n in spec.columns}
        width = _width(tensor.shape)
        kept[tensor.name] = [i for i in range(width or 0) if not names or names[i] not in marks]
        if marks:
            removed_columns[tensor.name] = marks
    redactions: Counter[str] = Counter()
    skipped: Counter[str] = Counter()
    seen: set[bytes] = set()
    columns: dict[str, list[Any]] = {t.name: [] for t in manifest.inputs}
    labels: list[int] = []
    tenants: list[str] = []
    total = 0
    for row in reversed(rows):  # the newest first: they are kept when the bytes run out
        inputs = row.get("inputs")
        label = row.get("label")
        if inputs is None:
            skipped["no consented inputs"] += 1
            continue
        if not isinstance(label, int):
            skipped["no label"] += 1
            continue
        if _too_long(manifest, inputs, spec.max_text_chars):
            skipped[f"a text longer than learning.max_text_chars ({spec.max_text_chars})"] += 1
            continue
        values = _row_values(manifest, inputs, redactions)
        if values is None:
            skipped["inputs do not fit the signature"] += 1
            continue
        encoded = json.dumps([values, label], default=str).encode()
        key = hashlib.sha256(encoded).digest()
        if key in seen:
            skipped["duplicate"] += 1
            continue
        if total + len(encoded) > spec.max_dataset_bytes:
            skipped[f"past learning.max_dataset_bytes ({spec.max_dataset_bytes})"] += 1
            continue
        total += len(encoded)
        seen.add(key)
        for name, value in values.items():
            columns[name].append(value)
        labels.append(label)
        tenants.append(str(row.get("tenant_id")))
    for kept_values in (*columns.values(), labels, tenants):
        kept_values.reverse()  # back to the oldest first
    arrays = {
        t.name: np.asarray(columns[t.name], dtype=_dtype(t.datatype)) for t in manifest.inputs
    }
    for tensor in manifest.inputs:
        width = _width(tensor.shape)
        if width is not None and arrays[tensor.name].size == 0:
            arrays[tensor.name] = arrays[tensor.name].reshape(0, width)
    for name in kept:
        if arrays[name].ndim != 2:
            kept[name] = []
    groups: dict[str, list[str]] = {}
    for attribute in manifest.protected_attributes:
        spec_of = manifest.input(attribute.input)
        assert spec_of is not None  # the manifest checks both
        assert spec_of.feature_names is not None
        column = spec_of.feature_names.index(attribute.feature)
        groups[attribute.name] = [_group(v) for v in arrays[attribute.input][:, column].tolist()]
    report = {
        "rows_read": len(rows),
        "rows_kept": len(labels),
        "rows_left_out": dict(skipped),
        "fields_dropped": list(DROPPED_FIELDS),
        "columns_removed": removed_columns,
        "redactions": dict(redactions),
    }
    return SanitizedData(arrays, np.asarray(labels, dtype=np.int64), groups, kept, report, tenants)


def _too_long(manifest: ModelManifest, inputs: dict[str, Any], limit: int) -> bool:
    """Whether a text input of the row holds a value longer than ``limit`` characters
    (checked before the value is copied or redacted)."""
    for tensor in manifest.inputs:
        data = inputs.get(tensor.name)
        if (
            tensor.datatype == "BYTES"
            and isinstance(data, list)
            and any(len(v if isinstance(v, str) else str(v)) > limit for v in data)
        ):
            return True
    return False


def _row_values(
    manifest: ModelManifest, inputs: dict[str, Any], redactions: Counter[str]
) -> dict[str, Any] | None:
    values: dict[str, Any] = {}
    for tensor in manifest.inputs:
        data = inputs.get(tensor.name)
        if not isinstance(data, list):
            return None
        width = _width(tensor.shape)
        if width is not None and len(data) != width:
            return None
        if tensor.datatype == "BYTES":
            cleaned = []
            for value in data:
                redacted = redact_text(str(value))
                redactions.update(redacted.found)
                cleaned.append(redacted.text)
            values[tensor.name] = cleaned if width is not None else cleaned[0]
            continue
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in data):
            return None  # NaN and Infinity are logged as strings; a trainer gets numbers
        values[tensor.name] = data if width is not None else data[0]
    return values


def _width(shape: tuple[int, ...]) -> int | None:
    """Elements per row of a [N, K] input (None for a [N] input)."""
    if len(shape) == 1:
        return None
    width = math.prod(shape[1:])
    return width if width > 0 else None


def _dtype(datatype: str) -> Any:
    return object if datatype == "BYTES" else numpy_dtype(datatype)


def _group(value: Any) -> str:
    """A group as the feedback recorder records it (an integral float without its .0)."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)
