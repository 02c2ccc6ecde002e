"""Built-in alerts: threshold rules evaluated in the process, for deployments without
Prometheus (those with it use ``deploy/prometheus/modelgate-rules.yml``).

A rule names a metric, a threshold and a window: "``error_rate`` over the last 300 s is
above 0.05". Every ``interval_s`` the :class:`AlertEvaluator` reads each rule's metric from
an :class:`~modelgate.core.monitoring.ports.AlertSource`, one
:class:`~modelgate.core.monitoring.ports.Reading` per subject (a model), and keeps one alert
per (rule, subject):

- the condition holds (and at least ``min_requests`` stand behind the reading): the alert
  is *pending*; once it has held for ``for_seconds`` it is *firing* and one ``firing``
  event is sent. It is not sent again while it keeps firing (de-duplication);
- the condition no longer holds, or the subject has no reading (no traffic in the window):
  a firing alert sends one ``resolved`` event; a pending one is forgotten.

Metrics come from sources: ``latency_p<NN>`` (e.g. ``latency_p99``, seconds),
``error_rate`` (the share of requests that ended in a server error, :data:`SERVER_ERRORS`)
and ``requests_per_second`` from the metrics the core reports
(:mod:`modelgate.observability.alerting`); ``feature_drift`` and ``prediction_drift`` come
from :class:`~modelgate.core.monitoring.monitor.DriftAlertSource`, one more
:class:`~modelgate.core.monitoring.ports.AlertSource`; ``demographic_parity_difference``,
``demographic_parity_ratio``, ``equalized_odds_difference`` and
``equal_opportunity_difference`` from the background fairness audit
(:class:`~modelgate.fairness.watch.FairnessAlertSource`; the window is the audit's).
Quota use is alerted by :class:`~modelgate.core.admission.quotas.Quotas` itself, at 80% and
100%, once per crossing.

Each process evaluates its own measurements: with ``--workers N`` every worker alerts on
its own share of the traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from modelgate.core.monitoring.ports import AlertSource

__all__ = [
    "DEFAULT_RULES",
    "SERVER_ERRORS",
    "AlertEvaluator",
    "AlertEvent",
    "AlertRule",
    "parse_rules",
]

log = logging.getLogger("modelgate.alerts")

#: request statuses that count as errors in ``error_rate``: the server's failures (a 5xx),
#: not the client's (invalid input, unknown model, rate limits)
SERVER_ERRORS = frozenset({"internal", "unavailable", "overloaded"})


class AlertRule(BaseModel):
    """One threshold rule, as written in ``alert_rules`` (YAML or JSON)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: unique among the rules; names the alert in events
    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")
    #: what is measured: ``latency_p99`` (any ``latency_p<NN>``), ``error_rate``,
    #: ``requests_per_second``
    metric: str = Field(min_length=1, max_length=64)
    threshold: float
    #: fires while the value is above (``>``) or below (``<``) the threshold
    op: Literal[">", "<"] = ">"
    #: the window the value is computed over
    window_seconds: float = Field(default=300.0, gt=0, le=7 * 86400)
    #: how long the condition must hold before the alert fires
    for_seconds: float = Field(default=0.0, ge=0, le=7 * 86400)
    #: only this model (unset: every model, each its own alert)
    model: str | None = None
    #: fewer samples than this in the window is no data (neither fires nor keeps firing)
    min_requests: int = Field(default=1, ge=1)
    severity: Literal["info", "warning", "critical"] = "warning"

    def breached(self, value: float) -> bool:
        return value > self.threshold if self.op == ">" else value < self.threshold


#: the rules used when ``alert_rules`` is not set
DEFAULT_RULES: tuple[AlertRule, ...] = (
    AlertRule(
        name="ModelErrorRateHigh",
        metric="error_rate",
        threshold=0.05,
        window_seconds=300,
        for_seconds=120,
        min_requests=20,
        severity="critical",
    ),
    AlertRule(
        name="ModelLatencyP99High",
        metric="latency_p99",
        threshold=1.0,
        window_seconds=300,
        for_seconds=300,
        min_requests=20,
    ),
    # fairness (docs/fairness.md): from the background audit; the count is labelled rows
    AlertRule(
        name="ModelDemographicParityGap",
        metric="demographic_parity_difference",
        threshold=0.1,
        min_requests=100,
    ),
    AlertRule(
        name="ModelEqualizedOddsGap",
        metric="equalized_odds_difference",
        threshold=0.2,
        min_requests=100,
    ),
)


def parse_rules(raw: Sequence[Mapping[str, Any]]) -> list[AlertRule]:
    """Rules from their written form; ValueError naming the rule and field at fault."""
    rules: list[AlertRule] = []
    for index, item in enumerate(raw):
        try:
            rules.append(AlertRule.model_validate(item))
        except ValidationError as exc:
            raise ValueError(f"alert rule {index + 1}: {exc}") from None
    return rules


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """A state change sent to the notifier: ``firing`` once, then ``resolved`` once."""

    rule: AlertRule
    subject: str
    state: Literal["firing", "resolved"]
    #: the reading at the change (None: resolved because the subject had no data)
    value: float | None
    #: when the condition started to hold (the same in both events of one alert)
    since: datetime
    at: datetime

    def payload(self) -> dict[str, Any]:
        """The webhook body (``type`` is ``alert.firing`` or ``alert.resolved``)."""
        rule = self.rule
        return {
            "type": f"alert.{self.state}",
            "alert": rule.name,
            "state": self.state,
            "severity": rule.severity,
            "model": self.subject,
            "metric": rule.metric,
            "value": self.value,
            "op": rule.op,
            "threshold": rule.threshold,
            "window_seconds": rule.window_seconds,
            "for_seconds": rule.for_seconds,
            "since": self.since.isoformat(),
            "at": self.at.isoformat(),
            # the same for the firing and the resolved event of one alert
            "fingerprint": f"{rule.name}/{self.subject}/{self.since.isoformat()}",
        }


@dataclass(slots=True)
class _Alert:
    since: float
    since_wall: datetime
    firing: bool = False


Notify = Callable[[AlertEvent], None]


class AlertEvaluator:
    """Evaluates ``rules`` against ``sources`` every ``interval_s`` in a background task
    and hands each :class:`AlertEvent` to ``notify`` (which must not block).

    ValueError at construction for a duplicate rule name or a metric no source knows."""

    def __init__(
        self,
        rules: Sequence[AlertRule],
        sources: Sequence[AlertSource],
        notify: Notify,
        *,
        interval_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.rules = tuple(rules)
        self._sources = tuple(sources)
        self._notify = notify
        self._interval = interval_s
        self._clock = clock
        self._wall = wall
        self._source_of: dict[str, AlertSource] = {}
        names: set[str] = set()
        for rule in self.rules:
            if rule.name in names:
                raise ValueError(f"alert rule '{rule.name}' is defined twice")
            names.add(rule.name)
            source = next((s for s in self._sources if s.knows(rule.metric)), None)
            if source is None:
                raise ValueError(f"alert rule '{rule.name}': no source knows '{rule.metric}'")
            self._source_of[rule.metric] = source
        self._alerts: dict[tuple[str, str], _Alert] = {}
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def firing(self) -> list[tuple[str, str]]:
        """(rule name, subject) of every alert firing now."""
        return [key for key, alert in self._alerts.items() if alert.firing]

    def evaluate(self) -> list[AlertEvent]:
        """One evaluation of every rule; the events it sent."""
        now = self._clock()
        for source in self._sources:
            source.advance(now)
        events: list[AlertEvent] = []
        for rule in self.rules:
            readings = self._source_of[rule.metric].read(rule.metric, rule.window_seconds)
            holding: set[str] = set()
            for subject, reading in readings.items():
                if rule.model is not None and subject != rule.model:
                    continue
                if reading.count < rule.min_requests or not rule.breached(reading.value):
                    continue
                holding.add(subject)
                alert = self._alerts.get((rule.name, subject))
                if alert is None:
                    alert = self._alerts[(rule.name, subject)] = _Alert(now, self._wall())
                if not alert.firing and now - alert.since >= rule.for_seconds:
                    alert.firing = True
                    events.append(self._event(rule, subject, "firing", reading.value, alert))
            ended = [k for k in self._alerts if k[0] == rule.name and k[1] not in holding]
            for key in ended:
                alert = self._alerts.pop(key)
                if alert.firing:
                    current = readings.get(key[1])
                    value = current.value if current is not None else None
                    events.append(self._event(rule, key[1], "resolved", value, alert))
        for event in events:
            try:
                self._notify(event)
            except Exception:  # one failed notification must not stop the others
                log.exception("alert notification failed: %s", event.rule.name)
        return events

    def _event(
        self,
        rule: AlertRule,
        subject: str,
        state: Literal["firing", "resolved"],
        value: float | None,
        alert: _Alert,
    ) -> AlertEvent:
        return AlertEvent(rule, subject, state, value, alert.since_wall, self._wall())

    async def start(self) -> None:
        if self._task is None and self.rules:
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name="alerts")

    async def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.evaluate()  # the first one records the baseline of the windows
            except Exception:  # the outermost layer of this task: it must keep running
                log.exception("alerts: evaluation failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self._interval)

    async def close(self) -> None:
        """Stop evaluating. Firing alerts are not resolved: the process is going away."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
