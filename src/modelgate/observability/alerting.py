"""The built-in alerts' adapters: their metrics read from :class:`PrometheusMetrics`, their
events logged and POSTed to a webhook, their rules read from settings.

:class:`MetricsAlertSource` computes windows the way Prometheus does, from cumulative
counters: at each evaluation it records every model's request, error and latency-bucket
counts, and a window is the difference between the newest record and the one a window
older. Nothing is added to the request path.
"""

from __future__ import annotations

import logging
import math
import re
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from modelgate.core.monitoring.alerts import (
    DEFAULT_RULES,
    SERVER_ERRORS,
    AlertEvent,
    AlertRule,
    parse_rules,
)
from modelgate.core.monitoring.ports import Reading
from modelgate.notify.webhook import WebhookSender
from modelgate.observability.metrics import PrometheusMetrics

__all__ = ["MetricsAlertSource", "alert_sink", "histogram_quantile", "read_alert_rules"]

log = logging.getLogger("modelgate.alerts")

_QUANTILE = re.compile(r"latency_p(\d{1,2}(?:\.\d+)?)")
_RATES = ("error_rate", "requests_per_second")


@dataclass(frozen=True, slots=True)
class _Totals:
    """One model's cumulative counts at one time."""

    requests: float
    errors: float
    #: cumulative latency-bucket counts, aligned with ``MetricsAlertSource.bounds``
    buckets: tuple[float, ...]


class MetricsAlertSource:
    """An :class:`~modelgate.core.monitoring.ports.AlertSource` over the core's request
    metrics, per model (every version and tenant together): ``latency_p<NN>`` (seconds, interpolated
    in the latency histogram's buckets like PromQL's ``histogram_quantile``), ``error_rate`` (the
    share of requests that ended in a :data:`~modelgate.core.monitoring.alerts.SERVER_ERRORS`
    status) and ``requests_per_second``.

    Records older than ``retention_s`` are dropped: make it the longest rule window plus an
    evaluation interval or two. Until a window's worth is recorded, a window covers what is.
    """

    def __init__(self, metrics: PrometheusMetrics, *, retention_s: float = 3600.0) -> None:
        self._metrics = metrics
        self._retention_s = retention_s
        self._history: deque[tuple[float, dict[str, _Totals]]] = deque()
        #: the latency buckets' upper bounds, +Inf last
        self.bounds: tuple[float, ...] = ()

    def knows(self, metric: str) -> bool:
        if metric in _RATES:
            return True
        match = _QUANTILE.fullmatch(metric)
        return match is not None and 0 < float(match.group(1)) < 100

    def advance(self, now: float) -> None:
        self._history.append((now, self._totals()))
        while len(self._history) > 2 and self._history[1][0] <= now - self._retention_s:
            self._history.popleft()

    def read(self, metric: str, window_s: float) -> Mapping[str, Reading]:
        if len(self._history) < 2:
            return {}
        now, current = self._history[-1]
        base_at, base = self._history[0]
        for at, record in self._history:  # the newest record at least a window old
            if at > now - window_s:
                break
            base_at, base = at, record
        if base_at >= now:
            return {}
        match = _QUANTILE.fullmatch(metric)
        readings: dict[str, Reading] = {}
        for model, totals in current.items():
            before = base.get(model)
            requests = totals.requests - (before.requests if before else 0.0)
            if requests <= 0:
                continue
            if metric == "error_rate":
                errors = totals.errors - (before.errors if before else 0.0)
                readings[model] = Reading(errors / requests, int(requests))
            elif metric == "requests_per_second":
                readings[model] = Reading(requests / (now - base_at), int(requests))
            elif match is not None:
                counts = [
                    n - (before.buckets[i] if before and i < len(before.buckets) else 0.0)
                    for i, n in enumerate(totals.buckets)
                ]
                if counts and counts[-1] > 0:
                    value = histogram_quantile(float(match.group(1)) / 100, self.bounds, counts)
                    readings[model] = Reading(value, int(counts[-1]))
            else:
                raise ValueError(f"unknown metric '{metric}'")
        return readings

    def _totals(self) -> dict[str, _Totals]:
        self._metrics.flush()  # the request counters are tallied until read
        requests: dict[str, float] = {}
        errors: dict[str, float] = {}
        for family in self._metrics.requests.collect():
            for sample in family.samples:
                if sample.name.endswith("_total"):
                    model = sample.labels["model"]
                    requests[model] = requests.get(model, 0.0) + sample.value
                    if sample.labels["status"] in SERVER_ERRORS:
                        errors[model] = errors.get(model, 0.0) + sample.value
        buckets: dict[str, dict[float, float]] = {}
        for family in self._metrics.latency.collect():
            for sample in family.samples:
                if sample.name.endswith("_bucket"):
                    per_model = buckets.setdefault(sample.labels["model"], {})
                    le = float(sample.labels["le"])
                    per_model[le] = per_model.get(le, 0.0) + sample.value
        if buckets and not self.bounds:
            self.bounds = tuple(sorted(next(iter(buckets.values()))))
        return {
            model: _Totals(
                count,
                errors.get(model, 0.0),
                tuple(buckets.get(model, {}).get(le, 0.0) for le in self.bounds),
            )
            for model, count in requests.items()
        }


def histogram_quantile(q: float, bounds: Sequence[float], counts: Sequence[float]) -> float:
    """The ``q`` quantile of a histogram of cumulative ``counts`` per upper bound (the last
    one +Inf), interpolated linearly inside its bucket as PromQL's ``histogram_quantile``
    does; in the +Inf bucket, the highest finite bound."""
    total = counts[-1]
    rank = q * total
    for i, (bound, count) in enumerate(zip(bounds, counts, strict=True)):
        if count >= rank:
            if math.isinf(bound):
                return bounds[i - 1] if i > 0 else 0.0
            lower = bounds[i - 1] if i > 0 else 0.0
            below = counts[i - 1] if i > 0 else 0.0  # < rank <= count: never a zero span
            return lower + (bound - lower) * (rank - below) / (count - below)
    return bounds[-2] if len(bounds) > 1 else 0.0


def alert_sink(webhook: WebhookSender | None) -> Callable[[AlertEvent], None]:
    """Log each alert event, and POST it to the webhook when one is configured (signed,
    retried; ``X-Modelgate-Event: alert.firing`` or ``alert.resolved``)."""

    def notify(event: AlertEvent) -> None:
        rule = event.rule
        value = "no data" if event.value is None else f"{event.value:.4g}"
        log.log(
            logging.WARNING if event.state == "firing" else logging.INFO,
            "alert %s %s for model %s: %s = %s (%s %g over %g s)",
            rule.name, event.state, event.subject, rule.metric, value, rule.op,
            rule.threshold, rule.window_seconds,
        )  # fmt: skip
        if webhook is not None:
            payload = event.payload()
            webhook.send(payload["type"], payload)

    return notify


def read_alert_rules(setting: Path | Sequence[Mapping[str, Any]] | None) -> list[AlertRule]:
    """The rules of the ``alert_rules`` setting: a YAML file (a list of rules, or a mapping
    with a ``rules`` list), the rules themselves, or None for :data:`DEFAULT_RULES`.
    ValueError for a file that is not such a document or a rule that does not validate."""
    if setting is None:
        return list(DEFAULT_RULES)
    if isinstance(setting, Path):
        try:
            document = yaml.safe_load(setting.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"alert rules file {setting}: {exc}") from None
        if isinstance(document, dict):
            document = document.get("rules")
        if document is None:
            return []
        if not isinstance(document, list):
            raise ValueError(f"alert rules file {setting}: expected a list of rules")
        setting = document
    return parse_rules(setting)
