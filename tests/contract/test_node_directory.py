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
