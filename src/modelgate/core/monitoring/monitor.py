"""Model monitoring: live inputs and outputs per version compared with its reference profile.

:class:`Monitor` is an :class:`~modelgate.core.serving.requests.InferenceListener`. ``completed``
adds the request's numeric arrays (at most :data:`MAX_VALUES_PER_ROW` values per row; no copy) to
its version's pending lists. Every :data:`FOLD_EVERY` requests, and before a report, they are folded
into each version's sliding window in one vectorized step: copied into ring buffers of the last
``window_rows`` rows. Nothing is binned or read from disk on the request path (about 5 µs a request
in all, measured in-process). :meth:`Monitor.report` bins the window (rows younger than
``window_s``) on the reference's own edges when asked, and compares: data drift per feature,
prediction drift per output and prediction confidence (:mod:`~modelgate.core.monitoring.reports`;
the windows are in :mod:`~modelgate.core.monitoring.windows`, the statistics in
:mod:`~modelgate.core.monitoring.drift`). A version without ``reference.json`` reports
``no reference``; a window of fewer than ``min_rows`` rows reports ``insufficient data`` and never
drift.

A text-embedding model's embeddings (too wide for the main window) are kept in a smaller
ring per version (:data:`EMBEDDING_ROWS` rows, at most :data:`MAX_EMBEDDING_VALUES` values)
and compared at report time with the profile's ``text`` section
(:mod:`modelgate.core.monitoring.text_drift`), with its token counts. With an
:class:`~modelgate.core.monitoring.anomaly.AnomalyDetector`, a report also counts anomalous
requests.

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
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

import numpy as np

from modelgate.core.monitoring.anomaly import AnomalyDetector
from modelgate.core.monitoring.drift import ReferenceProfile, confidence
from modelgate.core.monitoring.ports import Reading
from modelgate.core.monitoring.reports import (
    Status,
    VersionReport,
    feature_drift,
    prediction_drift,
)
from modelgate.core.monitoring.text_drift import TextDrift, text_drift
from modelgate.core.monitoring.windows import FOLD_EVERY, Array, Fold, Window
from modelgate.core.serving.ports import VersionSource
from modelgate.core.serving.profiles import REFERENCE_FILE, read_reference
from modelgate.core.serving.registry import LoadedVersion, ModelRegistry
from modelgate.core.serving.requests import CompletedInference
from modelgate.errors import ErrorKind, ModelgateError

__all__ = [
    "MAX_VALUES_PER_ROW",
    "REFERENCE_FILE",
    "DriftAlertSource",
    "Monitor",
]

log = logging.getLogger("modelgate.monitoring")

#: wider arrays (embeddings) are not kept in the windows
MAX_VALUES_PER_ROW = 256
#: an embedding model's embeddings are kept in a ring of this many rows per version...
EMBEDDING_ROWS = 1000
#: ...holding at most this many values (8 MiB as float64): fewer rows for wider embeddings
MAX_EMBEDDING_VALUES = 1 << 20


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
        anomalies: AnomalyDetector | None = None,
        embedding_rows: int = EMBEDDING_ROWS,
    ):
        if window_rows < 1 or window_s <= 0 or min_rows < 1:
            raise ValueError("window_rows, window_s and min_rows must be positive")
        self.registry = registry
        self.window_rows = window_rows
        self.window_s = window_s
        self.min_rows = min_rows
        self.embedding_rows = embedding_rows
        self.anomalies = anomalies
        self._clock = clock
        self._windows: dict[tuple[str, str], Window] = {}
        self._embeddings: dict[tuple[str, str], Window] = {}
        #: each loaded version's profile (None: it has none), read again after a reload and
        #: forgotten with the version
        self._profiles: weakref.WeakKeyDictionary[LoadedVersion, ReferenceProfile | None] = (
            weakref.WeakKeyDictionary()
        )
        self._loading: weakref.WeakSet[LoadedVersion] = weakref.WeakSet()
        self._tasks: set[asyncio.Task[None]] = set()
        #: per version, the requests noted since the last fold
        self._folds: dict[tuple[str, str], Fold] = {}
        self._noted = 0

    # -- the request path ----------------------------------------------------------------
    def completed(self, inference: CompletedInference) -> None:
        """Add the request's numeric arrays to its version's pending lists (no copy); every
        :data:`FOLD_EVERY` requests, and before a report, they are folded into the windows
        in one vectorized step. Only arrays are kept, never the request's own objects: the
        garbage collector would have to scan those while they wait."""
        response = inference.response
        key = (response.model_name, response.model_version)
        fold = self._folds.get(key)
        if fold is None:
            fold = self._folds[key] = Fold()
        parts = fold.parts
        rows = 0
        for name, array in inference.inputs.items():
            if _kept(array):
                parts[name].append(array)
                rows = len(array)
        embedding = inference.manifest.embedding is not None
        for tensor in response.outputs:
            data = tensor.data
            if embedding and data.ndim == 2 and data.dtype.kind == "f":
                fold.wide[tensor.name].append(data)
            elif _kept(data):
                parts[tensor.name].append(data)
                rows = len(data)
        if rows:
            fold.firsts.append(fold.rows)
            fold.rows += rows
        self._noted += 1
        if self._noted >= FOLD_EVERY:
            self._fold()

    def _fold(self) -> None:
        folds, self._folds = self._folds, {}
        self._noted = 0
        at = self._clock()
        for key, fold in folds.items():
            for name, chunks in fold.wide.items():
                wide = np.concatenate(chunks)
                ring = self._embeddings.get(key)
                if ring is None:
                    rows = min(self.embedding_rows, MAX_EMBEDDING_VALUES // wide.shape[1])
                    ring = self._embeddings[key] = Window(max(rows, 1))
                ring.add(at, len(wide), {name: wide})
            if not fold.parts:
                continue
            arrays = {name: np.concatenate(chunks) for name, chunks in fold.parts.items()}
            rows = next(iter(arrays.values())).shape[0]
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = Window(self.window_rows)
            window.add(at, rows, arrays, fold.firsts)

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
                self._profiles[item] = await asyncio.to_thread(_read_profile, item)
        self._fold()
        return [self.version_report(item) for item in loaded]

    def version_report(self, loaded: LoadedVersion, window_s: float | None = None) -> VersionReport:
        """The report of one version from its window (the profile must have been read)."""
        self._fold()
        seconds = self.window_s if window_s is None else min(window_s, self.window_s)
        window = self._windows.get((loaded.name, str(loaded.version)))
        rows, requests, data = (
            window.since(self._clock() - seconds) if window is not None else (0, 0, {})
        )
        empty = VersionReport(
            model=loaded.name,
            version=str(loaded.version),
            status="ok",
            drift=False,
            rows=rows,
            requests=requests,
            window_rows=self.window_rows,
            window_seconds=seconds,
            anomalies=self.anomalies.counts(loaded) if self.anomalies is not None else None,
        )
        profile = self._profiles.get(loaded)
        if profile is None or profile.empty:
            return replace(empty, status="no reference")
        if rows < self.min_rows:
            return replace(empty, status="insufficient data")
        features = feature_drift(profile, loaded.manifest, data)
        predictions, scores = prediction_drift(profile, loaded.manifest, data)
        statuses: list[str] = [f.status for f in features]
        statuses += [p.status for p in predictions]
        text = None
        if profile.text is not None:
            text = self._text_drift(loaded, profile, data, seconds)
            statuses.append(text.status)
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
            text=text,
        )

    def _text_drift(
        self,
        loaded: LoadedVersion,
        profile: ReferenceProfile,
        data: Mapping[str, Array],
        seconds: float,
    ) -> TextDrift:
        reference = profile.text
        assert reference is not None
        embeddings = None
        ring = self._embeddings.get((loaded.name, str(loaded.version)))
        if ring is not None and reference.embedding_output is not None:
            _rows, _requests, wide = ring.since(self._clock() - seconds)
            embeddings = wide.get(reference.embedding_output)
        lengths = data.get(reference.length_output) if reference.length_output else None
        return text_drift(reference, lengths, embeddings, self.min_rows)

    # -- alerts --------------------------------------------------------------------------
    def prepare_profiles(self) -> None:
        """Start reading the profile of every loaded version with traffic that has none yet
        (background threads), so that :class:`DriftAlertSource` can read without I/O. The
        requests noted since the last fold are folded first: a model with fewer than
        FOLD_EVERY requests so far has no window until then, and would never be judged."""
        self._fold()
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
            self._profiles[loaded] = await asyncio.to_thread(_read_profile, loaded)
        finally:
            self._loading.discard(loaded)

    def cached_reports(self, window_s: float) -> list[VersionReport]:
        """Reports of the loaded versions with traffic whose profile is already read."""
        self._fold()
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
    scores and labels, not texts or embeddings (which no profile compares yet). An array
    of no rows holds no values: it is kept (it adds nothing)."""
    if array.ndim == 0 or array.dtype.kind not in "biuf":
        return False
    rows: int = array.shape[0]
    return rows == 0 or array.size <= MAX_VALUES_PER_ROW * rows


def _read_profile(loaded: LoadedVersion) -> ReferenceProfile | None:
    """The version's profile; None without one, or (logged, naming no host path) with one
    that is refused (see :func:`~modelgate.core.serving.profiles.read_reference`) or does not
    parse."""
    try:
        document = read_reference(VersionSource(loaded.version, loaded.path, loaded.manifest))
        return None if document is None else ReferenceProfile.parse(document)
    except ModelgateError as exc:
        log.warning("ignoring the reference profile: %s", exc.message)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        log.warning(
            "ignoring the reference profile %r of model '%s' version %d: %s",
            REFERENCE_FILE,
            loaded.name,
            loaded.version,
            exc,
        )
    return None
