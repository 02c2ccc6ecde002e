"""``RedisNodeDirectory`` on the machine's Redis (``MODELGATE_TEST_REDIS_URL``), under a
fresh key prefix whose keys are deleted afterwards: announcements are read back, expire,
leave; a broken one is skipped; an unchanged one is not parsed again at every refresh. The
catalogue of models served recently (storage/redis/served_models.py): records outlive the
node's entry; versions announced by different nodes are merged; times are the Redis
server's, whatever a node's clock says; old names, versions and models beyond the bounds
are dropped with their records; an unchanged record is not rewritten until it is due; a
broken one is skipped."""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import redis

from modelgate.storage.redis import node_directory as directory_module
from modelgate.storage.redis import served_models
from modelgate.storage.redis.client import create_redis_client
from modelgate.storage.redis.node_directory import RedisNodeDirectory
from tests.conftest import REDIS_URL
from tests.unit.gateway.test_cluster import MANIFEST

pytestmark = pytest.mark.asyncio


def announcement(node_id: str, draining: bool = False) -> dict[str, Any]:
    manifest = MANIFEST.model_dump(mode="json", exclude={"name"})
    return {
        "id": node_id,
        "address": f"{node_id}:8001",
        "hardware": "cpu",
        "draining": draining,
        "models": {"m": {"versions": {"1": manifest}}},
    }


@pytest.fixture
async def directory() -> AsyncIterator[RedisNodeDirectory]:
    prefix = f"mgtest:{secrets.token_hex(6)}:"
    client = create_redis_client(REDIS_URL, connect_timeout_s=5.0, read_timeout_s=5.0)
    found = RedisNodeDirectory(client, prefix=prefix, ttl_s=0.5)
    yield found
    await found.close()
    with redis.Redis.from_url(REDIS_URL, socket_timeout=5) as admin:
        for key in admin.scan_iter(f"{prefix}*"):
            admin.delete(key)


async def test_announce_read_leave_and_expire(directory: RedisNodeDirectory) -> None:
    assert await directory.nodes() == []
    await directory.announce(announcement("a"))
    await directory.announce(announcement("b"))
    assert sorted(n.id for n in await directory.nodes()) == ["a", "b"]
    await directory.leave("a")
    assert [n.id for n in await directory.nodes()] == ["b"]
    await asyncio.sleep(0.7)  # b stopped heartbeating: its entry expires
    assert await directory.nodes() == []


async def test_a_broken_announcement_is_skipped(directory: RedisNodeDirectory) -> None:
    await directory.announce(announcement("good"))
    await directory.client.set(f"{directory.prefix}node:bad", b"{not json", px=5000)
    await directory.client.set(f"{directory.prefix}node:odd", b'{"id": 7}', px=5000)
    assert [n.id for n in await directory.nodes()] == ["good"]


async def test_an_unchanged_announcement_is_parsed_once(
    directory: RedisNodeDirectory, monkeypatch: pytest.MonkeyPatch
) -> None:
    parsed: list[str] = []
    real = directory_module.parse_node

    def counting(document: dict[str, Any]) -> Any:
        parsed.append(document["id"])
        return real(document)

    monkeypatch.setattr(directory_module, "parse_node", counting)
    for _ in range(3):  # a node heartbeats the same document; the gateway refreshes
        await directory.announce(announcement("a"))
        assert [n.id for n in await directory.nodes()] == ["a"]
    assert parsed == ["a"]
    await directory.announce(announcement("a", draining=True))  # changed: parsed again
    [node] = await directory.nodes()
    assert node.draining and parsed == ["a", "a"]


def _directory(prefix: str, **kwargs: Any) -> RedisNodeDirectory:
    client = create_redis_client(REDIS_URL, connect_timeout_s=5.0, read_timeout_s=5.0)
    return RedisNodeDirectory(client, prefix=prefix, ttl_s=0.5, **kwargs)


@pytest.fixture
async def catalogue(redis_prefix: str) -> AsyncIterator[RedisNodeDirectory]:
    """A directory whose node entries live 0.5 s and whose catalogue of models served
    recently holds at most 3 models for 30 s."""
    found = _directory(redis_prefix, served_ttl_s=30.0, max_served=3)
    yield found
    await found.close()


def serving(node_id: str, *models: str, versions: tuple[int, ...] = (1, 2)) -> dict[str, Any]:
    manifest = MANIFEST.model_dump(mode="json", exclude={"name"})
    document = announcement(node_id)
    document["models"] = {m: {"versions": {str(v): manifest for v in versions}} for m in models}
    return document


async def _server_ms(client: Any) -> int:
    seconds, micros = await client.time()
    return int(seconds) * 1000 + int(micros) // 1000


async def test_the_catalogue_outlives_the_node_entry(catalogue: RedisNodeDirectory) -> None:
    assert await catalogue.served() == {}
    await catalogue.announce(serving("a", "m", "n"))
    await catalogue.leave("a")  # the pool scales to zero
    assert await catalogue.nodes() == []
    served = await catalogue.served()
    assert sorted(served) == ["m", "n"]
    assert sorted(served["m"]) == [1, 2]
    assert served["m"][2].inputs == MANIFEST.inputs and served["m"][2].name == "m"
    # each record and the index expire on their own, within the catalogue's TTL
    client = catalogue.client
    for key in (f"{catalogue.prefix}served:m", f"{catalogue.prefix}served"):
        assert 0 < await client.pttl(key) <= 30_000


async def test_versions_announced_by_different_nodes_are_merged(
    catalogue: RedisNodeDirectory, redis_prefix: str
) -> None:
    """v1 on a pool always on, v2 on a pool that scales to zero: whichever announced last,
    a gateway's read has both."""
    zero_pool = _directory(redis_prefix, served_ttl_s=30.0, max_served=3)
    try:
        await zero_pool.announce(serving("zero", "m", versions=(2,)))
        await zero_pool.leave("zero")
        await catalogue.announce(serving("always", "m", versions=(1,)))
        served = await catalogue.served()
        assert sorted(served["m"]) == [1, 2]
        await zero_pool.announce(serving("zero", "m", versions=(2,)))  # the other order
        assert sorted((await catalogue.served())["m"]) == [1, 2]
    finally:
        await zero_pool.close()


async def test_times_are_the_servers_whatever_a_node_clock_says(redis_prefix: str) -> None:
    """A node whose clock is two days ahead, and one two days behind, score their models
    with the Redis server's time: neither prunes the other's models."""
    day = 86_400.0

    def off(by: float) -> Callable[[], float]:
        return lambda: time.monotonic() + by

    nodes = [
        _directory(redis_prefix, served_ttl_s=day, clock=off(0.0)),
        _directory(redis_prefix, served_ttl_s=day, clock=off(2 * day)),
        _directory(redis_prefix, served_ttl_s=day, clock=off(-2 * day)),
    ]
    try:
        for number, node in enumerate(nodes):
            await node.announce(serving(f"n{number}", f"m{number}"))
        before = await _server_ms(nodes[0].client)
        assert sorted(await nodes[0].served()) == ["m0", "m1", "m2"]
        for number in range(3):
            score = await nodes[0].client.zscore(f"{redis_prefix}served", f"m{number}")
            assert before - 5_000 <= score <= before
            stamp = await nodes[0].client.hget(f"{redis_prefix}served:m{number}", "@1")
            assert int(stamp) == score
    finally:
        for node in nodes:
            await node.close()


async def test_the_catalogue_is_bounded_and_its_evicted_records_deleted(
    catalogue: RedisNodeDirectory,
) -> None:
    client, prefix = catalogue.client, catalogue.prefix
    for node, models in (("a", ("old",)), ("b", ("m1", "m2")), ("c", ("m3",))):
        await catalogue.announce(serving(node, *models))
        await asyncio.sleep(0.005)  # a later server millisecond: a later score
    # a fourth model: the oldest one leaves the index, and its record goes with it
    assert sorted(await catalogue.served()) == ["m1", "m2", "m3"]
    assert await client.zcard(f"{prefix}served") == 3
    assert await client.exists(f"{prefix}served:old") == 0


async def test_names_and_versions_past_the_ttl_are_dropped(redis_prefix: str) -> None:
    """With a 0.3 s TTL: a version no node announced within it leaves its model's record at
    the model's next write; a model none announced within it leaves the index at the next
    write of any model."""
    a = _directory(redis_prefix, served_ttl_s=0.3)
    b = _directory(redis_prefix, served_ttl_s=0.3)
    try:
        await a.announce(serving("a", "m", "gone", versions=(1,)))
        await asyncio.sleep(0.2)
        await b.announce(serving("b", "m", versions=(2,)))
        assert sorted((await b.served())["m"]) == [1, 2]
        await asyncio.sleep(0.2)  # v1 is 0.4 s old, v2 0.2 s: b's record of m is due
        await b.announce(serving("b", "m", versions=(2,)))
        record = await b.client.hgetall(f"{redis_prefix}served:m")
        assert sorted(record) == [b"2", b"@2"]
        assert await b.client.zscore(f"{redis_prefix}served", "gone") is None
        assert sorted(await b.served()) == ["m"]
    finally:
        await a.close()
        await b.close()


async def test_a_record_holds_the_newest_versions(catalogue: RedisNodeDirectory) -> None:
    """At most MAX_VERSIONS versions per model: the highest numbers a node announces, then
    the newest announced."""
    limit = served_models.MAX_VERSIONS
    await catalogue.announce(serving("a", "m", versions=tuple(range(1, limit + 21))))
    assert sorted((await catalogue.served())["m"]) == list(range(21, limit + 21))
    await asyncio.sleep(0.005)
    await catalogue.announce(serving("b", "m", versions=(limit + 100,)))
    versions = sorted((await catalogue.served())["m"])
    assert len(versions) == limit and versions[0] == 22 and versions[-1] == limit + 100


async def test_an_unchanged_record_is_rewritten_only_when_due(redis_prefix: str) -> None:
    """Heartbeats renew the node's entry; a record is written again when what the node
    announces of it changes, or when it is due (30 s TTL: every 7.5 s): in between its
    TTL runs down and its score stays."""
    now = [1_000.0]
    node = _directory(redis_prefix, served_ttl_s=30.0, clock=lambda: now[0])
    client = node.client
    record, index = f"{redis_prefix}served:m", f"{redis_prefix}served"
    try:
        await node.announce(serving("a", "m"))
        score = await client.zscore(index, "m")
        await asyncio.sleep(0.3)
        now[0] += 5  # within the rewrite interval
        await node.announce(serving("a", "m"))
        assert await client.pttl(record) <= 29_750  # not renewed
        assert await client.zscore(index, "m") == score
        assert await client.pttl(f"{redis_prefix}node:a") > 400  # the entry is
        now[0] += 3  # due
        await node.announce(serving("a", "m"))
        assert await client.pttl(record) > 29_750
        assert await client.zscore(index, "m") > score
        await asyncio.sleep(0.3)
        await node.announce(serving("a", "m", versions=(1, 2, 3)))  # changed: written now
        assert await client.pttl(record) > 29_750
        assert await client.hexists(record, "3")
    finally:
        await node.close()


async def test_a_broken_catalogue_record_is_skipped(
    catalogue: RedisNodeDirectory, caplog: pytest.LogCaptureFixture
) -> None:
    """A version that does not parse is left out, the model's others kept; a record that is
    not a hash (an older release's) is left out, and replaced by the next write; each is
    logged once."""
    client, prefix = catalogue.client, catalogue.prefix
    await catalogue.announce(serving("a", "m", "bad"))
    await client.hset(f"{prefix}served:bad", "2", b"{not json")
    await client.hset(f"{prefix}served:m", "x", b"{}")
    await client.set(f"{prefix}served:old", b'{"versions": {}}', px=5000)
    await client.zadd(f"{prefix}served", {"old": 1})
    with caplog.at_level(logging.WARNING, logger="modelgate.cluster"):
        for _ in range(2):
            served = await catalogue.served()
            assert {name: sorted(v) for name, v in served.items()} == {"bad": [1], "m": [1, 2]}
    assert len([r for r in caplog.records if "catalogue record" in r.message]) == 3
    await catalogue.announce(serving("b", "old"))  # not a hash: replaced, no error
    assert sorted((await catalogue.served())["old"]) == [1, 2]


async def test_no_catalogue_when_its_ttl_is_zero(redis_prefix: str) -> None:
    directory = _directory(redis_prefix, served_ttl_s=0)
    try:
        await directory.announce(serving("a", "m"))
        assert [n.id for n in await directory.nodes()] == ["a"]
        assert await directory.served() == {}
        assert await directory.client.exists(f"{redis_prefix}served:m") == 0
    finally:
        await directory.close()
