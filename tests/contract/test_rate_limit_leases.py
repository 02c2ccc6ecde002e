"""Rate limits spent from leases (``LeasingRateLimiter`` on ``RedisTokenLeases``) against the
real Redis server, under a key prefix of the test's own (deleted afterwards).

Time is a manual clock that both the replicas and the Lua script read (the script takes it
as an argument instead of the server's ``TIME``), so the tests advance it instead of
sleeping: nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import asyncio
import math
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.boot.stores import build_limiter
from modelgate.core.admission.ports import Decision
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.limits.leases import Grant, LeasingRateLimiter, lease_size
from modelgate.limits.resilient import FallbackRateLimiter
from modelgate.settings import Settings
from modelgate.storage.memory.rate_limits import MemoryRateLimiter
from modelgate.storage.redis.client import create_redis_client
from modelgate.storage.redis.leases import RedisTokenLeases
from modelgate.testing import ManualClock
from tests.conftest import REDIS_URL


@dataclass
class CountingLeases:
    """Redis leases that count the round trips and can be made to fail."""

    inner: RedisTokenLeases
    takes: int = 0
    hits: int = 0
    failing: bool = False
    grants: list[Grant] = field(default_factory=list)

    async def take(self, key: str, limit: int, window_s: float, want: int, need: int) -> Grant:
        self.takes += 1
        if self.failing:
            raise ModelgateError(ErrorKind.UNAVAILABLE, "rate-limit store unavailable: test")
        grant = await self.inner.take(key, limit, window_s, want, need)
        self.grants.append(grant)
        return grant

    async def hit(self, key: str, limit: int, window_s: float, cost: int = 1) -> Decision:
        self.hits += 1
        return await self.inner.hit(key, limit, window_s, cost)

    async def close(self) -> None:
        await self.inner.close()


def leases(prefix: str, clock: ManualClock) -> CountingLeases:
    client = create_redis_client(REDIS_URL, connect_timeout_s=1.0, read_timeout_s=2.0)
    return CountingLeases(RedisTokenLeases(client, prefix, clock=clock))


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(1_000_000.0)


@pytest.fixture
async def replicas(
    redis_prefix: str, clock: ManualClock
) -> AsyncIterator[list[tuple[LeasingRateLimiter, CountingLeases]]]:
    made = []
    for _ in range(2):
        source = leases(redis_prefix, clock)
        made.append((LeasingRateLimiter(source, share=0.1, lease_s=10.0, clock=clock), source))
    yield made
    for limiter, _ in made:
        await limiter.close()


async def settle(limiter: LeasingRateLimiter) -> None:
    """Let the leases in flight finish (they run in the background)."""
    for _ in range(1000):
        if not limiter._tasks:
            return
        await asyncio.sleep(0.001)


async def free_tokens(source: CountingLeases, key: str, limit: int, window_s: float) -> float:
    """Whole tokens the bucket holds now, asked without taking any."""
    grant = await source.inner.take(key, limit, window_s, 0, 1)
    assert grant.tokens == 0
    return math.floor((window_s - grant.backlog_s) / (window_s / limit) + 1e-6)


async def test_a_replica_spends_its_lease_without_a_round_trip_per_hit(
    replicas: list[tuple[LeasingRateLimiter, CountingLeases]],
) -> None:
    limiter, source = replicas[0]
    # 1000 per 100 s with share 0.1 and 10 s leases: leases of 100 tokens
    decisions = []
    for _ in range(300):
        decisions.append(await limiter.hit("k", 1000, 100.0))
        await settle(limiter)

    assert all(d.allowed for d in decisions)
    assert source.hits == 0
    # 300 hits from leases of 100, the next taken when 50 are left: 4 round trips, not 300
    assert source.takes == 4
    assert limiter.held("k", 1000, 100.0) < 150


async def test_two_replicas_admit_the_burst_less_what_the_other_holds(
    replicas: list[tuple[LeasingRateLimiter, CountingLeases]],
) -> None:
    (first, _), (second, second_source) = replicas
    await first.hit("k", 1000, 100.0)  # the first replica takes a lease of 100
    await settle(first)
    held = first.held("k", 1000, 100.0)
    admitted = 0
    refused = None
    for _ in range(2000):
        decision = await second.hit("k", 1000, 100.0)
        await settle(second)
        if not decision.allowed:
            refused = decision
            break
        admitted += 1

    # the bucket's 1000, less the first replica's hit and what it still holds
    assert admitted == 1000 - 1 - held
    assert refused is not None and refused.retry_after_s > 0
    # refused only because Redis has no token left, while the other replica holds `held`
    assert await free_tokens(second_source, "k", 1000, 100.0) == 0
    assert all([(await first.hit("k", 1000, 100.0)).allowed for _ in range(held)])


async def test_a_refusal_holds_for_its_retry_after_and_no_longer(
    replicas: list[tuple[LeasingRateLimiter, CountingLeases]], clock: ManualClock
) -> None:
    (first, _), (second, _) = replicas
    while (await first.hit("k", 1000, 100.0)).allowed:
        await settle(first)
    refused = await second.hit("k", 1000, 100.0)
    assert not refused.allowed

    # what the refusal memo relies on: nothing but time gives this replica a token back
    clock.now += refused.retry_after_s * 0.999
    assert not (await second.hit("k", 1000, 100.0)).allowed
    clock.now += refused.retry_after_s * 0.002
    assert (await second.hit("k", 1000, 100.0)).allowed


async def test_concurrent_hits_share_one_lease_in_flight(
    replicas: list[tuple[LeasingRateLimiter, CountingLeases]],
) -> None:
    limiter, source = replicas[0]
    decisions = await asyncio.gather(*(limiter.hit("k", 1000, 100.0) for _ in range(40)))

    assert all(d.allowed for d in decisions)
    assert source.takes == 1  # single flight: one lease of 100 served all 40


async def test_unspent_tokens_expire_after_the_lease_time(
    replicas: list[tuple[LeasingRateLimiter, CountingLeases]], clock: ManualClock
) -> None:
    limiter, source = replicas[0]
    await limiter.hit("k", 1000, 100.0)
    clock.now += 10.0
    await limiter.hit("k", 1000, 100.0)

    assert source.takes == 2


async def test_limits_too_small_to_lease_take_one_round_trip_per_hit(
    replicas: list[tuple[LeasingRateLimiter, CountingLeases]],
) -> None:
    limiter, source = replicas[0]
    # 10 per 100 s: share 0.1 is one token, so nothing is leased
    decisions = [await limiter.hit("k", 10, 100.0) for _ in range(11)]

    assert [d.allowed for d in decisions] == [True] * 10 + [False]
    assert (source.hits, source.takes) == (11, 0)


async def test_a_failed_lease_drops_the_tokens_and_the_fallback_answers(
    redis_prefix: str, clock: ManualClock
) -> None:
    source = leases(redis_prefix, clock)
    shared = LeasingRateLimiter(source, share=0.1, lease_s=10.0, clock=clock)
    limiter = FallbackRateLimiter(shared, MemoryRateLimiter(), "open")
    try:
        for _ in range(51):  # down to 49 tokens: a background lease is asked
            await limiter.hit("k", 1000, 100.0)
            source.failing = True
        await settle(shared)
        assert shared.held("k", 1000, 100.0) == 0
        decision = await limiter.hit("k", 1000, 100.0)
        assert limiter.degraded and decision.allowed  # from the local limiter
    finally:
        await limiter.close()


async def test_a_dead_redis_fails_over_as_without_leases(clock: ManualClock) -> None:
    client = create_redis_client("redis://127.0.0.1:1/0", connect_timeout_s=0.2, read_timeout_s=0.2)
    shared = LeasingRateLimiter(RedisTokenLeases(client, "mgtest:dead:"), share=0.1, lease_s=1.0)
    limiter = FallbackRateLimiter(shared, MemoryRateLimiter(), "open")
    try:
        decisions = [await limiter.hit("k", 30, 10.0) for _ in range(31)]
        assert limiter.degraded
    finally:
        await limiter.close()

    assert [d.allowed for d in decisions] == [True] * 30 + [False]


#: (replica, hits at once, seconds to advance after)
_Step = tuple[int, int, float]


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    limit=st.integers(20, 2000),
    window_s=st.floats(5.0, 60.0),
    share=st.sampled_from([0.01, 0.05, 0.2]),
    lease_s=st.floats(0.5, 20.0),
    steps=st.lists(
        st.tuples(st.integers(0, 1), st.integers(1, 40), st.floats(0.0, 2.0)),
        min_size=1,
        max_size=25,
    ),
)
async def test_two_replicas_hold_one_limit_within_the_stated_bound(
    redis_prefix: str,
    limit: int,
    window_s: float,
    share: float,
    lease_s: float,
    steps: list[_Step],
) -> None:
    """Admitted in any interval [a, b] <= limit + rate * (b - a) + R * 1.5 * L, and every
    refusal comes with a bucket that has no token left."""
    clock = ManualClock(1_000_000.0)
    sources = [leases(redis_prefix, clock) for _ in range(2)]
    limiters = [
        LeasingRateLimiter(source, share=share, lease_s=lease_s, clock=clock) for source in sources
    ]
    key = secrets.token_hex(6)
    size = max(lease_size(limit, window_s, share=share, lease_s=lease_s), 1)
    rate = limit / window_s
    admitted: list[tuple[float, int]] = []  # (time, hits admitted then)
    try:
        for replica, burst, advance in steps:
            decisions = await asyncio.gather(
                *(limiters[replica].hit(key, limit, window_s) for _ in range(burst))
            )
            admitted.append((clock.now, sum(d.allowed for d in decisions)))
            if not all(d.allowed for d in decisions):
                # never refused from a stale local view: Redis has no token either
                assert await free_tokens(sources[replica], key, limit, window_s) == 0
            if replica == 0:
                await settle(limiters[0])
            clock.now += advance
    finally:
        for limiter in limiters:
            await limiter.close()

    bound = 2 * 1.5 * size if size >= 2 else 0
    for i, (start, _) in enumerate(admitted):
        total = 0
        for end, count in admitted[i:]:
            total += count
            assert total <= limit + rate * (end - start) + bound + 1e-6


@pytest.mark.parametrize(("share", "taken"), [(0.01, 10), (0.0, 1)])
async def test_the_settings_choose_leases_or_a_round_trip_per_hit(
    redis_prefix: str, share: float, taken: int
) -> None:
    config = Settings(redis_url=REDIS_URL, redis_key_prefix=redis_prefix, limit_lease_share=share)
    limiter = build_limiter(config)
    client = create_redis_client(REDIS_URL, connect_timeout_s=1.0, read_timeout_s=2.0)
    bucket = CountingLeases(RedisTokenLeases(client, f"{redis_prefix}rl:"))
    try:
        assert (await limiter.hit("k", 1000, 100.0)).allowed
        # one hit took a lease of 1% of the burst from Redis, or just itself
        assert await free_tokens(bucket, "k", 1000, 100.0) == 1000 - taken
    finally:
        await limiter.close()
        await bucket.close()


async def test_leases_held_are_bounded_and_close_stops_those_in_flight(
    redis_prefix: str, clock: ManualClock
) -> None:
    source = leases(redis_prefix, clock)
    limiter = LeasingRateLimiter(source, share=0.1, lease_s=10.0, max_keys=3, clock=clock)
    try:
        for name in ("a", "b", "c", "d"):
            await limiter.hit(name, 1000, 100.0)
        # the oldest lease was forgotten with its tokens; the others are held
        assert [limiter.held(n, 1000, 100.0) for n in ("a", "b", "c", "d")] == [0, 99, 99, 99]
        for _ in range(60):  # down to 39: a lease is asked in the background
            await limiter.hit("d", 1000, 100.0)
    finally:
        await limiter.close()
    assert not limiter._tasks


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    window_s=st.sampled_from([0.0, -1.0, math.nan, math.inf]),
    cost=st.sampled_from([-1, 1001]),
)
async def test_malformed_arguments_are_refused_before_any_round_trip(
    replicas: list[tuple[LeasingRateLimiter, CountingLeases]], window_s: float, cost: int
) -> None:
    """A window that is not a positive number of seconds (which no lease size is computed
    from), or a cost outside [0, limit] on a key that holds a lease: INVALID_ARGUMENT, and
    Redis is not asked."""
    limiter, source = replicas[0]
    await limiter.hit("held", 1000, 100.0)
    before = (source.hits, source.takes)

    with pytest.raises(ModelgateError) as window:
        await limiter.hit("new", 1000, window_s)
    with pytest.raises(ModelgateError) as over:
        await limiter.hit("held", 1000, 100.0, cost)

    assert window.value.kind is ErrorKind.INVALID_ARGUMENT
    assert over.value.kind is ErrorKind.INVALID_ARGUMENT
    assert (source.hits, source.takes) == before
