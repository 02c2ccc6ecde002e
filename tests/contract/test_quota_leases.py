"""Quotas charged from reserved slices (``LeasingQuotaCounter`` on ``RedisQuotaLeases``),
two "replicas" against the real Redis server, under a key prefix of the test's own
(deleted afterwards). The replicas' clock is a manual one: the tests advance it."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.boot.stores import build_quota_counter
from modelgate.core.admission.ports import QuotaCharge, QuotaResult
from modelgate.limits.quota_leases import LeasingQuotaCounter, Reservation, Slice
from modelgate.limits.quotas import FallbackQuotaCounter
from modelgate.settings import Settings
from modelgate.storage.memory.quotas import MemoryQuotaCounter
from modelgate.storage.redis.client import create_redis_client
from modelgate.storage.redis.quota_leases import RedisQuotaLeases
from modelgate.storage.redis.quotas import RedisQuotaCounter
from modelgate.testing import ManualClock
from tests.conftest import REDIS_URL

DAY_S = 86_400.0


@dataclass
class CountingLeases:
    inner: RedisQuotaLeases
    reserves: int = 0
    charges: int = 0

    async def reserve(self, slices: Sequence[Slice]) -> Reservation | None:
        self.reserves += 1
        return await self.inner.reserve(slices)

    async def charge(self, charges: Sequence[QuotaCharge]) -> QuotaResult | None:
        self.charges += 1
        return await self.inner.charge(charges)

    async def close(self) -> None:
        await self.inner.close()


def client() -> object:
    return create_redis_client(REDIS_URL, connect_timeout_s=1.0, read_timeout_s=2.0)


def replica(prefix: str, clock: ManualClock) -> tuple[LeasingQuotaCounter, CountingLeases]:
    source = CountingLeases(RedisQuotaLeases(client(), prefix))  # type: ignore[arg-type]
    return LeasingQuotaCounter(source, share=0.05, lease_s=1.0, clock=clock), source


def requests(limit: int, seed: int | None = 0) -> QuotaCharge:
    return QuotaCharge("quota:t:requests:d", 1, limit, DAY_S, seed)


async def settle(counter: LeasingQuotaCounter) -> None:
    for _ in range(1000):
        if not counter._tasks:
            return
        await asyncio.sleep(0.001)


async def test_two_replicas_charge_exactly_the_quota_and_each_unit_once(
    redis_prefix: str,
) -> None:
    clock = ManualClock()
    replicas = [replica(redis_prefix, clock) for _ in range(2)]
    used: list[int] = []
    refused = [0, 0]
    try:
        for i in range(2400):
            counter = replicas[i % 2][0]
            result = await counter.charge([requests(1000)])
            assert result is not None
            if result.allowed:
                used.append(result.used[0])
            else:
                refused[i % 2] += 1
            await settle(counter)
    finally:
        for counter, _ in replicas:
            await counter.close()

    # never over the quota, and each unit number seen once: the 80% and 100% alerts
    # (crossings of a unit number) are sent exactly once
    assert sorted(used) == list(range(1, 1001))
    assert refused[0] > 0 and refused[1] > 0
    # slices of 50 instead of a round trip per admitted request (a refusal asks Redis)
    assert sum(source.reserves for _, source in replicas) - sum(refused) <= 1000 // 25 + 8
    assert sum(source.charges for _, source in replicas) == 0


async def test_a_missing_counter_asks_for_its_seed_first(redis_prefix: str) -> None:
    clock = ManualClock()
    counter, _ = replica(redis_prefix, clock)
    try:
        assert await counter.charge([requests(1000, seed=None)]) is None
        seeded = await counter.charge([requests(1000, seed=700)])
    finally:
        await counter.close()

    assert seeded is not None and seeded.allowed and seeded.used == (701,)


async def test_a_token_quota_exhausted_elsewhere_is_seen_within_the_lease_time(
    redis_prefix: str,
) -> None:
    clock = ManualClock()
    counter, _ = replica(redis_prefix, clock)
    tokens = QuotaCharge("quota:t:tokens:d", 0, 100, DAY_S, 0)
    elsewhere = RedisQuotaCounter(client(), redis_prefix)  # type: ignore[arg-type]
    try:
        assert (await counter.charge([requests(1000), tokens])).allowed  # type: ignore[union-attr]
        # another replica adds the tokens its requests used, after the fact
        await elsewhere.charge([QuotaCharge("quota:t:tokens:d", 100, None, DAY_S, 0)])
        clock.now += 0.4
        still = await counter.charge([requests(1000), tokens])
        clock.now += 0.7  # past the lease time: the view is read again
        refused = await counter.charge([requests(1000), tokens])
    finally:
        await counter.close()
        await elsewhere.close()

    assert still is not None and still.allowed
    assert refused is not None and not refused.allowed and refused.refused == 1
    assert refused.used[1] == 100


async def test_a_refusal_leaves_the_units_held_here_to_smaller_charges(
    redis_prefix: str,
) -> None:
    clock = ManualClock()
    first, _ = replica(redis_prefix, clock)
    second, _ = replica(redis_prefix, clock)

    def rows(amount: int) -> list[QuotaCharge]:
        return [QuotaCharge("quota:t:rows:d", amount, 100, DAY_S, 0)]

    try:
        assert (await first.charge(rows(3))).allowed  # type: ignore[union-attr]
        await settle(first)  # it holds 2 of a slice of 5 (not below half: nothing more)
        while (await second.charge(rows(1))).allowed:  # type: ignore[union-attr]
            await settle(second)
        big = await first.charge(rows(8))
    finally:
        await first.close()
        await second.close()

    assert big is not None and not big.allowed
    held = 100 - big.used[0]
    assert held == 2  # reported as remaining: a smaller charge still passes here
    # (and so the refusal memo, which notes a quota with nothing left, does not note it)


async def test_calls_without_a_limit_go_to_redis_as_before(redis_prefix: str) -> None:
    clock = ManualClock()
    counter, source = replica(redis_prefix, clock)
    try:
        result = await counter.charge([QuotaCharge("quota:t:tokens:d", 40, None, DAY_S, 0)])
    finally:
        await counter.close()

    assert result is not None and result.used == (40,)
    assert (source.charges, source.reserves) == (1, 0)


async def test_a_dead_redis_falls_back_as_without_slices() -> None:
    dead = create_redis_client("redis://127.0.0.1:1/0", connect_timeout_s=0.2, read_timeout_s=0.2)
    leasing = LeasingQuotaCounter(RedisQuotaLeases(dead, "mgtest:dead:"), share=0.05, lease_s=1.0)
    counter = FallbackQuotaCounter(leasing, MemoryQuotaCounter(), "open")
    try:
        results = [await counter.charge([requests(100)]) for _ in range(101)]
        assert counter.degraded
    finally:
        await counter.close()

    assert [r.allowed for r in results if r is not None] == [True] * 100 + [False]


@pytest.mark.parametrize(("share", "reserved"), [(0.05, 50), (0.0, 1)])
async def test_the_settings_choose_slices_or_a_round_trip_per_request(
    redis_prefix: str, share: float, reserved: int
) -> None:
    config = Settings(redis_url=REDIS_URL, redis_key_prefix=redis_prefix, limit_lease_share=share)
    counter = build_quota_counter(config)
    reader = RedisQuotaCounter(client(), redis_prefix)  # type: ignore[arg-type]
    try:
        assert (await counter.charge([requests(1000)])).allowed  # type: ignore[union-attr]
        read = await reader.charge([QuotaCharge("quota:t:requests:d", 0, None, DAY_S)])
    finally:
        await counter.close()
        await reader.close()

    assert read is not None and read.used == (reserved,)


@settings(
    max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(amounts=st.lists(st.integers(1, 9), min_size=1, max_size=80))
async def test_rows_of_any_size_are_each_charged_once_and_a_refusal_counts_only_units_not_held(
    redis_prefix: str, amounts: list[int]
) -> None:
    """Charges of varying rows leave fragments of slices (the oldest forgotten past four):
    every unit is still charged once and never past the quota, and a refusal reports as
    used what the counter holds less the units this replica still has (its bookkeeping of
    them is kept per charge, not summed again)."""
    clock = ManualClock()
    prefix = f"{redis_prefix}{len(amounts)}-{sum(amounts)}:"
    replicas = [replica(prefix, clock) for _ in range(2)]
    taken: set[int] = set()
    try:
        for i, amount in enumerate(amounts):
            counter = replicas[i % 2][0]
            rows = QuotaCharge("quota:t:rows:d", amount, 120, DAY_S, 0)
            result = await counter.charge([requests(10**6), rows])
            assert result is not None
            state = next(iter(counter._states.values()))
            assert state is not None
            held = [sum(end - start for start, end in ranges) for ranges in state.ranges]
            assert state.held == held
            if result.allowed:
                units = set(range(result.used[1] - amount + 1, result.used[1] + 1))
                assert not units & taken and max(units) <= 120
                taken |= units
            else:
                assert result.refused == 1
                assert result.used[1] <= 120 - held[1]
            await settle(counter)
    finally:
        for counter, _ in replicas:
            await counter.close()
