"""The quota-counter contract on every backend (memory and the real Redis), then the
fallback when Redis is unreachable.

Redis tests use the server at ``MODELGATE_TEST_REDIS_URL`` under a fresh key prefix whose
keys are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.core.admission.ports import QuotaCharge, QuotaCounter
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.limits.quotas import FallbackQuotaCounter
from modelgate.storage.memory.quotas import MemoryQuotaCounter
from modelgate.storage.redis.client import create_redis_client
from modelgate.storage.redis.quotas import RedisQuotaCounter
from tests.conftest import REDIS_URL

DAY = 86400.0


def _redis_counter(prefix: str, url: str = REDIS_URL) -> RedisQuotaCounter:
    return RedisQuotaCounter(
        create_redis_client(url, connect_timeout_s=5.0, read_timeout_s=5.0), prefix
    )


@pytest.fixture(params=["memory", "redis"])
async def counter(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[QuotaCounter]:
    made: QuotaCounter = (
        MemoryQuotaCounter() if request.param == "memory" else _redis_counter(redis_prefix)
    )
    yield made
    await made.close()


def charge(key: str, amount: int, limit: int | None, seed: int | None = 0) -> QuotaCharge:
    return QuotaCharge(key, amount, limit, DAY, seed)


async def test_a_missing_counter_without_a_seed_changes_nothing(counter: QuotaCounter) -> None:
    assert await counter.charge([charge("a", 1, 10, seed=None)]) is None
    # and a known counter next to a missing one changes nothing either
    await counter.charge([charge("known", 1, 10)])
    assert await counter.charge([charge("known", 1, 10), charge("b", 1, 10, seed=None)]) is None
    result = await counter.charge([charge("known", 0, None, seed=None)])
    assert result is not None and result.used == (1,)


async def test_a_seed_starts_the_counter_only_once(counter: QuotaCounter) -> None:
    first = await counter.charge([charge("a", 2, 100, seed=40)])
    assert first is not None and first.allowed and first.used == (42,)
    again = await counter.charge([charge("a", 1, 100, seed=0)])  # the seed is ignored now
    assert again is not None and again.used == (43,)


async def test_the_limit_admits_exactly_up_to_it_then_refuses_and_takes_nothing(
    counter: QuotaCounter,
) -> None:
    results = [await counter.charge([charge("a", 3, 10)]) for _ in range(4)]
    assert [r.allowed for r in results if r] == [True, True, True, False]
    refused = results[-1]
    assert refused is not None and refused.used == (9,) and refused.refused == 0
    last = await counter.charge([charge("a", 1, 10)])
    assert last is not None and last.allowed and last.used == (10,)
    # amount 0 asks "is any left?": at the limit, no
    empty = await counter.charge([charge("a", 0, 10)])
    assert empty is not None and not empty.allowed


async def test_all_or_nothing_across_counters(counter: QuotaCounter) -> None:
    await counter.charge([charge("day", 0, None), charge("month", 0, None)])
    ok = await counter.charge([charge("day", 5, 5), charge("month", 5, 100)])
    assert ok is not None and ok.allowed and ok.used == (5, 5)
    refused = await counter.charge([charge("month", 1, 100), charge("day", 1, 5)])
    assert refused is not None and not refused.allowed and refused.refused == 1
    assert refused.used == (5, 5)  # the month was not charged for the refused day


async def test_without_a_limit_amounts_are_added_always(counter: QuotaCounter) -> None:
    for _ in range(3):
        result = await counter.charge([charge("tokens", 700, None)])
    assert result is not None and result.allowed and result.used == (2100,)


async def test_concurrent_charges_admit_exactly_the_limit(counter: QuotaCounter) -> None:
    await counter.charge([charge("k", 0, None)])
    results = await asyncio.gather(*(counter.charge([charge("k", 1, 25)]) for _ in range(60)))
    assert sum(1 for r in results if r and r.allowed) == 25


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(amounts=st.lists(st.integers(0, 20), min_size=1, max_size=30), limit=st.integers(1, 60))
async def test_admitted_amounts_never_pass_the_limit(
    counter: QuotaCounter, amounts: list[int], limit: int
) -> None:
    key = secrets.token_hex(4)
    total = 0
    for amount in amounts:
        result = await counter.charge([charge(key, amount, limit)])
        assert result is not None
        if result.allowed:
            total += amount
        assert result.used == (total,)
    assert total <= limit


_CHARGE = st.tuples(st.integers(0, 2), st.one_of(st.none(), st.integers(1, 4)))


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    calls=st.lists(
        st.dictionaries(st.sampled_from("abc"), _CHARGE, min_size=1, max_size=3), max_size=20
    )
)
async def test_several_counters_charge_all_or_nothing_like_a_plain_dictionary(
    counter: QuotaCounter, calls: list[dict[str, tuple[int, int | None]]]
) -> None:
    """Each call against a model: the first charge that would pass its limit (with an
    amount of 0 counting as 1) refuses the call, which changes nothing and reports the
    counters as found; otherwise every amount is added and the counters are reported."""
    prefix = secrets.token_hex(4)
    model: dict[str, int] = {}
    for call in calls:
        keys = list(call)
        result = await counter.charge(
            [charge(prefix + k, amount, limit) for k, (amount, limit) in call.items()]
        )
        assert result is not None
        found = [model.get(k, 0) for k in keys]
        refused = next(
            (
                i
                for i, (k, (amount, limit)) in enumerate(call.items())
                if limit is not None and found[i] + max(amount, 1) > limit
            ),
            None,
        )
        if refused is None:
            for k, (amount, _) in call.items():
                model[k] = model.get(k, 0) + amount
            assert (result.allowed, result.used) == (True, tuple(model[k] for k in keys))
        else:
            assert (result.allowed, result.used, result.refused) == (False, tuple(found), refused)


async def test_negative_amounts_are_refused(counter: QuotaCounter) -> None:
    with pytest.raises(ValueError, match="never negative"):
        await counter.charge([charge("a", -1, 10)])


async def test_two_redis_clients_share_one_quota(redis_prefix: str) -> None:
    replicas = [_redis_counter(redis_prefix), _redis_counter(redis_prefix)]
    try:
        results = await asyncio.gather(
            *(replicas[i % 2].charge([charge("shared", 1, 40)]) for i in range(100))
        )
    finally:
        for replica in replicas:
            await replica.close()
    assert sum(1 for r in results if r and r.allowed) == 40


async def test_redis_counters_expire_after_their_period(redis_prefix: str) -> None:
    counter = _redis_counter(redis_prefix)
    try:
        await counter.charge([QuotaCharge("k", 1, 5, 0.2, 0)])
        with redis.Redis.from_url(REDIS_URL) as client:
            assert 0 < client.pttl(f"{redis_prefix}k") <= 200
    finally:
        await counter.close()


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_an_unreachable_redis_is_unavailable_then_falls_back_by_mode() -> None:
    url = f"redis://127.0.0.1:{_closed_port()}/0"
    dead = _redis_counter("x:", url)
    with pytest.raises(ModelgateError) as info:
        await dead.charge([charge("k", 1, 5)])
    assert info.value.kind is ErrorKind.UNAVAILABLE

    open_ = FallbackQuotaCounter(_redis_counter("x:", url), MemoryQuotaCounter(), "open")
    results = [await open_.charge([charge("k", 1, 2)]) for _ in range(3)]
    assert [r.allowed for r in results if r] == [True, True, False] and open_.degraded
    await open_.close()

    closed = FallbackQuotaCounter(_redis_counter("x:", url), MemoryQuotaCounter(), "closed")
    with pytest.raises(ModelgateError) as info:
        await closed.charge([charge("k", 1, 2)])
    assert info.value.kind is ErrorKind.UNAVAILABLE and info.value.retry_after
    await closed.close()
