"""The cluster's catalogue of models served recently, in Redis: how a node's announcement
writes it (:class:`ServedWrites`, :data:`ANNOUNCE_SCRIPT`) and how a gateway reads it
(:class:`ServedReads`). :class:`~modelgate.storage.redis.node_directory.RedisNodeDirectory`
holds one of each.

**Layout.** ``{prefix}served:{model}`` is a hash with two fields per version: ``{version}``,
its manifest (JSON, without the name) as a node last announced it, and ``@{version}``, the
Redis server's time in ms of that announcement. ``{prefix}served`` is the index, a sorted
set of model names scored by the server's time of the last write of the model. So versions
of one model announced by different pools (v1 on a pool always on, v2 on one that scales
to zero) sit side by side, and a gateway sees both.

**Writes** (nodes). One Lua script per heartbeat that has records to write, also writing
the node's own entry (one round trip, under the client's socket timeouts): it takes the
time from ``TIME`` (never a node's clock, which may be a day off), sets the versions, drops
a model's versions older than the TTL and beyond its newest :data:`MAX_VERSIONS`, renews
the record's expiry, scores the model with ``ZADD GT``, then drops from the index the
names older than the TTL and beyond the newest ``max_served``, deleting their records. A
node writes a model's record only when what it announces of it changed, or when it last
wrote it :func:`rewrite_interval` ago (a minute, less under a short TTL): in between, a
heartbeat is one ``SET`` of the node's entry, as without the catalogue. A record that is
not a hash (written by an older release) is replaced.

**Reads** (gateways). One ``ZREVRANGE`` of at most ``max_served`` names, then one pipeline
of ``HGETALL`` (two round trips), at most every 30 s
(:data:`~modelgate.core.gateway.node_table.SERVED_READ_S`). A version's manifest is parsed
once while its bytes stay the same; one that does not parse is left out, logged once.

Bounds: ``max_served`` models of :data:`MAX_VERSIONS` versions each, every version gone
within the TTL of its last announcement (a minute more at most: its model's next write
prunes it, or the whole record expires). The script touches record keys it derives from
the prefix (one Redis, not Redis Cluster), and ``ZADD GT`` needs Redis 6.2 or newer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson

from modelgate.core.serving.manifest import ModelManifest, parse_manifest
from modelgate.errors import ModelgateError

__all__ = [
    "ANNOUNCE_SCRIPT",
    "MAX_SERVED",
    "MAX_VERSIONS",
    "REWRITE_S",
    "SERVED_TTL_S",
    "ServedReads",
    "ServedWrites",
    "rewrite_interval",
    "served_key",
]

#: how long a version stays in the catalogue after its last announcement, by default (a day)
SERVED_TTL_S = 86_400.0
#: the most models the catalogue holds (the newest announced ones) and a gateway reads
MAX_SERVED = 10_000
#: the most versions a model's record holds (the newest announced ones)
MAX_VERSIONS = 100
#: a node rewrites an unchanged record this often, to renew its TTL and its index score
REWRITE_S = 60.0

log = logging.getLogger("modelgate.cluster")

#: KEYS[1]: the node's entry, KEYS[2]: the index. ARGV[1]: the announcement, ARGV[2]: its
#: TTL in ms, ARGV[3]: the catalogue's TTL in ms, ARGV[4]: the most models, ARGV[5]: the
#: most versions per model, ARGV[6]: the records' key prefix (``{prefix}served:``), then per
#: model: its name, its number of versions n, and n pairs (version, manifest). Times are the
#: server's, in ms, written with '%.0f' (Lua 5.1 numbers are doubles).
ANNOUNCE_SCRIPT = """
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local t = redis.call('TIME')
local now = string.format('%.0f', tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000))
local ttl = tonumber(ARGV[3])
local oldest = tonumber(now) - ttl
local keep = tonumber(ARGV[5])
local i = 7
while i <= #ARGV do
  local name, n = ARGV[i], tonumber(ARGV[i + 1])
  local key = ARGV[6] .. name
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'hash' and kind ~= 'none' then
    redis.call('DEL', key)
  end
  for j = 0, n - 1 do
    local version = ARGV[i + 2 + 2 * j]
    redis.call('HSET', key, version, ARGV[i + 3 + 2 * j], '@' .. version, now)
  end
  i = i + 2 + 2 * n
  local fields = redis.call('HGETALL', key)
  local stamped = {}
  for k = 1, #fields, 2 do
    local field = fields[k]
    if string.sub(field, 1, 1) == '@' then
      local version, at = string.sub(field, 2), tonumber(fields[k + 1])
      if at == nil or at < oldest then
        redis.call('HDEL', key, field, version)
      else
        stamped[#stamped + 1] = {at, tonumber(version) or 0, version}
      end
    end
  end
  if #stamped > keep then
    table.sort(stamped, function(a, b)
      if a[1] ~= b[1] then return a[1] < b[1] end
      return a[2] < b[2]
    end)
    for k = 1, #stamped - keep do
      redis.call('HDEL', key, '@' .. stamped[k][3], stamped[k][3])
    end
  end
  redis.call('PEXPIRE', key, ttl)
  redis.call('ZADD', KEYS[2], 'GT', now, name)
end
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. oldest)
for _, name in ipairs(stale) do
  redis.call('DEL', ARGV[6] .. name)
end
if #stale > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. oldest)
end
local over = redis.call('ZCARD', KEYS[2]) - tonumber(ARGV[4])
if over > 0 then
  for _, name in ipairs(redis.call('ZRANGE', KEYS[2], 0, over - 1)) do
    redis.call('DEL', ARGV[6] .. name)
  end
  redis.call('ZREMRANGEBYRANK', KEYS[2], 0, over - 1)
end
redis.call('PEXPIRE', KEYS[2], ttl)
return 0
"""

#: a model's record as a node writes it: (version, manifest JSON) pairs, newest first
Record = tuple[tuple[str, bytes], ...]


def served_key(prefix: str, model: str) -> str:
    """The catalogue record of ``model``: a hash of its versions' manifests and times."""
    return f"{prefix}served:{model}"


def rewrite_interval(ttl_s: float) -> float:
    """How often a node rewrites an unchanged record: :data:`REWRITE_S`, or a quarter of a
    shorter TTL, so that a record never expires while a node announces it."""
    return min(REWRITE_S, ttl_s / 4)


def _records(document: Mapping[str, Any]) -> dict[str, Record]:
    """model -> its record, from a node's announcement: the versions of the models it lists,
    a sharded model's manifest (the one with its stages) included, the newest
    :data:`MAX_VERSIONS` of each."""
    versions: dict[str, dict[int, Any]] = {}
    for section in ("models", "sharded"):
        for name, entry in (document.get(section) or {}).items():
            found = versions.setdefault(str(name), {})
            for number, manifest in (entry.get("versions") or {}).items():
                if str(number).isdigit():  # a node's own numbers; anything else is no version
                    found[int(number)] = manifest
    return {
        name: tuple(
            (str(number), orjson.dumps(found[number]))
            for number in sorted(found, reverse=True)[:MAX_VERSIONS]
        )
        for name, found in versions.items()
        if found
    }


class ServedWrites:
    """A node's side: which of its records are due (changed, or last written
    ``rewrite_s`` ago on ``clock``, a monotonic clock of the node's own), and the script's
    arguments that write them."""

    def __init__(self, rewrite_s: float, clock: Callable[[], float] = time.monotonic):
        self.rewrite_s = rewrite_s
        self._clock = clock
        #: model -> (the record last written, when)
        self._written: dict[str, tuple[Record, float]] = {}

    def due(self, document: Mapping[str, Any]) -> dict[str, Record]:
        """The records of ``document`` to write now (none: its entry alone is written).
        Models it no longer lists are forgotten: listed again, they are written at once."""
        records = _records(document)
        for gone in self._written.keys() - records.keys():
            del self._written[gone]
        now = self._clock()
        due = {}
        for name, record in records.items():
            last = self._written.get(name)
            if last is None or last[0] != record or now - last[1] >= self.rewrite_s:
                due[name] = record
        return due

    def written(self, records: Mapping[str, Record]) -> None:
        """``records`` are in Redis (call it only once the script answered)."""
        now = self._clock()
        for name, record in records.items():
            self._written[name] = (record, now)

    @staticmethod
    def arguments(records: Mapping[str, Record]) -> list[str | bytes | int]:
        """The script's per-model ARGV, from ARGV[7] on."""
        args: list[str | bytes | int] = []
        for name, record in records.items():
            args += [name, len(record)]
            for number, manifest in record:
                args += [number, manifest]
        return args


class ServedReads:
    """A gateway's side: the catalogue read and parsed, each version's manifest parsed once
    while its bytes stay the same, and what does not parse logged once."""

    def __init__(self, client: Any, *, prefix: str, max_served: int):
        self.client = client
        self.prefix = prefix
        self.max_served = max_served
        self._index = f"{prefix}served"
        #: (model, version field) -> its last value and what it parsed to
        self._parsed: dict[tuple[str, bytes], tuple[bytes, ModelManifest]] = {}
        self._broken: set[tuple[str, bytes]] = set()  # already logged as unreadable

    async def read(self) -> dict[str, dict[int, ModelManifest]]:
        """model -> version -> manifest, every version of the newest ``max_served`` models;
        raises what Redis raised (a record it could not read is left out, logged once)."""
        names = [
            n.decode() if isinstance(n, bytes) else str(n)
            for n in await self.client.zrevrange(self._index, 0, self.max_served - 1)
        ]
        if not names:
            self._parsed = {}
            return {}
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(served_key(self.prefix, name))
        records = await pipe.execute(raise_on_error=False)
        found: dict[str, dict[int, ModelManifest]] = {}
        kept: dict[tuple[str, bytes], tuple[bytes, ModelManifest]] = {}
        for name, record in zip(names, records, strict=True):
            if isinstance(record, Exception):  # not a hash: an older release's record
                self._skip(name, b"", f"unreadable record: {record!r}")
                continue
            versions = self._versions(name, record.items(), kept)
            if versions:  # none: expired, or none parsed
                found[name] = versions
        self._parsed = kept
        return found

    def _versions(
        self,
        name: str,
        fields: Iterable[tuple[bytes, bytes]],
        kept: dict[tuple[str, bytes], tuple[bytes, ModelManifest]],
    ) -> dict[int, ModelManifest]:
        versions: dict[int, ModelManifest] = {}
        for field, value in fields:
            if field.startswith(b"@"):  # the version's time: the writers' business
                continue
            key = (name, field)
            known = self._parsed.get(key)
            if known is None or known[0] != value:
                try:
                    known = (value, _parse_version(name, field, value))
                except ValueError as exc:
                    self._skip(name, field, str(exc))
                    continue
            kept[key] = known
            versions[int(field)] = known[1]
        return versions

    def _skip(self, name: str, field: bytes, why: str) -> None:
        if (name, field) not in self._broken:
            self._broken.add((name, field))
            version = f" version {field.decode(errors='replace')}" if field else ""
            log.warning("ignoring the catalogue record of model %r%s: %s", name, version, why)


def _parse_version(name: str, field: bytes, value: bytes) -> ModelManifest:
    """A version's manifest; ValueError naming the problem."""
    try:
        int(field)
    except ValueError:
        raise ValueError("not a version number") from None
    try:
        manifest = orjson.loads(value)
        return parse_manifest(name, {k: v for k, v in manifest.items() if k != "name"})
    except ModelgateError as exc:
        raise ValueError(exc.message) from None
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"malformed manifest: {exc!r}") from None
