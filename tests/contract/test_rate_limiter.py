"""The rate-limiter contract, run on every backend (memory and Redis), then what only one
backend promises: Redis across replicas and processes, and the fallback when Redis is down.

Redis tests use the real server at ``MODELGATE_TEST_REDIS_URL`` (default
``redis://127.0.0.1:6379/0``) under a fresh key prefix, and delete their keys afterwards;
they assume nothing else about the server. An unreachable Redis is real too: a port nobody
listens on, and a server that accepts and never answers.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.core.admission.ports import RateLimiter
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.limits.resilient import FallbackRateLimiter
from modelgate.storage.memory.rate_limits import MemoryRateLimiter
from modelgate.storage.redis.client import create_redis_client
from modelgate.storage.redis.rate_limits import RedisRateLimiter
from tests.conftest import REDIS_URL

ROOT = Path(__file__).resolve().parents[2]
#: a window long enough that nothing refills while a burst runs
LONG_WINDOW_S = 600.0


def redis_limiter(
    prefix: str, url: str = REDIS_URL, *, connect_s: float = 1.0, read_s: float = 2.0
) -> RedisRateLimiter:
    client = create_redis_client(url, connect_timeout_s=connect_s, read_timeout_s=read_s)
    return RedisRateLimiter(client, prefix)


@dataclass(frozen=True)
class Backend:
    name: str
    prefix: str

    def create(self) -> RateLimiter:
        if self.name == "memory":
            return MemoryRateLimiter()
        return redis_limiter(self.prefix)


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest, redis_prefix: str) -> Backend:
    return Backend(request.param, redis_prefix)


@pytest.fixture
async def limiter(backend: Backend) -> AsyncIterator[RateLimiter]:
    created = backend.create()
    yield created
    await created.close()


# -- the contract, on every backend ---------------------------------------------------------


async def test_a_fresh_key_admits_the_limit_at_once_then_refuses(limiter: RateLimiter) -> None:
    admitted = [(await limiter.hit("k", 5, 10.0)).allowed for _ in range(5)]
    refused = await limiter.hit("k", 5, 10.0)

    assert admitted == [True] * 5
    assert not refused.allowed and refused.remaining == 0
    # the next token comes one emission interval (10 s / 5) after the burst
    assert 1.9 < refused.retry_after_s <= 2.0
    assert 9.9 < refused.reset_after_s <= 10.0


async def test_after_retry_after_a_hit_is_admitted_again(limiter: RateLimiter) -> None:
    for _ in range(2):
        assert (await limiter.hit("k", 2, 0.4)).allowed
    refused = await limiter.hit("k", 2, 0.4)
    assert not refused.allowed and 0.15 < refused.retry_after_s <= 0.2

    await asyncio.sleep(refused.retry_after_s + 0.02)

    again = await limiter.hit("k", 2, 0.4)
    assert again.allowed and again.retry_after_s == 0
    assert not (await limiter.hit("k", 2, 0.4)).allowed


async def test_a_cost_takes_that_many_and_a_refused_hit_takes_nothing(
    limiter: RateLimiter,
) -> None:
    first = await limiter.hit("k", 5, LONG_WINDOW_S, cost=3)
    too_big = await limiter.hit("k", 5, LONG_WINDOW_S, cost=3)
    fits = await limiter.hit("k", 5, LONG_WINDOW_S, cost=2)

    assert first.allowed and first.remaining == 2
    assert not too_big.allowed and too_big.remaining == 2
    assert fits.allowed and fits.remaining == 0


async def test_remaining_counts_down(limiter: RateLimiter) -> None:
    decisions = [await limiter.hit("k", 4, LONG_WINDOW_S) for _ in range(5)]

    assert [d.remaining for d in decisions] == [3, 2, 1, 0, 0]
    assert [d.allowed for d in decisions] == [True, True, True, True, False]
    assert all(d.limit == 4 for d in decisions)


async def test_keys_are_independent(limiter: RateLimiter) -> None:
    for _ in range(3):
        await limiter.hit("a", 3, LONG_WINDOW_S)
    assert not (await limiter.hit("a", 3, LONG_WINDOW_S)).allowed

    other = await limiter.hit("b", 3, LONG_WINDOW_S)
    assert other.allowed and other.remaining == 2


async def test_concurrent_hits_admit_exactly_the_limit(limiter: RateLimiter) -> None:
    decisions = await asyncio.gather(*(limiter.hit("k", 50, LONG_WINDOW_S) for _ in range(200)))

    assert sum(d.allowed for d in decisions) == 50


@pytest.mark.parametrize(
    ("limit", "window_s", "cost"),
    [(0, 1.0, 1), (5, 0.0, 1), (5, float("inf"), 1), (5, 1.0, -1), (5, 1.0, 6)],
)
async def test_impossible_arguments_are_invalid(
    limiter: RateLimiter, limit: int, window_s: float, cost: int
) -> None:
    with pytest.raises(ModelgateError) as raised:
        await limiter.hit("k", limit, window_s, cost)
    assert raised.value.kind is ErrorKind.INVALID_ARGUMENT


_RATE_LIMIT = 4
_RATE_WINDOW_S = 0.2


@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    steps=st.lists(
        st.tuples(st.floats(0, 0.02), st.integers(1, _RATE_LIMIT)), min_size=1, max_size=10
    )
)
async def test_admitted_units_stay_within_the_burst_plus_the_rate(
    backend: Backend, steps: list[tuple[float, int]]
) -> None:
    limiter = backend.create()
    key = secrets.token_hex(8)
    rate = _RATE_LIMIT / _RATE_WINDOW_S
    admitted = 0
    try:
        start = time.monotonic()
        for pause, cost in steps:
            await asyncio.sleep(pause)
            decision = await limiter.hit(key, _RATE_LIMIT, _RATE_WINDOW_S, cost)
            if admitted + cost <= _RATE_LIMIT:
                # it fits in the burst even with no refill at all
                assert decision.allowed
            admitted += cost if decision.allowed else 0
            elapsed = time.monotonic() - start
            # the client's interval encloses the backend's, so this bound needs no slack
            # beyond float rounding
            assert admitted <= _RATE_LIMIT + elapsed * rate + 1e-6
            assert 0 <= decision.remaining <= _RATE_LIMIT
            assert decision.allowed == (decision.retry_after_s == 0)
    finally:
        await limiter.close()


# -- Redis: one limit across replicas and processes -----------------------------------------


async def test_two_redis_clients_share_one_limit(redis_prefix: str) -> None:
    replicas = [redis_limiter(redis_prefix), redis_limiter(redis_prefix)]
    try:
        decisions = await asyncio.gather(
            *(replicas[i % 2].hit("shared", 30, LONG_WINDOW_S) for i in range(120))
        )
    finally:
        for replica in replicas:
            await replica.close()

    assert sum(d.allowed for d in decisions) == 30


_HAMMER = """
import asyncio, sys
from modelgate.storage.redis.client import create_redis_client
from modelgate.storage.redis.rate_limits import RedisRateLimiter

async def main(url, prefix, hits, limit, window):
    client = create_redis_client(url, connect_timeout_s=1, read_timeout_s=2)
    limiter = RedisRateLimiter(client, prefix)
    await limiter.hit("warm-up", 1, 1.0)
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    decisions = await asyncio.gather(*(limiter.hit("shared", limit, window) for _ in range(hits)))
    print(sum(d.allowed for d in decisions), flush=True)
    await limiter.close()

url, prefix, hits, limit, window = sys.argv[1:]
asyncio.run(main(url, prefix, int(hits), int(limit), float(window)))
"""


async def test_another_process_shares_one_limit(redis_prefix: str) -> None:
    limit, hits = 150, 300
    args = [REDIS_URL, redis_prefix, str(hits), str(limit), str(LONG_WINDOW_S)]
    child = subprocess.Popen(  # noqa: ASYNC220 -- the child is driven through its pipes below
        [sys.executable, "-c", _HAMMER, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    limiter = redis_limiter(redis_prefix)
    try:
        assert child.stdout is not None and child.stdin is not None
        ready = await asyncio.to_thread(child.stdout.readline)
        assert ready.strip() == "ready"
        await limiter.hit("warm-up", 1, 1.0)
        child.stdin.write("go\n")
        child.stdin.flush()
        ours = await asyncio.gather(
            *(limiter.hit("shared", limit, LONG_WINDOW_S) for _ in range(hits))
        )
        theirs = int(await asyncio.to_thread(child.stdout.readline))
        assert await asyncio.to_thread(child.wait, 30) == 0
    finally:
        await limiter.close()
        if child.poll() is None:
            child.kill()
            child.wait()
        for pipe in (child.stdin, child.stdout):
            if pipe is not None:
                pipe.close()

    assert sum(d.allowed for d in ours) + theirs == limit


async def test_redis_keys_expire_when_the_bucket_is_full_again(redis_prefix: str) -> None:
    limiter = redis_limiter(redis_prefix)
    try:
        await limiter.hit("k", 2, 0.2)
        await limiter.hit("k", 2, 0.2)
        with redis.Redis.from_url(REDIS_URL) as client:
            ttl_ms = client.pttl(f"{redis_prefix}k")
            assert 0 < ttl_ms <= 200
            await asyncio.sleep(0.3)
            assert not client.exists(f"{redis_prefix}k")
    finally:
        await limiter.close()


async def test_a_script_unknown_to_the_server_is_sent_whole(redis_prefix: str) -> None:
    limiter = redis_limiter(redis_prefix)
    # a SHA1 no script has: the server answers NOSCRIPT, as after a restart or SCRIPT FLUSH
    # (flushing for real would disturb other users of a shared server)
    limiter._sha = "0" * 40
    try:
        decisions = [await limiter.hit("k", 2, LONG_WINDOW_S) for _ in range(3)]
    finally:
        await limiter.close()

    assert [d.allowed for d in decisions] == [True, True, False]


# -- memory: bounded --------------------------------------------------------------------------


async def test_memory_table_is_bounded_and_drops_expired_keys_first() -> None:
    now = [0]
    limiter = MemoryRateLimiter(max_keys=100, clock_ns=lambda: now[0])
    for i in range(50):
        await limiter.hit(f"short-{i}", 1, 1.0)
    for i in range(50):
        await limiter.hit(f"long-{i}", 1, 1000.0)
    now[0] = 2_000_000_000  # the short keys' buckets are full again, the long ones are not

    for i in range(50):
        await limiter.hit(f"new-{i}", 1, 1000.0)

    assert len(limiter) <= 100
    assert not (await limiter.hit("long-0", 1, 1000.0)).allowed  # kept, with its debt

    for i in range(10_000):
        await limiter.hit(f"flood-{i}", 1, 1000.0)
    assert len(limiter) <= 100


# -- fallback: Redis down -----------------------------------------------------------------------

_TIMEOUT_S = 0.2
#: the longest a hit may take against a dead Redis: connect + read timeouts and a margin
_BOUND_S = 1.5


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


@pytest.fixture
async def silent_server() -> AsyncIterator[tuple[str, list[int]]]:
    """A TCP server that accepts and reads but never answers; yields its URL and a list that
    grows by one per accepted connection."""
    accepted: list[int] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        while await reader.read(4096):
            pass
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield f"redis://127.0.0.1:{port}/0", accepted
    server.close()
    await server.wait_closed()


@pytest.fixture(params=["closed-port", "silent-server"])
def dead_redis_url(request: pytest.FixtureRequest) -> str:
    if request.param == "closed-port":
        return f"redis://127.0.0.1:{_closed_port()}/0"
    url: str = request.getfixturevalue("silent_server")[0]
    return url


def _dead_limiter(url: str, prefix: str) -> RedisRateLimiter:
    return redis_limiter(prefix, url, connect_s=_TIMEOUT_S, read_s=_TIMEOUT_S)


async def test_a_dead_redis_fails_fast_as_unavailable(dead_redis_url: str) -> None:
    limiter = _dead_limiter(dead_redis_url, "mgtest:dead:")
    try:
        started = time.monotonic()
        with pytest.raises(ModelgateError) as raised:
            await limiter.hit("k", 3, 1.0)
        elapsed = time.monotonic() - started
    finally:
        await limiter.close()

    assert raised.value.kind is ErrorKind.UNAVAILABLE
    assert elapsed < _BOUND_S


async def test_fail_open_caps_each_replica_with_a_local_limiter(dead_redis_url: str) -> None:
    limiter = FallbackRateLimiter(
        _dead_limiter(dead_redis_url, "mgtest:dead:"), MemoryRateLimiter(), "open"
    )
    try:
        started = time.monotonic()
        decisions = [await limiter.hit("k", 3, LONG_WINDOW_S) for _ in range(4)]
        elapsed = time.monotonic() - started
        assert limiter.degraded
    finally:
        await limiter.close()

    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert elapsed < _BOUND_S


async def test_fail_closed_refuses(dead_redis_url: str) -> None:
    limiter = FallbackRateLimiter(
        _dead_limiter(dead_redis_url, "mgtest:dead:"), MemoryRateLimiter(), "closed"
    )
    try:
        started = time.monotonic()
        decisions = [await limiter.hit("k", 3, LONG_WINDOW_S) for _ in range(3)]
        elapsed = time.monotonic() - started
        assert limiter.degraded
    finally:
        await limiter.close()

    assert not any(d.allowed for d in decisions)
    assert all(d.retry_after_s == 1.0 for d in decisions)
    assert elapsed < _BOUND_S


async def test_a_dead_redis_is_not_asked_again_during_the_cool_down(
    silent_server: tuple[str, list[int]],
) -> None:
    url, accepted = silent_server
    limiter = FallbackRateLimiter(_dead_limiter(url, "mgtest:dead:"), MemoryRateLimiter(), "open")
    try:
        started = time.monotonic()
        for _ in range(20):
            await limiter.hit("k", 100, LONG_WINDOW_S)
        elapsed = time.monotonic() - started
    finally:
        await limiter.close()

    assert len(accepted) == 1
    assert elapsed < _BOUND_S


class _SwitchableProxy:
    """A TCP proxy to the real Redis that can be switched off (it then drops every
    connection, established or new); counts the connections it is asked for."""

    def __init__(self) -> None:
        self.up = False
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"redis://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/0"

    async def stop(self) -> None:
        self.switch(up=False)
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def switch(self, *, up: bool) -> None:
        self.up = up
        if not up:
            for writer in self._writers:
                writer.close()
            self._writers.clear()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if not self.up:
            writer.close()
            return
        upstream = urlsplit(REDIS_URL)
        up_reader, up_writer = await asyncio.open_connection(upstream.hostname, upstream.port)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except OSError:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_redis_is_used_again_after_the_cool_down(redis_prefix: str) -> None:
    proxy = _SwitchableProxy()
    url = await proxy.start()
    cooldown_s = 0.3
    limiter = FallbackRateLimiter(
        _dead_limiter(url, redis_prefix), MemoryRateLimiter(), "open", cooldown_s=cooldown_s
    )
    try:
        assert (await limiter.hit("k", 10, LONG_WINDOW_S)).allowed
        assert limiter.degraded

        proxy.switch(up=True)
        during = await limiter.hit("k", 10, LONG_WINDOW_S)
        assert limiter.degraded and proxy.connections == 1  # Redis not asked yet
        assert during.remaining == 8  # the local limiter's count

        await asyncio.sleep(cooldown_s + 0.05)
        after = await limiter.hit("k", 10, LONG_WINDOW_S)
        assert not limiter.degraded and proxy.connections == 2
        assert after.allowed and after.remaining == 9  # Redis's own count for the key
        with redis.Redis.from_url(REDIS_URL) as client:
            assert client.exists(f"{redis_prefix}k")
    finally:
        await limiter.close()
        await proxy.stop()
