"""A gateway's metrics of its nodes: breaker states, forwarded calls, retries, node count,
and requests waiting for a node to start (``cold_start_waiting_requests``, read at scrape).

Registered on the same registry as :class:`~modelgate.observability.metrics.PrometheusMetrics`,
so they appear on ``/metrics`` beside the rest. Label values are node ids and model names
the operator chose (bounded by the deployment, not by callers). A node that leaves the
table takes its series with it ``grace_s`` (5 minutes) later, so that scrapes still see
its last counts and breaker state, and a node that comes back in time keeps them: on
Kubernetes node ids are pod names, and a gateway that kept every departed pod's series
would grow without bound.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from modelgate.core.gateway.breaker import STATE_VALUES

__all__ = ["ClusterMetrics"]


class ClusterMetrics:
    """The :class:`~modelgate.core.gateway.ports.ClusterObserver` in production."""

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        grace_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ):
        self._grace_s = grace_s
        self._clock = clock
        #: nodes that left the table, and when
        self._departed: dict[str, float] = {}
        self.breakers = Gauge(
            "modelgate_breaker_state",
            "Circuit breaker of a node (model and version empty) or of a model version on a "
            "node: 0 closed, 1 open, 2 half-open",
            ("node", "model", "version"),
            registry=registry,
        )
        self.calls = Counter(
            "modelgate_node_requests",
            "Inference calls a gateway sent to each node, by outcome (ok or an error kind)",
            ("node", "outcome"),
            registry=registry,
        )
        self.retries = Counter(
            "modelgate_node_retries",
            "Retries on another node: retried, or not retried because the budget was spent "
            "(budget_exhausted) or the deadline was near (deadline)",
            ("outcome",),
            registry=registry,
        )
        for outcome in ("retried", "budget_exhausted", "deadline"):
            self.retries.labels(outcome)
        self.node_count = Gauge(
            "modelgate_nodes", "Nodes in the gateway's table", registry=registry
        )
        self.cold_start_waiting = Gauge(
            "modelgate_cold_start_waiting_requests",
            "Requests waiting for a node to announce their model (the pool scaled to zero)",
            registry=registry,
        )
        #: each node's label values in use, so that its series can go when it does
        self._breaker_labels: dict[str, set[tuple[str, str]]] = {}
        self._call_labels: dict[str, set[str]] = {}

    def breaker(self, node: str, model: str | None, version: str | None, state: str) -> None:
        self._departed.pop(node, None)  # back in the table
        labels = (model or "", version or "")
        self._breaker_labels.setdefault(node, set()).add(labels)
        self.breakers.labels(node, *labels).set(STATE_VALUES[state])  # type: ignore[index]

    def forwarded(self, node: str, outcome: str) -> None:
        self._call_labels.setdefault(node, set()).add(outcome)
        self.calls.labels(node, outcome).inc()

    def departed(self, node: str) -> None:
        self._departed.setdefault(node, self._clock())
        self._forget_departed()

    def _forget_departed(self) -> None:
        now = self._clock()
        for node, since in list(self._departed.items()):
            if now - since < self._grace_s:
                continue
            del self._departed[node]
            for labels in self._breaker_labels.pop(node, ()):
                self.breakers.remove(node, *labels)
            for outcome in self._call_labels.pop(node, ()):
                self.calls.remove(node, outcome)

    def watch_cold_start(self, waiting: Callable[[], int]) -> None:
        """Report ``waiting()`` at each scrape: the demand that scales a pool up from zero."""
        self.cold_start_waiting.set_function(waiting)

    def retried(self, outcome: str) -> None:
        self.retries.labels(outcome).inc()

    def nodes(self, count: int) -> None:
        self.node_count.set(count)
        if self._departed:
            self._forget_departed()
