"""``RedisQuotaCounter``: one Lua script per call checks every counter and then adds to all
of them, so a tenant's quota holds across every replica sharing the Redis server. What
happens while Redis fails is :class:`~modelgate.limits.quotas.FallbackQuotaCounter`'s
policy."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio
from redis.exceptions import NoScriptError

from modelgate.core.admission.ports import QuotaCharge, QuotaResult
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.limits.quotas import check_charges
from modelgate.storage.redis.client import REDIS_FAILURES

__all__ = ["QUOTA_SCRIPT", "RedisQuotaCounter"]


#: KEYS: the counters. ARGV: n, then per counter: amount, limit ("" for none), ttl (ms),
#: seed ("" for none). Returns {status, refused index (1-based, 0 if none), values...};
#: status 0 = a counter is missing and has no seed (nothing changed), 1 = refused, 2 = added.
QUOTA_SCRIPT = """
local n = tonumber(ARGV[1])
local values = {}
for i = 1, n do
  local base = 1 + (i - 1) * 4
  local v = redis.call('GET', KEYS[i])
  if not v then
    if ARGV[base + 4] == '' then return {0, 0} end
    redis.call('SET', KEYS[i], ARGV[base + 4], 'PX', ARGV[base + 3], 'NX')
    v = redis.call('GET', KEYS[i])
  end
  values[i] = tonumber(v)
end
for i = 1, n do
  local base = 1 + (i - 1) * 4
  local amount = tonumber(ARGV[base + 1])
  if ARGV[base + 2] ~= '' and values[i] + math.max(amount, 1) > tonumber(ARGV[base + 2]) then
    local reply = {1, i}
    for j = 1, n do reply[j + 2] = values[j] end
    return reply
  end
end
local reply = {2, 0}
for i = 1, n do
  local base = 1 + (i - 1) * 4
  local amount = tonumber(ARGV[base + 1])
  if amount > 0 then values[i] = redis.call('INCRBY', KEYS[i], amount) end
  reply[i + 2] = values[i]
end
return reply
"""

_SHA = hashlib.sha1(QUOTA_SCRIPT.encode(), usedforsecurity=False).hexdigest()


class RedisQuotaCounter:
    """Counters in Redis under ``prefix``; one ``EVALSHA`` per call. Store errors are raised
    as ``ModelgateError(UNAVAILABLE)``. ``close`` closes the client, which this owns."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str = "modelgate:") -> None:
        self._client = client
        self._prefix = prefix

    async def charge(self, charges: Sequence[QuotaCharge]) -> QuotaResult | None:
        check_charges(charges)
        keys = [self._prefix + c.key for c in charges]
        args: list[Any] = [len(charges)]
        for c in charges:
            args += [
                c.amount,
                "" if c.limit is None else c.limit,
                max(1, int(c.ttl_s * 1000)),
                "" if c.seed is None else c.seed,
            ]
        try:
            try:
                reply: Any = await self._client.evalsha(_SHA, len(keys), *keys, *args)
            except NoScriptError:
                reply = await self._client.eval(QUOTA_SCRIPT, len(keys), *keys, *args)
        except REDIS_FAILURES as exc:
            raise ModelgateError(
                ErrorKind.UNAVAILABLE, f"quota store unavailable: {exc!r}"
            ) from exc
        status, refused, *values = (int(v) for v in reply)
        if status == 0:
            return None
        used = tuple(values)
        return QuotaResult(status == 2, used, refused - 1 if status == 1 else None)

    async def close(self) -> None:
        await self._client.aclose()
