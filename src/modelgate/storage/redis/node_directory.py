"""``RedisNodeDirectory``: where a gateway finds the nodes that announce themselves.

Each node writes its announcement (JSON: id, address, hardware, memory, models with their
manifests, draining) to ``{prefix}node:{id}`` with a time to live, and writes it again
every heartbeat; on a clean shutdown it first marks itself draining, then deletes the key.
A node that dies stops renewing the key and drops out within the TTL (its breaker has
usually opened long before). Gateways read every announcement each refresh (one ``SCAN``
and one ``MGET``).

**Models served recently.** An announcement also writes, when they changed or a minute
has passed, the records of the models it lists in the cluster's catalogue of models served
recently (``{prefix}served:{model}``, one field per version, and the index
``{prefix}served``), in one Lua script with the node's entry: one round trip, timed by the
Redis server's clock. The records live ``served_ttl_s`` (a day by default,
``MODELGATE_SERVED_MODELS_TTL_SECONDS``), far longer than the node's entry, and the catalogue
is bounded (``max_served`` models of :data:`~.served_models.MAX_VERSIONS` versions). A
gateway reads it (:meth:`RedisNodeDirectory.served`, every version of every model, in two
round trips) at start and then every 30 s: a model in it that no live node announces is one
whose pool scaled to zero, known to the gateway (it waits for a node:
:mod:`modelgate.core.gateway.cold_start`) even when no node has announced it since the
gateway started, as Knative's activator knows its revisions. Only announcements write it:
nothing a client sends adds a model. The layout, the script and the bounds are
:mod:`modelgate.storage.redis.served_models`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from modelgate.core.gateway.nodes import NodeInfo, parse_node
from modelgate.core.serving.manifest import ModelManifest
from modelgate.storage.redis.served_models import (
    ANNOUNCE_SCRIPT,
    MAX_SERVED,
    MAX_VERSIONS,
    SERVED_TTL_S,
    ServedReads,
    ServedWrites,
    rewrite_interval,
    served_key,
)

__all__ = ["MAX_SERVED", "SERVED_TTL_S", "RedisNodeDirectory", "node_key", "served_key"]

log = logging.getLogger("modelgate.cluster")


def node_key(prefix: str, node_id: str) -> str:
    return f"{prefix}node:{node_id}"


class RedisNodeDirectory:
    """Announcements in Redis: written by nodes (:meth:`announce`), read by gateways."""

    def __init__(
        self,
        client: Any,
        *,
        prefix: str,
        ttl_s: float = 6.0,
        served_ttl_s: float = SERVED_TTL_S,
        max_served: int = MAX_SERVED,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.client = client
        self.prefix = prefix
        self.ttl_ms = max(int(ttl_s * 1000), 1)
        #: how long a version stays in the catalogue after its last announcement (0: no
        #: catalogue is written)
        self.served_ttl_ms = max(int(served_ttl_s * 1000), 0)
        self.max_served = max_served
        #: a node's records: written when changed or due (``clock``: this process's own,
        #: for that cadence alone; the catalogue's times are the Redis server's)
        self._writes = ServedWrites(rewrite_interval(served_ttl_s), clock)
        self._script = client.register_script(ANNOUNCE_SCRIPT)
        self._reads = ServedReads(client, prefix=prefix, max_served=max_served)
        self._broken: set[bytes] = set()  # keys already logged as unreadable
        #: each key's last announcement and what it parsed to: a node re-announces the
        #: same document every heartbeat, and a gateway reads them all every refresh
        self._parsed: dict[bytes, tuple[bytes, NodeInfo]] = {}

    async def announce(self, document: dict[str, Any]) -> None:
        """Write the node's entry, and the catalogue records of the models it lists that
        changed or are due, in one round trip (a ``SET``, or the script with them)."""
        key = node_key(self.prefix, str(document["id"]))
        due = self._writes.due(document) if self.served_ttl_ms else {}
        if not due:
            await self.client.set(key, orjson.dumps(document), px=self.ttl_ms)
            return
        await self._script(
            keys=[key, f"{self.prefix}served"],
            args=[
                orjson.dumps(document),
                self.ttl_ms,
                self.served_ttl_ms,
                self.max_served,
                MAX_VERSIONS,
                served_key(self.prefix, ""),
                *ServedWrites.arguments(due),
            ],
        )
        self._writes.written(due)

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

    async def served(self) -> dict[str, dict[int, ModelManifest]]:
        """The catalogue: model -> version -> manifest, every version announced within the
        TTL of the newest ``max_served`` models, whichever node announced it; a version
        that does not parse is left out (logged once). Raises what Redis raised."""
        return await self._reads.read()

    async def close(self) -> None:
        await self.client.aclose()
