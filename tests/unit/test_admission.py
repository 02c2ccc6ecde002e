"""Admission: plan limits per tenant and manifest limits per model, refused with details."""

from __future__ import annotations

import pytest

from modelgate.core.admission import Admission, bucket
from modelgate.core.identity import Plan, Principal
from modelgate.core.manifest import parse_manifest
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.limits.memory import MemoryRateLimiter

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
