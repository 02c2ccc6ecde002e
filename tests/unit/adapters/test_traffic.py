"""``/admin/traffic``'s figures (observability/traffic.py): read from the metrics' own
counts, one tenant's or every tenant's, and equal to what Prometheus computes from a scrape."""

from __future__ import annotations

import math

from hypothesis import given, settings
from hypothesis import strategies as st

from modelgate.observability.alerting import histogram_quantile
from modelgate.observability.metrics import PrometheusMetrics
from modelgate.observability.traffic import traffic_of

STATUSES = st.sampled_from(["ok", "ok", "invalid_argument", "internal"])
SECONDS = st.floats(min_value=0, max_value=20, allow_nan=False)
REQUEST = st.tuples(
    st.sampled_from(["a", "b"]), st.sampled_from(["acme", "globex"]), STATUSES, SECONDS
)


@settings(max_examples=60, deadline=None)
@given(st.lists(REQUEST, max_size=40))
def test_each_tenant_reads_its_own_and_an_operator_every_one(
    requests: list[tuple[str, str, str, float]],
) -> None:
    metrics = PrometheusMetrics()
    for model, tenant, status, seconds in requests:
        metrics.served(model, "1", tenant, status, seconds, 1, 0)
    for tenant in ("acme", "globex", None):
        mine = [r for r in requests if tenant is None or r[1] == tenant]
        rows = {(t.model, t.version): t for t in traffic_of(metrics, tenant)}
        assert set(rows) == {(m, "1") for m, *_ in mine}
        for (model, _), row in rows.items():
            own = [r for r in mine if r[0] == model]
            assert row.requests == len(own)
            errors = [r[2] for r in own if r[2] != "ok"]
            assert row.errors == {s: errors.count(s) for s in set(errors)}
            # the percentiles PromQL gives from a scrape of the same histogram
            scraped = _scraped_buckets(metrics, model, tenant)
            bounds = sorted(scraped)
            counts = [scraped[b] for b in bounds]
            for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99)):
                expected = histogram_quantile(q, bounds, counts) * 1000
                assert math.isclose(row.latency_ms[name] or 0.0, expected, abs_tol=1e-9)


def _scraped_buckets(
    metrics: PrometheusMetrics, model: str, tenant: str | None
) -> dict[float, float]:
    found: dict[float, float] = {}
    for family in metrics.latency.collect():
        for sample in family.samples:
            labels = sample.labels
            mine = tenant is None or labels["tenant"] == tenant
            if sample.name.endswith("_bucket") and labels["model"] == model and mine:
                le = float(labels["le"])
                found[le] = found.get(le, 0.0) + sample.value
    return found


def test_nothing_served_reads_empty() -> None:
    assert traffic_of(PrometheusMetrics(), None) == []
    assert traffic_of(PrometheusMetrics(), "acme") == []
