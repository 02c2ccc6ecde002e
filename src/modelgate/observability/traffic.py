"""Requests, errors and latency percentiles per model and version, read from this
replica's request metrics (:class:`PrometheusMetrics`), for ``GET /admin/traffic`` and the
dashboard.

Nothing is added to the request path: a read flushes the tallies and walks the counters and
the latency histogram, as a Prometheus scrape does. The figures are cumulative since the
process started; a client diffs two reads for a rate, as Prometheus does.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modelgate.observability.alerting import histogram_quantile
from modelgate.observability.metrics import PrometheusMetrics

__all__ = ["QUANTILES", "VersionTraffic", "traffic_of"]

#: the percentiles reported, as (name, quantile)
QUANTILES = (("p50", 0.5), ("p95", 0.95), ("p99", 0.99))
#: the core's word for a request that succeeded (the metric keeps Triton's)
_SUCCESS = "success"


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


def traffic_of(metrics: PrometheusMetrics, tenant: str | None) -> list[VersionTraffic]:
    """Every model version's traffic of ``tenant`` (None: every tenant), sorted by model
    and version. A tenant past the metrics' ``max_tenants`` is counted as ``_other``."""
    metrics.flush()  # the request counters are tallied until read
    found: dict[tuple[str, str], VersionTraffic] = {}

    def row(labels: dict[str, str]) -> VersionTraffic | None:
        if tenant is not None and labels["tenant"] != tenant:
            return None
        key = (labels["model"], labels["version"])
        if key not in found:
            found[key] = VersionTraffic(*key)
        return found[key]

    for family in metrics.requests.collect():
        for sample in family.samples:
            if not sample.name.endswith("_total"):
                continue
            traffic = row(sample.labels)
            if traffic is None:
                continue
            count = int(sample.value)
            traffic.requests += count
            status = sample.labels["status"]
            if status != _SUCCESS and count:
                traffic.errors[status] = traffic.errors.get(status, 0) + count
    buckets: dict[tuple[str, str], dict[float, float]] = {}
    for family in metrics.latency.collect():
        for sample in family.samples:
            if sample.name.endswith("_bucket") and row(sample.labels) is not None:
                per = buckets.setdefault((sample.labels["model"], sample.labels["version"]), {})
                le = float(sample.labels["le"])
                per[le] = per.get(le, 0.0) + sample.value
    for key, traffic in found.items():
        per = buckets.get(key, {})
        bounds = sorted(per)
        counts = [per[b] for b in bounds]
        for name, q in QUANTILES:
            if counts and counts[-1] > 0:
                traffic.latency_ms[name] = histogram_quantile(q, bounds, counts) * 1000
            else:
                traffic.latency_ms[name] = None
    return [found[key] for key in sorted(found)]
