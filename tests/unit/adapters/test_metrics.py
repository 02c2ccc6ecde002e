"""PrometheusMetrics as the core's observer: requests per tenant with a bounded tenant label,
refusals and shed requests reported by admission, blocks by abuse throttling."""

from __future__ import annotations

import pytest

from modelgate.core.access.identity import Plan, Principal
from modelgate.core.admission.abuse import AbuseGuard, AbusePolicy
from modelgate.core.admission.admission import Admission
from modelgate.core.admission.overload import QueueDelay
from modelgate.core.serving.manifest import parse_manifest
from modelgate.errors import ModelgateError
from modelgate.observability.metrics import OTHER_TENANT, PrometheusMetrics
from modelgate.storage.memory.rate_limits import MemoryRateLimiter
from modelgate.storage.memory.strikes import MemoryStrikeStore

MANIFEST = {
    "runtime": "python",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
}


def sample(metrics: PrometheusMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_requests_are_counted_per_tenant_and_ok_reads_success() -> None:
    metrics = PrometheusMetrics()
    metrics.served("m", "1", "acme", "ok", 0.002, 3, 0)
    metrics.served("m", "1", "acme", "ok", 0.004, 2, 17)
    metrics.served("m", "1", "acme", "internal", 0.5, 0, 0)
    labels = {"model": "m", "version": "1", "tenant": "acme"}
    total = "modelgate_inference_requests_total"
    assert sample(metrics, total, **labels, status="success") == 2
    assert sample(metrics, total, **labels, status="internal") == 1
    assert sample(metrics, "modelgate_inference_request_duration_seconds_count", **labels) == 3
    assert sample(metrics, "modelgate_usage_rows_total", model="m", tenant="acme") == 5
    assert sample(metrics, "modelgate_usage_tokens_total", model="m", tenant="acme") == 17


def test_tallied_counters_are_exact_at_every_read_and_added_once() -> None:
    """Requests, usage, HTTP answers and anomalies are tallied in plain integers and added
    to prometheus-client's children when the registry is read: each read sees every event
    so far, and reading twice adds nothing twice."""
    metrics = PrometheusMetrics()
    total = "modelgate_inference_requests_total"
    labels = {"model": "m", "version": "1", "tenant": "acme", "status": "success"}
    for expected in (1, 2, 3):
        metrics.served("m", "1", "acme", "ok", 0.001, 2, 0)
        metrics.http_answer("oip", 200)
        metrics.anomalous("m", "1", "flagged")
        for _ in range(2):  # a second read adds nothing more
            assert sample(metrics, total, **labels) == expected
            assert sample(metrics, "modelgate_usage_rows_total", model="m", tenant="acme") == (
                2 * expected
            )
            assert sample(metrics, "modelgate_http_requests_total", api="oip", status="200") == (
                expected
            )
            assert (
                sample(
                    metrics,
                    "modelgate_anomalous_requests_total",
                    model="m",
                    version="1",
                    action="flagged",
                )
                == expected
            )


def test_the_tenant_label_is_bounded() -> None:
    metrics = PrometheusMetrics(max_tenants=2)
    for tenant in ("t1", "t2", "t3", "t4", "t1"):
        metrics.served("m", "1", tenant, "ok", 0.001, 1, 0)
    metrics.refused("t5", "quota_requests_per_day")
    total = "modelgate_inference_requests_total"
    counted = {"model": "m", "version": "1", "status": "success"}
    assert sample(metrics, total, **counted, tenant="t1") == 2
    assert sample(metrics, total, **counted, tenant=OTHER_TENANT) == 2
    assert sample(metrics, total, **counted, tenant="t3") is None
    refused = "modelgate_refused_requests_total"
    assert sample(metrics, refused, tenant=OTHER_TENANT, reason="quota_requests_per_day") == 1


def test_the_per_version_request_report_is_not_counted_twice() -> None:
    metrics = PrometheusMetrics()
    metrics.version("m", "1").request("success", 0.1)  # VersionStats' view: no tenant
    text = metrics.exposition().decode()
    assert "modelgate_inference_requests_total{" not in text


async def test_admission_reports_refusals_by_tenant_and_reason_and_shedding() -> None:
    metrics = PrometheusMetrics()
    admission = Admission(MemoryRateLimiter(), max_inflight=2, observer=metrics)
    manifest = parse_manifest("m", MANIFEST)
    plan = Plan("p", requests_per_second=0.01, burst=1, max_batch_size=4, priority=3)
    principal = Principal("acme", "k", frozenset({"infer"}), plan)
    await admission.admit(principal, manifest)
    for rows in (1, 9):  # the rate limit, then the batch size
        with pytest.raises(ModelgateError):
            await admission.admit(principal, manifest, rows)
    refused = "modelgate_refused_requests_total"
    assert sample(metrics, refused, tenant="acme", reason="tenant_rate_limit") == 1
    assert sample(metrics, refused, tenant="acme", reason="batch_size") == 1
    # one slot of two is taken; priority 0 may fill half of them
    lowest = Principal("acme", "k", frozenset({"infer"}), Plan("q", priority=0))
    with pytest.raises(ModelgateError):
        await admission.admit(lowest, manifest)
    assert sample(metrics, "modelgate_shed_requests_total", priority="0") == 1
    assert sample(metrics, "modelgate_shed_requests_total", priority="3") == 0
    assert sample(metrics, "modelgate_shed_requests_total", priority="none") == 0


async def test_abuse_blocks_are_counted_once_per_block() -> None:
    metrics = PrometheusMetrics()

    async def no_wait(_: float) -> None:
        pass

    policy = AbusePolicy(slow_after=1, block_after=2, auth_failures_per_address=2)
    guard = AbuseGuard(MemoryStrikeStore(), policy, sleep=no_wait, observer=metrics)
    for _ in range(3):
        await guard.refused_credential("192.0.2.7")
    assert sample(metrics, "modelgate_abuse_blocks_total", kind="address") == 1
    assert sample(metrics, "modelgate_abuse_blocks_total", kind="key") == 0


async def test_fair_shedding_is_visible_per_tenant() -> None:
    """With queue-delay shedding on: who is shed (by tenant), and each tenant's share of
    recent admissions beside its fair share."""
    metrics = PrometheusMetrics()
    clock = [0.0]
    overload = QueueDelay(
        target_s=0.05,
        interval_s=0.1,
        clock=lambda: clock[0],
        count=metrics.shed_for_delay,
        count_tenant=metrics.shed_tenant_for_delay,
    )
    admission = Admission(MemoryRateLimiter(), overload=overload)
    metrics.track(admission=admission)
    manifest = parse_manifest("m", MANIFEST)
    plan = Plan(name="basic", requests_per_second=1000.0)
    heavy = Principal("heavy", "key_h", frozenset({"infer"}), plan)
    light = Principal("light", "key_l", frozenset({"infer"}), plan)
    for _ in range(3):
        await admission.admit(heavy, manifest)
        admission.release(heavy)
    await admission.admit(light, manifest)
    admission.release(light)
    for _ in range(10):
        clock[0] += 0.02
        overload.observe(0.08)
    assert overload.shedding
    assert overload.refuses(heavy) and not overload.refuses(light)
    refused = "modelgate_refused_requests_total"
    assert sample(metrics, refused, tenant="heavy", reason="queue_delay") == 1
    assert sample(metrics, refused, tenant="light", reason="queue_delay") is None
    assert sample(metrics, "modelgate_queue_shed_requests_total", priority="0") == 1
    assert sample(metrics, "modelgate_tenant_admission_share", tenant="heavy") == 0.75
    assert sample(metrics, "modelgate_tenant_fair_share", tenant="light") == 0.5
