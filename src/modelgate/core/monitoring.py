"""Model monitoring: live inputs and outputs per version compared with its reference profile.

:class:`Monitor` is an :class:`~modelgate.core.inference.InferenceListener`. ``completed``
only appends references to the request's numeric arrays (at most
:data:`MAX_VALUES_PER_ROW` values per row) to the version's sliding window
(a deque of chunks, trimmed to the last ``window_rows`` rows); nothing is copied, binned or
read from disk on the request path. :meth:`Monitor.report` folds the window (rows younger
than ``window_s``) into histograms on the reference's own edges when asked, and compares:
data drift per feature, prediction drift per output and prediction confidence (the
statistics are in :mod:`modelgate.core.drift`). A version without ``reference.json`` reports
``no reference``; a window of fewer than ``min_rows`` rows reports ``insufficient data``
and never drift.

:class:`DriftAlertSource` hands the same numbers to the built-in alert evaluator as the
metrics ``feature_drift`` (the largest feature PSI) and ``prediction_drift`` (the largest
output PSI), per model.

Each process monitors its own traffic: with ``--workers N`` every worker reports its share.
"""

from __future__ import annotations

import asyncio
import logging
import time
import weakref
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from modelgate.core.alerts import Reading
from modelgate.core.drift import (
    PSI_DRIFT,
    PSI_WATCH,
    Confidence,
    FeatureReference,
    Histogram,
    ReferenceProfile,
    bin_counts,
    chi_square,
    confidence,
    ks_statistic,
    ks_threshold,
    psi,
)
from modelgate.core.inference import CompletedInference
from modelgate.core.manifest import ModelManifest
from modelgate.core.registry import LoadedVersion, ModelRegistry
from modelgate.errors import ErrorKind, ModelgateError

__all__ = [
    "MAX_VALUES_PER_ROW",
    "REFERENCE_FILE",
    "DriftAlertSource",
    "FeatureDrift",
    "Monitor",
    "PredictionDrift",
    "VersionReport",
]

log = logging.getLogger("modelgate.monitoring")

#: the reference profile's file name in a version folder
REFERENCE_FILE = "reference.json"

#: wider arrays (embeddings) are not kept in the windows
MAX_VALUES_PER_ROW = 256

Status = Literal["ok", "watch", "drift", "insufficient data", "no reference"]
Array = np.ndarray[Any, Any]


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


@dataclass(frozen=True, slots=True)
class _Chunk:
    at: float
    rows: int
    arrays: dict[str, Array]


@dataclass(slots=True)
class _Window:
    chunks: deque[_Chunk] = field(default_factory=deque)
    rows: int = 0

    def add(self, chunk: _Chunk, max_rows: int) -> None:
        self.chunks.append(chunk)
        self.rows += chunk.rows
        while self.chunks and self.rows - self.chunks[0].rows >= max_rows:
            self.rows -= self.chunks.popleft().rows

    def since(self, start: float) -> list[_Chunk]:
        return [c for c in self.chunks if c.at >= start]


class Monitor:
    """Sliding windows of every version's traffic, and their drift reports."""

    def __init__(
        self,
        registry: ModelRegistry,
        *,
        window_rows: int = 10_000,
        window_s: float = 3600.0,
        min_rows: int = 100,
        clock: Any = time.monotonic,
    ):
        if window_rows < 1 or window_s <= 0 or min_rows < 1:
            raise ValueError("window_rows, window_s and min_rows must be positive")
        self.registry = registry
        self.window_rows = window_rows
        self.window_s = window_s
        self.min_rows = min_rows
        self._clock = clock
        self._windows: dict[tuple[str, str], _Window] = {}
        #: each loaded version's profile (None: it has none), read again after a reload and
        #: forgotten with the version
        self._profiles: weakref.WeakKeyDictionary[LoadedVersion, ReferenceProfile | None] = (
            weakref.WeakKeyDictionary()
        )
        self._loading: weakref.WeakSet[LoadedVersion] = weakref.WeakSet()
        self._tasks: set[asyncio.Task[None]] = set()

    # -- the request path ----------------------------------------------------------------
    def completed(self, inference: CompletedInference) -> None:
        arrays = {n: a for n, a in inference.inputs.items() if _kept(a)}
        for tensor in inference.response.outputs:
            if _kept(tensor.data):
                arrays[tensor.name] = tensor.data
        if not arrays:
            return
        rows = max(int(a.shape[0]) if a.ndim else 1 for a in arrays.values())
        key = (inference.response.model_name, inference.response.model_version)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
        window.add(_Chunk(self._clock(), rows, arrays), self.window_rows)

    # -- reports -------------------------------------------------------------------------
    async def report(self, model: str, version: str | None = None) -> list[VersionReport]:
        """One report per loaded version of ``model`` (only ``version`` when given).
        NOT_FOUND for a version that is not loaded; UNAVAILABLE when none is."""
        loaded = self.registry.versions(model)
        if version is not None:
            loaded = [v for v in loaded if str(v.version) == version]
            if not loaded:
                raise ModelgateError(
                    ErrorKind.NOT_FOUND, f"version '{version}' of model '{model}' is not loaded"
                )
        if not loaded:
            raise ModelgateError(ErrorKind.UNAVAILABLE, f"model '{model}' is not loaded")
        for item in loaded:
            if item not in self._profiles:
                self._profiles[item] = await asyncio.to_thread(_read_profile, item.path)
        return [self.version_report(item) for item in loaded]

    def version_report(self, loaded: LoadedVersion, window_s: float | None = None) -> VersionReport:
        """The report of one version from its window (the profile must have been read)."""
        seconds = self.window_s if window_s is None else min(window_s, self.window_s)
        window = self._windows.get((loaded.name, str(loaded.version)))
        chunks = window.since(self._clock() - seconds) if window is not None else []
        rows = sum(c.rows for c in chunks)
        empty = VersionReport(
            model=loaded.name,
            version=str(loaded.version),
            status="ok",
            drift=False,
            rows=rows,
            requests=len(chunks),
            window_rows=self.window_rows,
            window_seconds=seconds,
        )
        profile = self._profiles.get(loaded)
        if profile is None or profile.empty:
            return replace(empty, status="no reference")
        if rows < self.min_rows:
            return replace(empty, status="insufficient data")
        features = _feature_drift(profile, loaded.manifest, chunks)
        predictions, scores = _prediction_drift(profile, loaded.manifest, chunks)
        statuses = [f.status for f in features] + [p.status for p in predictions]
        status: Status = (
            "drift" if "drift" in statuses else "watch" if "watch" in statuses else "ok"
        )
        return replace(
            empty,
            status=status,
            drift=status == "drift",
            features=features,
            predictions=predictions,
            confidence={name: confidence(values) for name, values in scores.items()},
        )

    # -- alerts --------------------------------------------------------------------------
    def prepare_profiles(self) -> None:
        """Start reading the profile of every loaded version with traffic that has none yet
        (background threads), so that :class:`DriftAlertSource` can read without I/O."""
        for name, _version in list(self._windows):
            for loaded in self.registry.versions(name):
                if loaded in self._profiles or loaded in self._loading:
                    continue
                self._loading.add(loaded)
                task = asyncio.get_running_loop().create_task(self._load_profile(loaded))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _load_profile(self, loaded: LoadedVersion) -> None:
        try:
            self._profiles[loaded] = await asyncio.to_thread(_read_profile, loaded.path)
        finally:
            self._loading.discard(loaded)

    def cached_reports(self, window_s: float) -> list[VersionReport]:
        """Reports of the loaded versions with traffic whose profile is already read."""
        reports = []
        for name in sorted({name for name, _ in self._windows}):
            for loaded in self.registry.versions(name):
                profile = self._profiles.get(loaded)
                if profile is not None and not profile.empty:
                    reports.append(self.version_report(loaded, window_s))
        return reports


class DriftAlertSource:
    """The built-in alerts' source of ``feature_drift`` and ``prediction_drift``: the
    largest PSI among a model's features (outputs) over the rule's window, per model (the
    worst of its loaded versions). Windows under ``min_rows`` rows are no data."""

    METRICS = frozenset({"feature_drift", "prediction_drift"})

    def __init__(self, monitor: Monitor):
        self.monitor = monitor

    def knows(self, metric: str) -> bool:
        return metric in self.METRICS

    def advance(self, now: float) -> None:
        self.monitor.prepare_profiles()

    def read(self, metric: str, window_s: float) -> Mapping[str, Reading]:
        readings: dict[str, Reading] = {}
        for report in self.monitor.cached_reports(window_s):
            if report.status in ("insufficient data", "no reference"):
                continue
            items = report.features if metric == "feature_drift" else report.predictions
            if not items:
                continue
            value = max(item.psi for item in items)
            previous = readings.get(report.model)
            if previous is None or value > previous.value:
                readings[report.model] = Reading(value, report.rows)
        return readings


def _kept(array: Array) -> bool:
    """Numeric arrays of at most :data:`MAX_VALUES_PER_ROW` values per row: features,
    scores and labels, not texts or embeddings (which no profile compares yet)."""
    if array.dtype.kind not in "biuf" or array.ndim == 0:
        return False
    return bool(array.size <= MAX_VALUES_PER_ROW * max(int(array.shape[0]), 1))


def _read_profile(folder: str) -> ReferenceProfile | None:
    """The version's profile; None without one, or (logged) with one that does not parse."""
    if not folder:
        return None
    path = Path(folder) / REFERENCE_FILE
    try:
        return ReferenceProfile.load(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the reference profile %s: %s", path, exc)
        return None


def _concatenate(chunks: list[_Chunk], name: str) -> Array | None:
    parts = [c.arrays[name] for c in chunks if name in c.arrays]
    return np.concatenate(parts) if parts else None


def _columns(manifest: ModelManifest, chunks: list[_Chunk]) -> dict[str, Array]:
    """Each named feature's live values: a column of a 2-D input with ``feature_names``, or a
    whole input of that name."""
    columns: dict[str, Array] = {}
    for spec in manifest.inputs:
        data = _concatenate(chunks, spec.name)
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
    return "drift" if value > PSI_DRIFT else "watch" if value > PSI_WATCH else "ok"


def _feature_drift(
    profile: ReferenceProfile, manifest: ModelManifest, chunks: list[_Chunk]
) -> list[FeatureDrift]:
    columns = _columns(manifest, chunks)
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
    expected = histogram.extended()
    observed = bin_counts(data, histogram.edges)
    value = psi(expected, observed)
    ks = ks_statistic(expected, observed)
    threshold = ks_threshold(max(n_reference, 1), int(data.size))
    status = "drift" if ks > threshold else _psi_status(value)
    return value, ks, threshold, status


def _prediction_drift(
    profile: ReferenceProfile, manifest: ModelManifest, chunks: list[_Chunk]
) -> tuple[list[PredictionDrift], dict[str, Array]]:
    """Drift of each output the profile describes, and the probability rows (for
    confidence) of each output that has them."""
    drifts: list[PredictionDrift] = []
    scores: dict[str, Array] = {}
    for spec in manifest.outputs:
        data = _concatenate(chunks, spec.name)
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
