"""``RedisNodeDirectory`` on the machine's Redis (``MODELGATE_TEST_REDIS_URL``), under a
fresh key prefix whose keys are deleted afterwards: announcements are read back, expire,
leave; a broken one is skipped; an unchanged one is not parsed again at every refresh."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis

from modelgate.storage.redis import node_directory as directory_module
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


@pytest.fixture
async def catalogue(redis_prefix: str) -> AsyncIterator[RedisNodeDirectory]:
    """A directory whose node entries live 0.5 s and whose catalogue of models served
    recently holds at most 3 models for 30 s."""
    client = create_redis_client(REDIS_URL, connect_timeout_s=5.0, read_timeout_s=5.0)
    found = RedisNodeDirectory(
        client, prefix=redis_prefix, ttl_s=0.5, served_ttl_s=30.0, max_served=3
    )
    yield found
    await found.close()


def serving(node_id: str, *models: str) -> dict[str, Any]:
    manifest = MANIFEST.model_dump(mode="json", exclude={"name"})
    document = announcement(node_id)
    document["models"] = {m: {"versions": {"1": manifest, "2": manifest}} for m in models}
    return document


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


async def test_the_catalogue_is_bounded_and_pruned(catalogue: RedisNodeDirectory) -> None:
    clock = [1_000.0]
    catalogue._clock = lambda: clock[0]
    await catalogue.announce(serving("a", "old"))
    clock[0] += 1
    await catalogue.announce(serving("b", "m1", "m2"))
    clock[0] += 1
    await catalogue.announce(serving("c", "m3"))  # a fourth model: the oldest one goes
    assert sorted(await catalogue.served()) == ["m1", "m2", "m3"]
    assert await catalogue.client.zcard(f"{catalogue.prefix}served") == 3
    clock[0] += 31  # past the TTL on the writer's clock: older names leave the index
    await catalogue.announce(serving("d", "new"))
    assert sorted(await catalogue.served()) == ["new"]


async def test_a_broken_catalogue_record_is_skipped(catalogue: RedisNodeDirectory) -> None:
    await catalogue.announce(serving("a", "m", "bad"))
    await catalogue.client.set(f"{catalogue.prefix}served:bad", b"{not json", px=5000)
    assert sorted(await catalogue.served()) == ["m"]


async def test_no_catalogue_when_its_ttl_is_zero(redis_prefix: str) -> None:
    client = create_redis_client(REDIS_URL, connect_timeout_s=5.0, read_timeout_s=5.0)
    directory = RedisNodeDirectory(client, prefix=redis_prefix, served_ttl_s=0)
    try:
        await directory.announce(serving("a", "m"))
        assert [n.id for n in await directory.nodes()] == ["a"]
        assert await directory.served() == {}
        assert await client.exists(f"{redis_prefix}served:m") == 0
    finally:
        await directory.close()
