"""``RedisNodeDirectory``: where a gateway finds the nodes that announce themselves.

Each node writes its announcement (JSON: id, address, hardware, memory, models with their
manifests, draining) to ``{prefix}node:{id}`` with a time to live, and writes it again
every heartbeat; on a clean shutdown it first marks itself draining, then deletes the key.
A node that dies stops renewing the key and drops out within the TTL (its breaker has
usually opened long before). Gateways read every announcement each refresh (one ``SCAN``
and one ``MGET``).

**Models served recently.** Each announcement also refreshes, per model it lists, a record
of its versions and manifests, ``{prefix}served:{model}``, that lives ``served_ttl_s`` (a
day by default, ``MODELGATE_SERVED_MODELS_TTL_SECONDS``), far longer than the node's entry,
and the model's place in the index ``{prefix}served`` (a sorted set scored by the time of
the last announcement, pruned of names older than the TTL and held to the newest
``max_served``). A gateway reads the catalogue with each refresh (one ``ZREVRANGE`` of at
most ``max_served`` names and one ``MGET``): a model in it that no live node announces is
one whose pool scaled to zero, known to the gateway (it waits for a node:
:mod:`modelgate.core.gateway.cold_start`) even when no node has announced it since the
gateway started, as Knative's activator knows its revisions. Only announcements write it:
nothing a client sends adds a model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import orjson

from modelgate.core.gateway.nodes import NodeInfo, parse_node
from modelgate.core.serving.manifest import ModelManifest, parse_manifest
from modelgate.errors import ModelgateError

__all__ = ["MAX_SERVED", "SERVED_TTL_S", "RedisNodeDirectory", "node_key", "served_key"]

#: how long a model stays in the catalogue after its last announcement, by default (a day)
SERVED_TTL_S = 86_400.0
#: the most models the catalogue holds (the newest announced ones) and a gateway reads
MAX_SERVED = 10_000

log = logging.getLogger("modelgate.cluster")


def node_key(prefix: str, node_id: str) -> str:
    return f"{prefix}node:{node_id}"


def served_key(prefix: str, model: str) -> str:
    """The catalogue record of ``model`` (its versions' manifests as last announced)."""
    return f"{prefix}served:{model}"


def _served_records(document: Mapping[str, Any]) -> dict[str, bytes]:
    """model -> its catalogue record, from a node's announcement: the versions of the
    models it lists, a sharded model's manifest (the one with its stages) included."""
    versions: dict[str, dict[str, Any]] = {}
    for section in ("models", "sharded"):
        for name, entry in (document.get(section) or {}).items():
            versions.setdefault(str(name), {}).update(entry.get("versions") or {})
    return {name: orjson.dumps({"versions": found}) for name, found in versions.items() if found}


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
        clock: Any = time.time,
    ):
        self.client = client
        self.prefix = prefix
        self.ttl_ms = max(int(ttl_s * 1000), 1)
        #: how long a model stays in the catalogue after its last announcement (0: no
        #: catalogue is written)
        self.served_ttl_ms = max(int(served_ttl_s * 1000), 0)
        self.max_served = max_served
        self._clock = clock  # wall-clock seconds: the index's scores, shared by processes
        self._index = f"{prefix}served"
        #: each catalogue record's last value and what it parsed to (as ``_parsed``)
        self._served: dict[str, tuple[bytes, dict[int, ModelManifest]]] = {}
        self._broken_served: set[str] = set()  # records already logged as unreadable
        self._broken: set[bytes] = set()  # keys already logged as unreadable
        #: each key's last announcement and what it parsed to: a node re-announces the
        #: same document every heartbeat, and a gateway reads them all every refresh
        self._parsed: dict[bytes, tuple[bytes, NodeInfo]] = {}

    async def announce(self, document: dict[str, Any]) -> None:
        """Write the node's entry and refresh the catalogue records of the models it lists,
        in one round trip (a pipeline, not a transaction)."""
        key = node_key(self.prefix, str(document["id"]))
        records = _served_records(document) if self.served_ttl_ms else {}
        if not records:
            await self.client.set(key, orjson.dumps(document), px=self.ttl_ms)
            return
        now_ms = int(self._clock() * 1000)
        pipe = self.client.pipeline(transaction=False)
        pipe.set(key, orjson.dumps(document), px=self.ttl_ms)
        for name, record in records.items():
            pipe.set(served_key(self.prefix, name), record, px=self.served_ttl_ms)
        pipe.zadd(self._index, dict.fromkeys(records, now_ms))
        pipe.zremrangebyscore(self._index, "-inf", f"({now_ms - self.served_ttl_ms}")
        pipe.zremrangebyrank(self._index, 0, -self.max_served - 1)  # the newest max_served
        pipe.pexpire(self._index, self.served_ttl_ms)
        await pipe.execute()

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
        """The catalogue: model -> version -> manifest, of the models announced within the
        TTL (the newest ``max_served``); a record that does not parse is left out (logged
        once). Raises what Redis raised."""
        names = [
            n.decode() if isinstance(n, bytes) else str(n)
            for n in await self.client.zrevrange(self._index, 0, self.max_served - 1)
        ]
        if not names:
            self._served = {}
            return {}
        values = await self.client.mget([served_key(self.prefix, n) for n in names])
        found: dict[str, dict[int, ModelManifest]] = {}
        kept: dict[str, tuple[bytes, dict[int, ModelManifest]]] = {}
        for name, value in zip(names, values, strict=True):
            if value is None:  # expired (its record's TTL ends with the index's pruning)
                continue
            known = self._served.get(name)
            if known is not None and known[0] == value:
                versions = known[1]
            else:
                try:
                    versions = _parse_record(name, value)
                except ValueError as exc:
                    if name not in self._broken_served:
                        self._broken_served.add(name)
                        log.warning("ignoring the catalogue record of model %r: %s", name, exc)
                    continue
            kept[name] = (value, versions)
            found[name] = versions
        self._served = kept
        return found

    async def close(self) -> None:
        await self.client.aclose()


def _parse_record(name: str, value: bytes) -> dict[int, ModelManifest]:
    """A catalogue record's versions; ValueError naming the problem."""
    try:
        entry = orjson.loads(value)
        versions = {
            int(number): parse_manifest(name, {k: v for k, v in manifest.items() if k != "name"})
            for number, manifest in entry["versions"].items()
        }
    except ModelgateError as exc:
        raise ValueError(exc.message) from None
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"malformed record: {exc!r}") from None
    if not versions:
        raise ValueError("no versions")
    return versions
