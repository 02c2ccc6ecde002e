"""The background fairness audit behind the Prometheus gauges and the built-in alerts
(docs/fairness.md, "Gauges and alerts").

:class:`FairnessWatch` audits each loaded model that names protected attributes (and
records its predictions for feedback), one model at a time, every ``interval_s``, over the
audit window: each audit is one bounded query (at most the auditor's ``max_rows``) and
Fairlearn off the event loop. It keeps each model's last report; a scrape of ``/metrics``
(:mod:`modelgate.observability.fairness_metrics`) and an alert evaluation
(:class:`FairnessAlertSource`) read those, never run an audit.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime

from modelgate.core.monitoring.fairness import FairnessAuditor, FairnessReport
from modelgate.core.monitoring.ports import Reading
from modelgate.core.serving.registry import ModelRegistry
from modelgate.errors import ModelgateError

__all__ = ["FairnessAlertSource", "FairnessWatch"]

log = logging.getLogger("modelgate.fairness")

#: the alert metrics and whether the worst value is the largest (else the smallest)
_ALERT_METRICS: dict[str, bool] = {
    "demographic_parity_difference": True,
    "demographic_parity_ratio": False,
    "equalized_odds_difference": True,
    "equal_opportunity_difference": True,
}


def _utc_now() -> datetime:
    return datetime.now(UTC)


class FairnessWatch:
    """Each audited model's last :class:`FairnessReport` (every tenant's predictions)."""

    def __init__(
        self,
        auditor: FairnessAuditor,
        registry: ModelRegistry,
        *,
        interval_s: float,
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.auditor = auditor
        self.registry = registry
        self.interval_s = interval_s
        self._now = now
        #: model -> its last report and when it was made
        self.reports: dict[str, tuple[FairnessReport, datetime]] = {}

    def audited_models(self) -> list[str]:
        """Loaded models whose serving manifest records predictions with protected
        attributes."""
        names = dict.fromkeys(row["name"] for row in self.registry.index() if row.get("version"))
        found = []
        for name in names:
            loaded = self.registry.versions(name)
            if not loaded:
                continue
            manifest = loaded[-1].manifest
            recorded = manifest.feedback is not None and manifest.feedback.enabled
            if recorded and manifest.protected_attributes:
                found.append(name)
        return found

    async def refresh(self) -> None:
        """Audit every audited model once, one after the other; a model whose audit fails
        keeps its last report (logged)."""
        models = self.audited_models()
        for gone in set(self.reports) - set(models):
            del self.reports[gone]
        for model in models:
            at = self._now()
            try:
                report = await self.auditor.audit(None, model, now=at)
            except ModelgateError as exc:
                log.warning("fairness: %s not audited: %s", model, exc.message)
                continue
            self.reports[model] = (report, at)

    async def run(self) -> None:
        """Refresh every ``interval_s`` until cancelled, the first an interval after start
        (a server starting pays neither the Fairlearn import nor an audit)."""
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception:  # the outermost layer of this task: it must keep running
                log.exception("fairness: background audit failed")

    def loaded_versions(self, model: str) -> set[str]:
        return {str(v.version) for v in self.registry.versions(model)}


class FairnessAlertSource:
    """The built-in alerts' source of ``demographic_parity_difference``,
    ``demographic_parity_ratio``, ``equalized_odds_difference`` and
    ``equal_opportunity_difference``: per model, the worst value (the smallest ratio)
    among its loaded versions' attributes that could be judged, with the rows behind it
    as the reading's count. Readings come from the watch's last audit, whose window is
    the audit window (``fairness_window_seconds``), not the rule's; without a watch (the
    background audit off) there are none."""

    METRICS = frozenset(_ALERT_METRICS)

    def __init__(self, watch: FairnessWatch | None) -> None:
        self.watch = watch

    def knows(self, metric: str) -> bool:
        return metric in self.METRICS

    def advance(self, now: float) -> None:
        return None  # the watch refreshes on its own interval

    def read(self, metric: str, window_s: float) -> Mapping[str, Reading]:
        if self.watch is None:
            return {}
        largest = _ALERT_METRICS[metric]
        readings: dict[str, Reading] = {}
        for model, (report, _) in self.watch.reports.items():
            serving = self.watch.loaded_versions(model)
            for version in report.versions:
                if version.version not in serving:
                    continue
                for attribute in version.attributes:
                    value: float | None = getattr(attribute, metric)
                    if value is None or math.isnan(value):
                        continue  # too few labelled rows to judge, or undefined: no data
                    previous = readings.get(model)
                    worse = previous is None or (
                        value > previous.value if largest else value < previous.value
                    )
                    if worse:
                        readings[model] = Reading(value, attribute.rows)
        return readings
