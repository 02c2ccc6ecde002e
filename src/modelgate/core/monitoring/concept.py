"""Concept drift: how well a version's predictions match the ground truth sent back for
them (``POST /v1/feedback``), compared with the figures measured on its validation set.

The statistics are plain numpy (no scikit-learn at serving time; they are in
:mod:`~modelgate.core.monitoring.classification_metrics`).

:class:`ConceptMonitor` reads the labelled predictions of a window (the last
``window_labels`` labelled rows of a version, of the last ``window_s`` seconds) from the
:class:`~modelgate.core.monitoring.ports.FeedbackStore`, so every replica reports the same figures.
Fewer than ``min_labels`` labelled rows report ``insufficient data``; a version whose card
(or ``reference.json``) has no ``validation_metrics`` is compared with nothing: its
status is ``no reference`` while its figures are still reported.

A drop counts only when it is both larger than a fixed tolerance and larger than what
sampling alone explains for the window's size (a multiple of the standard error):

=========== ================================================ ===============================
status      accuracy                                         AUC
=========== ================================================ ===============================
``drift``   drop > max(:data:`DRIFT_DROP`, 3 SE)              drop > max(:data:`DRIFT_DROP`, 3 SE)
``watch``   drop > max(:data:`WATCH_DROP`, 2 SE)              drop > max(:data:`WATCH_DROP`, 2 SE)
=========== ================================================ ===============================

A Brier score above the validation one by more than max(:data:`WATCH_DROP`, 3 SE) is
``watch`` too. The expected calibration error is reported only (it is biased upwards in
small windows).

:class:`ConceptAlertSource` gives the built-in alerts the metric ``accuracy_drop``
(validation accuracy minus live accuracy, the worst loaded version of each model).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from modelgate.core.monitoring.classification_metrics import (
    accuracy,
    auc_standard_error,
    brier_score,
    expected_calibration_error,
    roc_auc,
)
from modelgate.core.monitoring.ports import FeedbackStore, Reading
from modelgate.core.monitoring.predictions import LabelQuery
from modelgate.core.serving.ports import VersionSource
from modelgate.core.serving.profiles import read_reference
from modelgate.core.serving.registry import LoadedVersion, ModelRegistry
from modelgate.errors import ModelgateError

__all__ = [
    "DRIFT_DROP",
    "WATCH_DROP",
    "ConceptAlertSource",
    "ConceptMonitor",
    "ConceptReport",
    "concept_report",
]

log = logging.getLogger("modelgate.concept")

#: a drop (accuracy, AUC) beyond this, and beyond three standard errors, is drift
DRIFT_DROP = 0.05
#: a drop beyond this, and beyond two standard errors, is worth watching
WATCH_DROP = 0.02

Status = Literal["ok", "watch", "drift", "insufficient data", "no reference"]
Array = np.ndarray[Any, Any]


# -- reports -----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ConceptReport:
    """One version's concept-drift report. Figures are None where they cannot be computed
    (no labels; AUC and calibration need a binary model with scores and both classes)."""

    status: Status
    drift: bool
    #: labelled rows in the window
    labelled: int
    window_labels: int
    window_seconds: float
    min_labels: int
    accuracy: float | None = None
    auc: float | None = None
    brier: float | None = None
    ece: float | None = None
    positive_share: float | None = None
    #: the version's validation figures (its card's, or reference.json's,
    #: ``validation_metrics``)
    validation: Mapping[str, float] | None = None
    accuracy_drop: float | None = None
    auc_drop: float | None = None
    brier_rise: float | None = None
    #: the drops beyond which the status is drift, for this window's size
    accuracy_drift_threshold: float | None = None
    auc_drift_threshold: float | None = None


def concept_report(
    predicted: Array,
    scores: Array | None,
    labels: Array,
    validation: Mapping[str, float] | None,
    *,
    window_labels: int,
    window_seconds: float,
    min_labels: int,
) -> ConceptReport:
    """The report of one window: ``predicted`` (int, -1 where unknown), ``scores`` (the
    positive class's probability, NaN where unknown) and ``labels``, one per labelled row."""
    base = {
        "labelled": len(labels),
        "window_labels": window_labels,
        "window_seconds": window_seconds,
        "min_labels": min_labels,
        "validation": dict(validation) if validation else None,
    }
    if len(labels) < min_labels:
        return ConceptReport(status="insufficient data", drift=False, **base)  # type: ignore[arg-type]
    known = predicted >= 0
    acc = accuracy(predicted[known], labels[known]) if known.any() else None
    auc = brier = ece = positives = None
    binary = bool(np.isin(labels, (0, 1)).all())
    if binary:
        positives = float(np.mean(labels == 1))
    if binary and scores is not None:
        scored = ~np.isnan(scores)
        if scored.sum() >= min_labels:
            s, y = scores[scored], labels[scored]
            auc = roc_auc(s, y)
            brier = brier_score(s, y)
            ece = expected_calibration_error(s, y)
    statuses: list[Status] = []
    figures: dict[str, float | None] = {}
    reference = dict(validation or {})
    if acc is not None and "accuracy" in reference:
        expected = reference["accuracy"]
        n = int(known.sum())
        se = math.sqrt(max(expected * (1 - expected), 0.0) / n)
        drop = expected - acc
        figures["accuracy_drop"] = drop
        figures["accuracy_drift_threshold"] = max(DRIFT_DROP, 3 * se)
        statuses.append(_status(drop, se, 3))
    if auc is not None and "auc" in reference:
        expected = reference["auc"]
        n_pos = int((labels[~np.isnan(scores)] == 1).sum()) if scores is not None else 0
        n_neg = int((~np.isnan(scores)).sum()) - n_pos if scores is not None else 0
        se = auc_standard_error(expected, n_pos, n_neg)
        drop = expected - auc
        figures["auc_drop"] = drop
        figures["auc_drift_threshold"] = max(DRIFT_DROP, 3 * se)
        statuses.append(_status(drop, se, 3))
    if brier is not None and scores is not None and "brier" in reference:
        s = scores[~np.isnan(scores)]
        y = labels[~np.isnan(scores)]
        se = float(np.std((s - y) ** 2) / math.sqrt(len(s)))
        rise = brier - reference["brier"]
        figures["brier_rise"] = rise
        statuses.append("watch" if rise > max(WATCH_DROP, 3 * se) else "ok")
    status: Status
    if not statuses:
        status = "no reference"
    elif "drift" in statuses:
        status = "drift"
    else:
        status = "watch" if "watch" in statuses else "ok"
    return ConceptReport(
        status=status,
        drift=status == "drift",
        accuracy=acc,
        auc=auc,
        brier=brier,
        ece=ece,
        positive_share=positives,
        **base,  # type: ignore[arg-type]
        **figures,  # type: ignore[arg-type]
    )


def _status(drop: float, se: float, sigmas: int) -> Status:
    if drop > max(DRIFT_DROP, sigmas * se):
        return "drift"
    if drop > max(WATCH_DROP, 2 * se):
        return "watch"
    return "ok"


class ConceptMonitor:
    """Concept-drift reports per version, from the labelled predictions in the store.

    ``flush`` (the recorder's) is awaited before a report, so that predictions recorded on
    this replica and not yet written are counted."""

    def __init__(
        self,
        store: FeedbackStore,
        registry: ModelRegistry,
        *,
        window_labels: int = 1000,
        window_s: float = 7 * 86400.0,
        min_labels: int = 100,
        flush: Callable[[], Any] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.registry = registry
        self.window_labels = window_labels
        self.window_s = window_s
        self.min_labels = min_labels
        self._flush = flush
        self._clock = clock
        self._validation: dict[LoadedVersion, Mapping[str, float] | None] = {}
        #: the last readings of each alert window, per model (see ConceptAlertSource)
        self.readings: dict[float, dict[str, Reading]] = {}

    async def report(
        self,
        model: str,
        version: str,
        window_s: float | None = None,
        *,
        tenant_id: str | None = None,
    ) -> ConceptReport:
        """The report of one loaded version (a version not loaded has no validation
        figures to compare with: its status is ``no reference``), from every tenant's
        labelled predictions, or only ``tenant_id``'s."""
        if self._flush is not None:
            await self._flush()
        seconds = self.window_s if window_s is None else min(window_s, self.window_s)
        since = datetime.fromtimestamp(self._clock() - seconds, UTC)
        found = await self.store.labelled(
            LabelQuery(
                model=model,
                version=version,
                tenant_id=tenant_id,
                since=since,
                newest_first=True,
                limit=self.window_labels,
            )
        )
        predicted = np.array(
            [-1 if f.prediction.predicted is None else f.prediction.predicted for f in found],
            dtype=np.int64,
        )
        scores = np.array(
            [math.nan if f.prediction.score is None else f.prediction.score for f in found],
            dtype=np.float64,
        )
        labels = np.array([f.label for f in found], dtype=np.int64)
        return concept_report(
            predicted,
            scores if len(found) and not np.isnan(scores).all() else None,
            labels,
            await self.validation(model, version),
            window_labels=self.window_labels,
            window_seconds=seconds,
            min_labels=self.min_labels,
        )

    async def validation(self, model: str, version: str) -> Mapping[str, float] | None:
        """The version's validation figures: its card's ``validation_metrics``, else those
        of its ``reference.json``; None when it is not loaded or has neither."""
        loaded = next((v for v in self.registry.versions(model) if str(v.version) == version), None)
        if loaded is None:
            return None
        if loaded not in self._validation:
            found = _numbers(loaded.manifest.card.get("validation_metrics"))
            if found is None and loaded.path:
                found = await asyncio.to_thread(_reference_metrics, loaded)
            self._validation[loaded] = found
        return self._validation[loaded]

    async def refresh_readings(self, windows: set[float]) -> None:
        """Compute ``accuracy_drop`` per model for each alert window (the alert source
        reads the results without I/O)."""
        readings: dict[float, dict[str, Reading]] = {}
        versions = [
            loaded
            for name in {row["name"] for row in self.registry.index()}
            for loaded in self.registry.versions(name)
            if loaded.manifest.feedback is not None and loaded.manifest.feedback.enabled
        ]
        for window in windows:
            per_model: dict[str, Reading] = {}
            for loaded in versions:
                report = await self.report(loaded.name, str(loaded.version), window)
                if report.accuracy_drop is None:
                    continue
                previous = per_model.get(loaded.name)
                if previous is None or report.accuracy_drop > previous.value:
                    per_model[loaded.name] = Reading(report.accuracy_drop, report.labelled)
            readings[window] = per_model
        self.readings = readings


class ConceptAlertSource:
    """The built-in alerts' source of ``accuracy_drop``: a model's validation accuracy
    minus its live accuracy over the rule's window (at most the concept window), the worst
    of its loaded versions; versions under ``min_labels`` labelled rows are no data.

    Readings are computed in the background at each evaluation (store queries cannot run
    in ``read``), so a reading is one evaluation interval old."""

    METRICS = frozenset({"accuracy_drop"})

    def __init__(self, monitor: ConceptMonitor) -> None:
        self.monitor = monitor
        self._windows: set[float] = set()
        self._task: asyncio.Task[None] | None = None

    def knows(self, metric: str) -> bool:
        return metric in self.METRICS

    def advance(self, now: float) -> None:
        if not self._windows or (self._task is not None and not self._task.done()):
            return
        self._task = asyncio.get_running_loop().create_task(self._refresh(set(self._windows)))

    async def _refresh(self, windows: set[float]) -> None:
        # the outermost layer of this task: a failed refresh keeps the last readings
        try:
            await self.monitor.refresh_readings(windows)
        except Exception as exc:
            log.warning("concept: accuracy readings not refreshed: %r", exc)

    def read(self, metric: str, window_s: float) -> Mapping[str, Reading]:
        self._windows.add(window_s)
        return self.monitor.readings.get(window_s, {})


def _numbers(value: object) -> dict[str, float] | None:
    if not isinstance(value, Mapping):
        return None
    found = {
        str(k): float(v)
        for k, v in value.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }
    return found or None


def _reference_metrics(loaded: LoadedVersion) -> dict[str, float] | None:
    """The validation figures of the version's reference profile; None without one, or
    (logged, naming no host path) when it is refused (see
    :func:`~modelgate.core.serving.profiles.read_reference`)."""
    try:
        document = read_reference(VersionSource(loaded.version, loaded.path, loaded.manifest))
    except ModelgateError as exc:
        log.warning("concept: validation figures not read: %s", exc.message)
        return None
    return None if document is None else _numbers(document.get("validation_metrics"))
