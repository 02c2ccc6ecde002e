"""The strike-store contract, run on every backend (memory and Redis), then what only one
backend promises: Redis shared by replicas (a block set by one guard reaches another within
its recheck time), and the fallback to memory when Redis is down.

Redis tests use the real server at ``MODELGATE_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``) under a fresh key prefix, and delete their keys afterwards.
An unreachable Redis is real too: a port nobody listens on, and a server that accepts and
never answers.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import AsyncIterator

import pytest
import redis

from modelgate.core.admission.abuse import AbuseGuard, AbusePolicy
from modelgate.core.admission.ports import StrikeStore
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.limits.strikes import FallbackStrikeStore
from modelgate.storage.memory.strikes import MemoryStrikeStore
from modelgate.storage.redis.client import create_redis_client
from modelgate.storage.redis.strikes import RedisStrikeStore
from tests.conftest import REDIS_URL

LONG_WINDOW_S = 600.0
_TIMEOUT_S = 0.2
#: the longest a call may take against a dead Redis: connect + read timeouts and a margin
_BOUND_S = 1.5


def redis_store(
    prefix: str, url: str = REDIS_URL, *, connect_s: float = 1.0, read_s: float = 2.0
) -> RedisStrikeStore:
    client = create_redis_client(url, connect_timeout_s=connect_s, read_timeout_s=read_s)
    return RedisStrikeStore(client, prefix)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest, redis_prefix: str) -> AsyncIterator[StrikeStore]:
    created: StrikeStore = (
        MemoryStrikeStore() if request.param == "memory" else redis_store(redis_prefix)
    )
    yield created
    await created.close()


# -- the contract, on every backend ---------------------------------------------------------


async def test_strikes_count_up_per_subject(store: StrikeStore) -> None:
    counts = [await store.strike("key:a", LONG_WINDOW_S) for _ in range(4)]
    other = await store.strike("ip:203.0.113.9", LONG_WINDOW_S)

    assert counts == [1, 2, 3, 4]
    assert other == 1


async def test_concurrent_strikes_get_distinct_counts(store: StrikeStore) -> None:
    counts = await asyncio.gather(*(store.strike("k", LONG_WINDOW_S) for _ in range(100)))

    assert sorted(counts) == list(range(1, 101))


async def test_a_window_is_fixed_from_its_first_strike(store: StrikeStore) -> None:
    assert await store.strike("k", 0.3) == 1
    await asyncio.sleep(0.15)
    assert await store.strike("k", 0.3) == 2  # does not extend the window
    await asyncio.sleep(0.2)

    assert await store.strike("k", 0.3) == 1  # a new window


async def test_a_block_lasts_its_seconds(store: StrikeStore) -> None:
    assert await store.blocked_for("k") == 0.0

    await store.block("k", 10)
    await store.block("short", 0.2)

    assert 9.5 < await store.blocked_for("k") <= 10
    assert 0 < await store.blocked_for("short") <= 0.2
    assert await store.blocked_for("other") == 0.0
    await asyncio.sleep(0.3)
    assert await store.blocked_for("short") == 0.0


async def test_a_new_block_replaces_the_old_one(store: StrikeStore) -> None:
    await store.block("k", 100)
    await store.block("k", 1)

    assert 0 < await store.blocked_for("k") <= 1


async def test_strikes_and_blocks_are_apart(store: StrikeStore) -> None:
    await store.block("k", 10)

    assert await store.strike("k", LONG_WINDOW_S) == 1
    assert await store.blocked_for("k") > 9


@pytest.mark.parametrize("seconds", [0.0, -1.0, float("inf"), float("nan")])
async def test_impossible_lengths_are_refused(store: StrikeStore, seconds: float) -> None:
    with pytest.raises(ValueError, match="positive"):
        await store.strike("k", seconds)
    with pytest.raises(ValueError, match="positive"):
        await store.block("k", seconds)


# -- Redis: shared by replicas ----------------------------------------------------------------


async def test_two_redis_clients_share_counts_and_blocks(redis_prefix: str) -> None:
    replicas = [redis_store(redis_prefix), redis_store(redis_prefix)]
    try:
        counts = await asyncio.gather(
            *(replicas[i % 2].strike("key:a", LONG_WINDOW_S) for i in range(60))
        )
        await replicas[0].block("key:a", 30)
        left = await replicas[1].blocked_for("key:a")
    finally:
        for replica in replicas:
            await replica.close()

    assert sorted(counts) == list(range(1, 61))
    assert 29 < left <= 30


async def test_redis_keys_live_under_the_prefix_and_expire(redis_prefix: str) -> None:
    store = redis_store(redis_prefix)
    try:
        await store.strike("ip:203.0.113.9", 0.2)
        await store.block("ip:203.0.113.9", 0.2)
        with redis.Redis.from_url(REDIS_URL) as client:
            keys = {k.decode() for k in client.scan_iter(match=f"{redis_prefix}*")}
            assert keys == {
                f"{redis_prefix}strikes:ip:203.0.113.9",
                f"{redis_prefix}block:ip:203.0.113.9",
            }
            assert all(0 < client.pttl(k) <= 200 for k in keys)
            await asyncio.sleep(0.3)
            assert not any(client.exists(k) for k in keys)
    finally:
        await store.close()


async def test_a_script_unknown_to_the_server_is_sent_whole(redis_prefix: str) -> None:
    store = redis_store(redis_prefix)
    store._sha = "0" * 40  # as after a restart or SCRIPT FLUSH
    try:
        counts = [await store.strike("k", LONG_WINDOW_S) for _ in range(3)]
    finally:
        await store.close()

    assert counts == [1, 2, 3]


async def test_a_block_by_one_replica_reaches_another_within_recheck(
    redis_prefix: str,
) -> None:
    policy = AbusePolicy(slow_after=1, block_after=3, block_s=60, max_delay_s=0)
    a = AbuseGuard(redis_store(redis_prefix), policy, recheck_s=0.3)
    b = AbuseGuard(redis_store(redis_prefix), policy, recheck_s=0.3)
    try:
        await b.check("key:t:probe")  # b has seen it unblocked, and trusts that a while
        for _ in range(3):
            await a.failed("key:t:probe")
        with pytest.raises(ModelgateError):
            await a.check("key:t:probe")  # at once where it was blocked
        started = time.monotonic()
        refused: ModelgateError | None = None
        while refused is None:
            try:
                await b.check("key:t:probe")
            except ModelgateError as exc:
                refused = exc
            else:
                assert time.monotonic() - started < 1.0
                await asyncio.sleep(0.02)
    finally:
        await a.close()
        await b.close()

    assert refused.kind is ErrorKind.RATE_LIMITED


# -- memory: bounded --------------------------------------------------------------------------


async def test_memory_tables_are_bounded_and_drop_ended_windows_first() -> None:
    now = [0.0]
    store = MemoryStrikeStore(max_subjects=100, clock=lambda: now[0])
    for i in range(50):
        await store.strike(f"short-{i}", 1.0)
    for i in range(50):
        await store.strike(f"long-{i}", 1000.0)
    now[0] = 2.0

    for i in range(50):
        await store.strike(f"new-{i}", 1000.0)

    assert len(store._strikes) <= 100
    assert await store.strike("long-0", 1000.0) == 2  # kept, with its count
    for i in range(10_000):
        await store.strike(f"flood-{i}", 1000.0)
        await store.block(f"flood-{i}", 1000.0)
    assert len(store._strikes) <= 100 and len(store._blocks) <= 100


# -- Redis down -----------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def silent_server() -> AsyncIterator[str]:
    """A TCP server that accepts and reads but never answers."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.read(4096):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    yield f"redis://127.0.0.1:{server.sockets[0].getsockname()[1]}/0"
    server.close()
    await server.wait_closed()


@pytest.fixture(params=["closed-port", "silent-server"])
def dead_redis_url(request: pytest.FixtureRequest) -> str:
    if request.param == "closed-port":
        return f"redis://127.0.0.1:{_closed_port()}/0"
    url: str = request.getfixturevalue("silent_server")
    return url


def _dead_store(url: str) -> RedisStrikeStore:
    return redis_store("mgtest:dead:", url, connect_s=_TIMEOUT_S, read_s=_TIMEOUT_S)


async def test_a_dead_redis_fails_fast_as_unavailable(dead_redis_url: str) -> None:
    store = _dead_store(dead_redis_url)
    try:
        for call in (
            lambda: store.strike("k", 1.0),
            lambda: store.block("k", 1.0),
            lambda: store.blocked_for("k"),
        ):
            started = time.monotonic()
            with pytest.raises(ModelgateError) as raised:
                await call()
            assert raised.value.kind is ErrorKind.UNAVAILABLE
            assert time.monotonic() - started < _BOUND_S
    finally:
        await store.close()


async def test_with_redis_down_a_guard_throttles_in_memory(
    dead_redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    store = FallbackStrikeStore(_dead_store(dead_redis_url), MemoryStrikeStore())
    guard = AbuseGuard(store, AbusePolicy(slow_after=1, block_after=3, max_delay_s=0.5))
    try:
        started = time.monotonic()
        delays = [await guard.failed("key:t:probe") for _ in range(3)]
        with pytest.raises(ModelgateError) as blocked:
            await guard.check("key:t:probe")
        await guard.check("key:t:other")  # never fails a request
        elapsed = time.monotonic() - started
        assert store.degraded
    finally:
        await guard.close()

    assert delays == pytest.approx([0, 0.25, 0.5])
    assert blocked.value.kind is ErrorKind.RATE_LIMITED
    assert elapsed < _BOUND_S  # one timeout, then local until the cool-down ends
    assert sum("degraded" in r.getMessage() for r in caplog.records) == 1


class FlakyStore(MemoryStrikeStore):
    """Not Redis: a primary that is down while ``down`` is set, to test the fallback's
    policy (cool-down, recovery) without waiting on timeouts."""

    def __init__(self) -> None:
        super().__init__()
        self.down = True
        self.calls = 0

    async def strike(self, subject: str, window_s: float) -> int:
        self.calls += 1
        if self.down:
            raise ModelgateError(ErrorKind.UNAVAILABLE, "down")
        return await super().strike(subject, window_s)


async def test_the_fallback_retries_the_primary_after_the_cooldown() -> None:
    now = [0.0]
    primary = FlakyStore()
    store = FallbackStrikeStore(primary, MemoryStrikeStore(), cooldown_s=1.0, clock=lambda: now[0])

    assert [await store.strike("k", 60) for _ in range(3)] == [1, 2, 3]  # locally
    assert primary.calls == 1 and store.degraded  # not hammered during the cool-down
    primary.down = False
    now[0] = 1.5

    assert await store.strike("k", 60) == 1  # the primary's own count
    assert not store.degraded


async def test_other_errors_of_the_primary_pass_through() -> None:
    class Broken(MemoryStrikeStore):
        async def blocked_for(self, subject: str) -> float:
            raise ModelgateError(ErrorKind.INTERNAL, "bug")

    store = FallbackStrikeStore(Broken(), MemoryStrikeStore())

    with pytest.raises(ModelgateError) as raised:
        await store.blocked_for("k")
    assert raised.value.kind is ErrorKind.INTERNAL
