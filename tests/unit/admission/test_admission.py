"""Admission: plan limits per tenant and manifest limits per model, refused with details."""

from __future__ import annotations

import pytest

from modelgate.core.access.identity import Plan, Principal
from modelgate.core.admission.admission import Admission, bucket, shed_share
from modelgate.core.serving.manifest import parse_manifest
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.memory.rate_limits import MemoryRateLimiter

MANIFEST = {
    "runtime": "python",
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 2]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}],
}


def _principal(tenant: str, rps: float | None, burst: int | None = None) -> Principal:
    return Principal(
        tenant, "k", frozenset({"infer"}), Plan("p", requests_per_second=rps, burst=burst)
    )


def test_bucket_defaults_to_one_seconds_worth() -> None:
    assert (bucket(5, None).limit, bucket(5, None).window_s) == (5, 1.0)
    assert (bucket(0.5, 10).limit, bucket(0.5, 10).window_s) == (10, 20.0)


async def test_a_tenants_plan_admits_its_burst_then_refuses_with_details() -> None:
    admission = Admission(MemoryRateLimiter())
    manifest = parse_manifest("m", MANIFEST)
    principal = _principal("t1", rps=0.01, burst=3)
    decisions = [await admission.admit(principal, manifest) for _ in range(3)]
    assert [d.remaining for d in decisions if d] == [2, 1, 0]
    with pytest.raises(ModelgateError) as info:
        await admission.admit(principal, manifest)
    error = info.value
    assert error.kind is ErrorKind.RATE_LIMITED and error.retry_after and error.retry_after > 50
    assert error.details["limit"] == 3 and error.details["remaining"] == 0
    # Another tenant has its own bucket.
    assert await admission.admit(_principal("t2", rps=0.01, burst=3), manifest) is not None


async def test_no_limits_means_no_limiter_call() -> None:
    class Exploding(MemoryRateLimiter):
        async def hit(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
            raise AssertionError("the limiter was asked")

    admission = Admission(Exploding())
    assert await admission.admit(_principal("t", rps=None), parse_manifest("m", MANIFEST)) is None
    assert await admission.admit(None, parse_manifest("m", MANIFEST)) is None


async def test_a_models_own_limit_holds_for_every_caller() -> None:
    admission = Admission(MemoryRateLimiter())
    manifest = parse_manifest(
        "m", {**MANIFEST, "rate_limit": {"requests_per_second": 0.01, "burst": 2}}
    )
    await admission.admit(None, manifest)
    await admission.admit(_principal("t1", rps=None), manifest)
    with pytest.raises(ModelgateError) as info:
        await admission.admit(_principal("t2", rps=None), manifest)
    assert "model's" in info.value.message


async def test_a_keys_own_limit_applies_on_top_of_its_tenants_plan() -> None:
    admission = Admission(MemoryRateLimiter())
    manifest = parse_manifest("m", MANIFEST)
    plan = Plan("p", requests_per_second=100)
    limited = Principal("t", "key_a", frozenset({"infer"}), plan, key_rate=(0.01, 2))
    other = Principal("t", "key_b", frozenset({"infer"}), plan)
    for _ in range(2):
        await admission.admit(limited, manifest)
        admission.release(limited)
    with pytest.raises(ModelgateError) as info:
        await admission.admit(limited, manifest)
    assert "API key" in info.value.message and info.value.details["limit"] == 2
    await admission.admit(other, manifest)  # the tenant's other key is not held back


async def test_the_plans_batch_size_is_a_413() -> None:
    admission = Admission(MemoryRateLimiter())
    who = Principal("t", "k", frozenset({"infer"}), Plan("p", max_batch_size=4))
    await admission.admit(who, parse_manifest("m", MANIFEST), rows=4)
    with pytest.raises(ModelgateError) as info:
        await admission.admit(who, parse_manifest("m", MANIFEST), rows=5)
    assert info.value.kind is ErrorKind.PAYLOAD_TOO_LARGE


async def test_concurrency_is_capped_per_tenant_and_released() -> None:
    admission = Admission(MemoryRateLimiter())
    manifest = parse_manifest("m", MANIFEST)
    who = Principal("t", "k", frozenset({"infer"}), Plan("p", max_concurrency=2))
    await admission.admit(who, manifest)
    await admission.admit(who, manifest)
    with pytest.raises(ModelgateError) as info:
        await admission.admit(who, manifest)
    assert info.value.kind is ErrorKind.RATE_LIMITED and info.value.retry_after
    await admission.admit(
        Principal("u", "k2", frozenset({"infer"}), Plan("p", max_concurrency=2)), manifest
    )
    admission.release(who)
    await admission.admit(who, manifest)
    assert admission.inflight == 3  # two of t's, one of u's; the refused one took none


async def test_a_refused_rate_limit_gives_its_slots_back() -> None:
    admission = Admission(MemoryRateLimiter(), max_inflight=10)
    who = Principal(
        "t",
        "k",
        frozenset({"infer"}),
        Plan("p", requests_per_second=0.01, burst=1, max_concurrency=5),
    )
    manifest = parse_manifest("m", MANIFEST)
    await admission.admit(who, manifest)
    for _ in range(3):
        with pytest.raises(ModelgateError):
            await admission.admit(who, manifest)
    assert admission.inflight == 1
    admission.release(who)
    assert admission.inflight == 0


async def test_under_overload_lower_priorities_are_shed_first() -> None:
    assert shed_share(0) == 0.5 and shed_share(9) == 1.0 and shed_share(42) == 1.0
    admission = Admission(MemoryRateLimiter(), max_inflight=10)
    manifest = parse_manifest("m", MANIFEST)
    low = Principal("free", "k1", frozenset({"infer"}), Plan("free", priority=0))
    high = Principal("gold", "k2", frozenset({"infer"}), Plan("gold", priority=9))
    admitted = {"low": 0, "high": 0}
    refusals: list[ModelgateError] = []
    for _ in range(10):  # low fills half the capacity, then is shed
        try:
            await admission.admit(low, manifest)
            admitted["low"] += 1
        except ModelgateError as exc:
            refusals.append(exc)
    assert {(e.kind, e.retry_after) for e in refusals} == {(ErrorKind.OVERLOADED, 1.0)}
    for _ in range(10):  # high still gets the rest
        try:
            await admission.admit(high, manifest)
            admitted["high"] += 1
        except ModelgateError:
            pass
    assert admitted == {"low": 5, "high": 5}


async def test_a_tenants_new_plan_holds_from_its_next_request() -> None:
    """What admission works out once per (tenant, plan) is worked out again for a new plan:
    the rate, the quotas that apply and the shedding tier follow the plan the key now has."""
    admission = Admission(MemoryRateLimiter(), max_inflight=2)
    manifest = parse_manifest("m", MANIFEST)
    before = _principal("t", rps=0.01, burst=5)
    await admission.admit(before, manifest)
    admission.release(before)
    after = Principal("t", "k", frozenset({"infer"}), Plan("p", requests_per_second=0.01, burst=1))
    with pytest.raises(ModelgateError) as info:  # the bucket of 1 has no room left
        await admission.admit(after, manifest)
    assert info.value.details["limit"] == 1
    low = Principal("u", "k", frozenset({"infer"}), Plan("p", priority=0))
    await admission.admit(low, manifest)  # 1 of 2 in flight: the lowest tier's share is full
    with pytest.raises(ModelgateError) as shed:
        await admission.admit(low, manifest)
    assert shed.value.kind is ErrorKind.OVERLOADED
    high = Principal("u", "k", frozenset({"infer"}), Plan("p", priority=9))
    await admission.admit(high, manifest)  # the same tenant on the top tier: all of it
