"""Reference profiles: what a version's training data looked like, as its ``reference.json``.

A version's `reference.json` records what its inputs and outputs looked like at training time, so
that drift, anomaly and data-quality checks at serving time have something to compare live
traffic with. The demo models write theirs when they are built (``modelgate.demo``); any other
model gets one from :func:`profile_of` (``modelgate profile``: the version is run over a sample
of its training data). The column functions are generic over a numpy array plus column names.
At serving time a version's profile is read by :func:`read_reference`, found as its artifact
is (:mod:`modelgate.core.serving.artifacts`).

Shapes of the JSON produced (all numbers plain floats or ints):

- column: `{count, mean, std, min, max, quantiles: {levels, values}, histogram: {edges, counts}}`
  plus `categories: {values, counts, frequencies}` for categorical columns.
- probabilities: `{mean, histogram}` with the histogram over [0, 1].
- labels: `{values, counts, frequencies}` keyed by class name.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from modelgate.core.serving.artifacts import artifact_path
from modelgate.core.serving.manifest import ModelManifest
from modelgate.errors import invalid

if TYPE_CHECKING:
    from modelgate.core.serving.ports import VersionSource

#: the version's profile, in its version folder
REFERENCE_FILE = "reference.json"

QUANTILE_LEVELS: tuple[float, ...] = (0.0, 0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0)
HISTOGRAM_BINS = 20

JsonObject = dict[str, Any]


def read_reference(source: VersionSource) -> JsonObject | None:
    """The version's ``reference.json``; None when its version folder has none (blocking
    I/O). It is found as the version's artifact is
    (:func:`~modelgate.core.serving.artifacts.artifact_path`): in the version folder, resolving,
    symlinks followed, inside it or its model's folder. INVALID_ARGUMENT, naming the file,
    the model and the version and never a path on the host, when it resolves elsewhere, is
    not a file, cannot be read or is not a JSON object; its readers log that and go on
    without a profile (the profile is optional, unlike the artifact)."""
    if not source.path:
        return None
    candidate = Path(source.path) / REFERENCE_FILE
    where = (
        f"reference profile {REFERENCE_FILE!r} of model '{source.manifest.name}' "
        f"version {source.version}"
    )
    try:
        if not candidate.exists() and not candidate.is_symlink():
            return None
    except OSError:  # its message names the host path
        raise invalid(f"{where} cannot be read") from None
    path = artifact_path(source, REFERENCE_FILE, "reference profile")
    try:
        document = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise invalid(f"{where} cannot be read: {exc.strerror or type(exc).__name__}") from None
    except ValueError as exc:  # JSON's and UTF-8's messages name a position, not the file
        raise invalid(f"{where} is not JSON: {exc}") from None
    if not isinstance(document, dict):
        raise invalid(f"{where} is not a JSON object")
    return document


def histogram(
    values: NDArray[Any], bins: int = HISTOGRAM_BINS, value_range: tuple[float, float] | None = None
) -> JsonObject:
    """Equal-width histogram; a constant column gets one unit-wide range so edges stay distinct."""
    data = np.asarray(values, dtype=np.float64)
    if value_range is None:
        low, high = float(np.min(data)), float(np.max(data))
        if low == high:
            low, high = low - 0.5, high + 0.5
        value_range = (low, high)
    counts, edges = np.histogram(data, bins=bins, range=value_range)
    return {"edges": [float(e) for e in edges], "counts": [int(c) for c in counts]}


def categories(values: NDArray[Any]) -> JsonObject:
    """Counts and frequencies of each distinct value, sorted by value."""
    distinct, counts = np.unique(np.asarray(values), return_counts=True)
    total = int(counts.sum())
    return {
        "values": [_plain(v) for v in distinct],
        "counts": [int(c) for c in counts],
        "frequencies": [float(c) / total for c in counts],
    }


def column_statistics(values: NDArray[Any], categorical: bool = False) -> JsonObject:
    """Summary of one numeric column: moments, quantiles and a histogram."""
    data = np.asarray(values, dtype=np.float64)
    if data.ndim != 1 or data.size == 0:
        raise ValueError(f"expected a non-empty 1-D column, got shape {data.shape}")
    stats: JsonObject = {
        "count": int(data.size),
        "mean": float(np.mean(data)),
        "std": float(np.std(data)),
        "min": float(np.min(data)),
        "max": float(np.max(data)),
        "quantiles": {
            "levels": list(QUANTILE_LEVELS),
            "values": [float(q) for q in np.quantile(data, QUANTILE_LEVELS)],
        },
        "histogram": histogram(data),
    }
    if categorical:
        stats["categories"] = categories(data.astype(np.int64))
    return stats


def feature_statistics(
    features: NDArray[Any], names: Sequence[str], categorical: Collection[str] = ()
) -> dict[str, JsonObject]:
    """Column statistics for a 2-D array, keyed by column name in column order."""
    matrix = np.asarray(features)
    if matrix.ndim != 2 or matrix.shape[1] != len(names):
        raise ValueError(f"expected shape [n, {len(names)}], got {matrix.shape}")
    return {
        name: column_statistics(matrix[:, index], categorical=name in categorical)
        for index, name in enumerate(names)
    }


def probability_statistics(probabilities: NDArray[Any]) -> JsonObject:
    """Distribution of a probability output, binned over [0, 1] so versions compare directly."""
    data = np.asarray(probabilities, dtype=np.float64)
    return {
        "mean": float(np.mean(data)),
        "histogram": histogram(data, value_range=(0.0, 1.0)),
    }


def label_frequencies(labels: NDArray[Any], class_names: Sequence[str]) -> JsonObject:
    """Counts and frequencies of integer class labels, including classes that never occur."""
    data = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(data, minlength=len(class_names))
    if counts.size > len(class_names):
        raise ValueError(f"label {counts.size - 1} has no class name")
    total = int(counts.sum())
    return {
        "values": list(class_names),
        "counts": [int(c) for c in counts],
        "frequencies": [float(c) / total if total else 0.0 for c in counts],
    }


def _plain(value: Any) -> int | float | str:
    """A numpy scalar as the matching JSON-friendly Python scalar."""
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return str(value)


def profile_of(
    manifest: ModelManifest,
    inputs: Mapping[str, NDArray[Any]],
    outputs: Mapping[str, NDArray[Any]],
    *,
    categorical: Collection[str] = (),
    validation_metrics: Mapping[str, float] | None = None,
    source: str = "",
) -> JsonObject:
    """The ``reference.json`` of a version from a sample of its training inputs and the
    version's own outputs on them (batch dimension first, every array the same rows).

    Features: each column of a 2-D input with ``feature_names``, else the input as one
    feature (all its values). Outputs: a probability output (2-D, with ``labels``) gives the
    histogram of its last class (binary: the positive one); an integer output gives label
    frequencies named after those labels (or the class numbers). Inputs and outputs of
    other kinds (text, wide embeddings) are left out. ValueError for an empty sample or
    arrays that do not agree."""
    rows = {len(a) for a in (*inputs.values(), *outputs.values())}
    if len(rows) != 1 or 0 in rows:
        raise ValueError(f"every array needs the same number of rows, and some: {sorted(rows)}")
    features: dict[str, JsonObject] = {}
    for spec in manifest.inputs:
        data = inputs.get(spec.name)
        if data is None or np.asarray(data).dtype.kind not in "biuf":
            continue
        values = np.asarray(data, dtype=np.float64)
        names = spec.feature_names
        if names and values.ndim == 2 and values.shape[1] == len(names):
            features.update(feature_statistics(values, names, categorical=categorical))
        else:
            features[spec.name] = column_statistics(
                values.reshape(-1), categorical=spec.name in categorical
            )
    class_names: Sequence[str] = ()
    for spec in manifest.outputs:
        if spec.labels:
            class_names = spec.labels
    profile_outputs: dict[str, JsonObject] = {}
    for spec in manifest.outputs:
        data = outputs.get(spec.name)
        if data is None:
            continue
        values = np.asarray(data)
        if values.dtype.kind == "f" and values.ndim == 2 and spec.labels and values.shape[1] >= 2:
            profile_outputs[spec.name] = {
                "class": spec.labels[-1],
                **probability_statistics(values[:, -1]),
            }
        elif values.dtype.kind in "iu" and values.ndim == 1:
            top = int(values.max()) + 1 if values.size else 0
            classes = list(class_names) if len(class_names) >= top else [str(i) for i in range(top)]
            if values.size and int(values.min()) >= 0:
                profile_outputs[spec.name] = label_frequencies(values, classes)
    return {
        "model": manifest.name,
        "source": source,
        "n_rows": rows.pop(),
        "features": features,
        "outputs": profile_outputs,
        **({"validation_metrics": dict(validation_metrics)} if validation_metrics else {}),
    }
