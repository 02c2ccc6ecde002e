"""``RedisNodeDirectory``: where a gateway finds the nodes that announce themselves.

Each node writes its announcement (JSON: id, address, hardware, memory, models with their
manifests, draining) to ``{prefix}node:{id}`` with a time to live, and writes it again
every heartbeat; on a clean shutdown it first marks itself draining, then deletes the key.
A node that dies stops renewing the key and drops out within the TTL (its breaker has
usually opened long before). Gateways read every announcement each refresh (one ``SCAN``
and one ``MGET``).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from modelgate.core.gateway.nodes import NodeInfo, parse_node

__all__ = ["RedisNodeDirectory", "node_key"]

log = logging.getLogger("modelgate.cluster")


def node_key(prefix: str, node_id: str) -> str:
    return f"{prefix}node:{node_id}"


class RedisNodeDirectory:
    """Announcements in Redis: written by nodes (:meth:`announce`), read by gateways."""

    def __init__(self, client: Any, *, prefix: str, ttl_s: float = 6.0):
        self.client = client
        self.prefix = prefix
        self.ttl_ms = max(int(ttl_s * 1000), 1)
        self._broken: set[bytes] = set()  # keys already logged as unreadable
        #: each key's last announcement and what it parsed to: a node re-announces the
        #: same document every heartbeat, and a gateway reads them all every refresh
        self._parsed: dict[bytes, tuple[bytes, NodeInfo]] = {}

    async def announce(self, document: dict[str, Any]) -> None:
        await self.client.set(
            node_key(self.prefix, str(document["id"])), orjson.dumps(document), px=self.ttl_ms
        )

    async def leave(self, node_id: str) -> None:
        await self.client.delete(node_key(self.prefix, node_id))

    async def nodes(self) -> list[NodeInfo]:
        keys = [key async for key in self.client.scan_iter(match=f"{self.prefix}node:*", count=200)]
        if not keys:
            return []
        found = []
        parsed: dict[bytes, tuple[bytes, NodeInfo]] = {}
        for key, value in zip(keys, await self.client.mget(keys), strict=True):
            if value is None:  # expired between SCAN and MGET
                continue
            known = self._parsed.get(key)
            if known is not None and known[0] == value:
                info = known[1]
            else:
                try:
                    info = parse_node(orjson.loads(value))
                except (ValueError, orjson.JSONDecodeError) as exc:
                    if key not in self._broken:
                        self._broken.add(key)
                        log.warning("ignoring the node announcement %r: %s", key, exc)
                    continue
            parsed[key] = (value, info)
            found.append(info)
        self._parsed = parsed
        return found

    async def close(self) -> None:
        await self.client.aclose()
