"""Requests, errors and latency percentiles per model and version, read from this
replica's request metrics (:class:`PrometheusMetrics`), for ``GET /admin/traffic`` and the
dashboard.

Nothing is added to the request path: a read walks the (model, version, tenant) series the
metrics already keep, reading their plain counts, with no Prometheus collection (a tenant's
read costs a comparison per series, not a scrape). The figures are cumulative since the
process started; a client diffs two reads for a rate, as Prometheus does.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from modelgate.observability.alerting import histogram_quantile
from modelgate.observability.metrics import LATENCY_BUCKETS, PrometheusMetrics

__all__ = ["QUANTILES", "VersionTraffic", "traffic_of"]

#: the percentiles reported, as (name, quantile)
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
_BOUNDS = (*LATENCY_BUCKETS, math.inf)
#: the core's word for a request that succeeded
_OK = "ok"


@dataclass
class VersionTraffic:
    """One model version's traffic (of one tenant, or of every tenant together)."""

    model: str
    version: str
    requests: int = 0
    #: requests that did not succeed, by the core's outcome (``invalid_argument``, ...)
    errors: dict[str, int] = field(default_factory=dict)
    #: latency percentiles in milliseconds (None: no request yet)
    latency_ms: dict[str, float | None] = field(default_factory=dict)
    _buckets: list[int] = field(default_factory=lambda: [0] * len(_BOUNDS), repr=False)


def traffic_of(metrics: PrometheusMetrics, tenant: str | None) -> list[VersionTraffic]:
    """Every model version's traffic of ``tenant`` (None: every tenant), sorted by model
    and version. A tenant past the metrics' ``max_tenants`` is counted as ``_other``."""
    found: dict[tuple[str, str], VersionTraffic] = {}
    for (model, version, label), outcomes, buckets in metrics.served_series():
        if tenant is not None and label != tenant:
            continue
        traffic = found.get((model, version))
        if traffic is None:
            traffic = found[model, version] = VersionTraffic(model, version)
        for status, count in outcomes.items():
            traffic.requests += count
            if status != _OK and count:
                traffic.errors[status] = traffic.errors.get(status, 0) + count
        for i, count in enumerate(buckets):
            traffic._buckets[i] += count
    for traffic in found.values():
        cumulative = [float(sum(traffic._buckets[: i + 1])) for i in range(len(_BOUNDS))]
        for name, q in QUANTILES:
            seen = cumulative[-1] > 0
            value = histogram_quantile(q, _BOUNDS, cumulative) * 1000 if seen else None
            traffic.latency_ms[name] = value
    return [found[key] for key in sorted(found)]
