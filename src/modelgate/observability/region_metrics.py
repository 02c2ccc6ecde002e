"""A gateway's metrics of its regions: the calls sent to each region's nodes, and the
failovers from one region to another (:mod:`modelgate.core.gateway.regions`).

Registered on the same registry as :class:`~modelgate.observability.metrics.PrometheusMetrics`.
Label values are region names the operator chose (validated: a bounded set) and model names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

__all__ = ["RegionMetrics"]


class RegionMetrics:
    """The :class:`~modelgate.core.gateway.regions.RegionObserver` in production."""

    def __init__(self, registry: CollectorRegistry):
        self.calls = Counter(
            "modelgate_region_requests",
            "Inference calls a gateway sent to the nodes of each region, by outcome (ok or "
            "an error kind)",
            ("region", "outcome"),
            registry=registry,
        )
        self.failovers = Counter(
            "modelgate_region_failovers",
            "Times a model version's traffic moved from one region to another (to another "
            "region when its own had no healthy node, and back when one recovered)",
            ("model", "version", "from_region", "to_region"),
            registry=registry,
        )

    def forwarded(self, region: str, outcome: str) -> None:
        self.calls.labels(region, outcome).inc()

    def failover(self, model: str, version: str, origin: str, target: str) -> None:
        self.failovers.labels(model, version, origin, target).inc()
