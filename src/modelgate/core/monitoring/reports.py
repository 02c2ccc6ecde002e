"""Drift reports: what :class:`~modelgate.core.monitoring.monitor.Monitor` answers for one
version (:class:`VersionReport`), and how a window of live rows is compared with the
version's reference profile: data drift per feature (:func:`feature_drift`), prediction
drift per output (:func:`prediction_drift`). The statistics themselves are in
:mod:`modelgate.core.monitoring.drift`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from modelgate.core.monitoring.anomaly import AnomalyCounts
from modelgate.core.monitoring.drift import (
    Confidence,
    FeatureReference,
    Histogram,
    ReferenceProfile,
    chi_square,
    compare,
    psi,
    psi_level,
)
from modelgate.core.monitoring.text_drift import TextDrift
from modelgate.core.monitoring.windows import Array
from modelgate.core.serving.manifest import ModelManifest

__all__ = [
    "FeatureDrift",
    "PredictionDrift",
    "Status",
    "VersionReport",
    "feature_drift",
    "prediction_drift",
]

Status = Literal["ok", "watch", "drift", "insufficient data", "no reference"]


@dataclass(frozen=True, slots=True)
class FeatureDrift:
    name: str
    kind: Literal["numeric", "categorical"]
    status: Status
    psi: float
    live_mean: float
    #: numeric features: the binned KS statistic and the threshold it is held to
    ks: float | None = None
    ks_threshold: float | None = None
    #: categorical features: Pearson's statistic against the reference shares, its p-value
    chi_square: float | None = None
    p_value: float | None = None


@dataclass(frozen=True, slots=True)
class PredictionDrift:
    output: str
    status: Status
    psi: float
    #: a probability output: the class whose probability is compared, and its live mean
    class_name: str | None = None
    live_mean: float | None = None
    ks: float | None = None
    ks_threshold: float | None = None
    #: a label output: the share of each class in the window
    frequencies: dict[str, float] | None = None


@dataclass(frozen=True, slots=True)
class VersionReport:
    model: str
    version: str
    status: Status
    #: true when any feature or prediction drifted
    drift: bool
    rows: int
    requests: int
    window_rows: int
    window_seconds: float
    features: list[FeatureDrift] = field(default_factory=list)
    predictions: list[PredictionDrift] = field(default_factory=list)
    confidence: dict[str, Confidence] = field(default_factory=dict)
    #: a text model: drift of its input lengths and embeddings
    text: TextDrift | None = None
    #: a model with an ``anomaly`` section: its anomalous requests since the version loaded
    anomalies: AnomalyCounts | None = None


def _columns(manifest: ModelManifest, window: Mapping[str, Array]) -> dict[str, Array]:
    """Each named feature's live values: a column of a 2-D input with ``feature_names``, or a
    whole input of that name."""
    columns: dict[str, Array] = {}
    for spec in manifest.inputs:
        data = window.get(spec.name)
        if data is None:
            continue
        names = spec.feature_names
        if names and data.ndim == 2 and data.shape[1] == len(names):
            for index, name in enumerate(names):
                columns[name] = data[:, index]
        else:
            columns[spec.name] = data.reshape(data.shape[0], -1)[:, 0]
    return columns


def _psi_status(value: float) -> Status:
    return psi_level(value)


def feature_drift(
    profile: ReferenceProfile, manifest: ModelManifest, window: Mapping[str, Array]
) -> list[FeatureDrift]:
    columns = _columns(manifest, window)
    return [
        _one_feature(reference, columns[reference.name])
        for reference in profile.features
        if reference.name in columns
    ]


def _one_feature(reference: FeatureReference, values: Array) -> FeatureDrift:
    data = values.astype(np.float64)
    mean = float(data.mean())
    if reference.categorical:
        categories = np.asarray(reference.categories)
        known = np.array([np.sum(data == c) for c in categories], dtype=np.float64)
        observed = np.append(known, data.size - known.sum())  # the last: unseen categories
        expected = np.append(np.asarray(reference.frequencies), 0.0)
        value = psi(expected, observed)
        statistic, p_value = chi_square(expected, observed)
        return FeatureDrift(
            reference.name,
            "categorical",
            _psi_status(value),
            value,
            mean,
            chi_square=statistic,
            p_value=p_value,
        )
    value, ks, threshold, status = _compare(reference.histogram, data, reference.count)
    return FeatureDrift(
        reference.name, "numeric", status, value, mean, ks=ks, ks_threshold=threshold
    )


def _compare(
    histogram: Histogram, data: Array, n_reference: int
) -> tuple[float, float, float, Status]:
    return compare(histogram, data, n_reference)


def prediction_drift(
    profile: ReferenceProfile, manifest: ModelManifest, window: Mapping[str, Array]
) -> tuple[list[PredictionDrift], dict[str, Array]]:
    """Drift of each output the profile describes, and the probability rows (for
    confidence) of each output that has them."""
    drifts: list[PredictionDrift] = []
    scores: dict[str, Array] = {}
    for spec in manifest.outputs:
        data = window.get(spec.name)
        if data is None:
            continue
        if spec.labels and data.ndim == 2 and data.shape[1] >= 2:
            scores[spec.name] = data
        if spec.name in profile.probabilities and data.ndim == 2:
            histogram, class_name = profile.probabilities[spec.name]
            labels = spec.labels or ()
            column = labels.index(class_name) if class_name in labels else data.shape[1] - 1
            values = data[:, column].astype(np.float64)
            value, ks, threshold, status = _compare(histogram, values, int(histogram.counts.sum()))
            drifts.append(
                PredictionDrift(
                    spec.name,
                    status,
                    value,
                    class_name=class_name,
                    live_mean=float(values.mean()),
                    ks=ks,
                    ks_threshold=threshold,
                )
            )
        elif spec.name in profile.labels:
            names, shares = profile.labels[spec.name]
            found = data.astype(np.int64).ravel()
            outside = (found < 0) | (found >= len(names))
            counts = np.bincount(
                np.where(outside, len(names), found), minlength=len(names) + 1
            ).astype(np.float64)  # the last: labels outside the reference's classes
            value = psi(np.append(shares, 0.0), counts)
            live = counts[: len(names)] / counts.sum()
            drifts.append(
                PredictionDrift(
                    spec.name,
                    _psi_status(value),
                    value,
                    frequencies={n: float(s) for n, s in zip(names, live, strict=True)},
                )
            )
    return drifts, scores
