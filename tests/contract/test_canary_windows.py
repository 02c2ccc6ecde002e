"""``RedisCanaryWindows`` on the machine's Redis (``MODELGATE_TEST_REDIS_URL``), under a
fresh key prefix whose keys are deleted afterwards: two replicas see each other's windows,
the step's hash expires, junk in it is ignored, and an unreachable Redis is UNAVAILABLE."""

from __future__ import annotations

import secrets
import socket
from collections.abc import AsyncIterator

import pytest
import redis

from modelgate.core.traffic.canary import StepWindow, merge
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.redis.canary_windows import RedisCanaryWindows
from modelgate.storage.redis.client import create_redis_client
from tests.conftest import REDIS_URL

pytestmark = pytest.mark.asyncio


@pytest.fixture
async def prefix() -> AsyncIterator[str]:
    name = f"mgtest:{secrets.token_hex(6)}:"
    yield name
    with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as client:
        for key in client.scan_iter(f"{name}*"):
            client.delete(key)


def replica(prefix: str, url: str = REDIS_URL) -> RedisCanaryWindows:
    client = create_redis_client(url, connect_timeout_s=5.0, read_timeout_s=5.0)
    return RedisCanaryWindows(client, prefix=prefix)


def one_window(candidate_errors: int) -> StepWindow:
    found = StepWindow.empty()
    for i in range(10):
        found.baseline.add("ok", 0.010)
        found.candidate.add("internal" if i < candidate_errors else "ok", 0.020)
    return found


async def test_two_replicas_see_each_others_windows(prefix: str) -> None:
    a, b = replica(prefix), replica(prefix)
    try:
        seen_by_a = await a.exchange("m", 3, "a", one_window(1).snapshot(), 60)
        assert len(seen_by_a) == 1
        seen_by_b = await b.exchange("m", 3, "b", one_window(4).snapshot(), 60)
        merged = merge(seen_by_b)
        assert merged.replicas == 2
        assert (merged.candidate.requests, merged.candidate.errors) == (20, 5)
        # a replica's later exchange replaces its own window, never adds to it
        again = merge(await a.exchange("m", 3, "a", one_window(2).snapshot(), 60))
        assert (again.candidate.requests, again.candidate.errors) == (20, 6)
        # another step (revision) is another window
        assert len(await a.exchange("m", 4, "a", one_window(0).snapshot(), 60)) == 1
        with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as client:
            ttl = client.ttl(f"{prefix}canary:m:3")
            assert 0 < ttl <= 60  # the step's windows go away after the last exchange
            client.hset(f"{prefix}canary:m:3", "junk", b"\xff not json")
        assert merge(await a.exchange("m", 3, "a", one_window(2).snapshot(), 60)).replicas == 2
    finally:
        await a.close()
        await b.close()


async def test_an_unreachable_redis_is_unavailable(prefix: str) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    down = replica(prefix, f"redis://127.0.0.1:{port}/0")
    try:
        with pytest.raises(ModelgateError) as caught:
            await down.exchange("m", 1, "a", one_window(0).snapshot(), 60)
        assert caught.value.kind is ErrorKind.UNAVAILABLE
    finally:
        await down.close()
