"""Prometheus metrics of deployments: the serving shares, and shadow comparisons.

Registered on the process's :class:`~modelgate.observability.metrics.PrometheusMetrics`
registry, so ``/metrics`` shows them with the rest:

- ``deployment_weight_percent{model,version,role}``: each serving arm's share of the
  traffic; role is ``default``, ``split``, ``baseline`` or ``canary``;
- ``deployment_info{model,stage}``: 1 for the model's current stage (``stable``,
  ``split``, ``canary-2of3``);
- ``shadow_requests_total{model,version,shadow_version,outcome}``: shadow copies by
  outcome (``ok``, ``error``, ``dropped``);
- ``shadow_compared_rows_total`` and ``shadow_agreed_rows_total`` (same labels but
  outcome): label outputs compared row by row, and the rows that agreed;
- ``shadow_abs_diff_total`` and ``shadow_compared_elements_total``: the sum of absolute
  differences of score outputs and the elements summed (their ratio: the mean absolute
  difference);
- ``shadow_request_duration_seconds{model,shadow_version}``: the shadow's latency.
"""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

__all__ = ["PrometheusDeploymentMetrics"]

_LATENCY = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class PrometheusDeploymentMetrics:
    """The :class:`~modelgate.core.traffic.ports.DeploymentObserver` backed by prometheus-client."""

    def __init__(self, registry: CollectorRegistry) -> None:
        pair = ("model", "version", "shadow_version")
        self.weight = Gauge(
            "modelgate_deployment_weight_percent",
            "Share of a model's traffic per serving version",
            ("model", "version", "role"),
            registry=registry,
        )
        self.info = Gauge(
            "modelgate_deployment_info",
            "1 for each model's current deployment stage",
            ("model", "stage"),
            registry=registry,
        )
        self.requests = Counter(
            "modelgate_shadow_requests",
            "Shadow copies by outcome",
            (*pair, "outcome"),
            registry=registry,
        )
        self.rows = Counter(
            "modelgate_shadow_compared_rows",
            "Rows of label outputs compared",
            pair,
            registry=registry,
        )
        self.agreed = Counter(
            "modelgate_shadow_agreed_rows",
            "Rows whose label outputs agreed",
            pair,
            registry=registry,
        )
        self.abs_diff = Counter(
            "modelgate_shadow_abs_diff",
            "Sum of absolute differences of score outputs",
            pair,
            registry=registry,
        )
        self.elements = Counter(
            "modelgate_shadow_compared_elements",
            "Score elements compared",
            pair,
            registry=registry,
        )
        self.latency = Histogram(
            "modelgate_shadow_request_duration_seconds",
            "Latency of shadow copies",
            ("model", "shadow_version"),
            buckets=_LATENCY,
            registry=registry,
        )
        self._arms: dict[str, list[tuple[str, str]]] = {}
        self._stages: dict[str, str] = {}

    def deployment(self, model: str, arms: Sequence[tuple[int, int, str]], stage: str) -> None:
        for label, role in self._arms.pop(model, []):
            self.weight.remove(model, label, role)
        old = self._stages.pop(model, None)
        if old is not None:
            self.info.remove(model, old)
        if not arms:
            return
        self._arms[model] = [(str(v), role) for v, _, role in arms]
        for number, percent, role in arms:
            self.weight.labels(model, str(number), role).set(percent)
        self._stages[model] = stage
        self.info.labels(model, stage).set(1)

    def shadowed(
        self,
        model: str,
        version: str,
        shadow_version: str,
        outcome: str,
        seconds: float,
        rows: int,
        agreed: int,
        abs_diff: float,
        elements: int,
    ) -> None:
        # off the request path (a background task), so no cache of label children
        self.requests.labels(model, version, shadow_version, outcome).inc()
        if outcome != "ok":
            return
        self.latency.labels(model, shadow_version).observe(seconds)
        if rows:
            self.rows.labels(model, version, shadow_version).inc(rows)
            self.agreed.labels(model, version, shadow_version).inc(agreed)
        if elements:
            self.abs_diff.labels(model, version, shadow_version).inc(abs_diff)
            self.elements.labels(model, version, shadow_version).inc(elements)
