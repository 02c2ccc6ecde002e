"""``RedisQuotaLeases``: reserve a slice of several quota counters at once, so that
:class:`~modelgate.limits.quota_leases.LeasingQuotaCounter` charges requests locally
instead of one Redis round trip each.

The counters are the very keys :class:`~modelgate.storage.redis.quotas.RedisQuotaCounter`
writes (same prefix, seeds and expiry), so reservations and single charges mix on one key.
A reservation adds its slice to the counter: the units in ``[before, before + granted)``
belong to the replica that reserved them, and are never given back (a counter only grows,
so a quota refusal stays certain until its period ends).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import redis.asyncio
from redis.exceptions import NoScriptError

from modelgate.core.admission.ports import QuotaCharge, QuotaResult
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.limits.quota_leases import Reservation, Slice
from modelgate.limits.quotas import check_charges
from modelgate.storage.redis.client import REDIS_FAILURES
from modelgate.storage.redis.quotas import RedisQuotaCounter

__all__ = ["RESERVE_SCRIPT", "RedisQuotaLeases"]

#: KEYS: the counters. ARGV: n, then per counter: limit, ttl (ms), seed ("" for none), want,
#: need, check (1: refuse when not one unit is left). Per counter, all or nothing: grant
#: min(want, limit - value) units and refuse when that is under need. Returns {status,
#: refused index (1-based, 0 if none), then per counter its value before and the units
#: granted}; status 0 = a counter is missing and has no seed (nothing changed), 1 =
#: refused (nothing changed), 2 = reserved.
RESERVE_SCRIPT = """
local n = tonumber(ARGV[1])
local values = {}
for i = 1, n do
  local base = 1 + (i - 1) * 6
  local v = redis.call('GET', KEYS[i])
  if not v then
    if ARGV[base + 3] == '' then return {0, 0} end
    redis.call('SET', KEYS[i], ARGV[base + 3], 'PX', ARGV[base + 2], 'NX')
    v = redis.call('GET', KEYS[i])
  end
  values[i] = tonumber(v)
end
local grants = {}
local refused = 0
for i = 1, n do
  local base = 1 + (i - 1) * 6
  local limit = tonumber(ARGV[base + 1])
  local want = tonumber(ARGV[base + 4])
  local need = tonumber(ARGV[base + 5])
  grants[i] = math.max(math.min(want, limit - values[i]), 0)
  if refused == 0 and (grants[i] < need or
      (ARGV[base + 6] == '1' and values[i] + 1 > limit)) then
    refused = i
  end
end
local reply = {refused > 0 and 1 or 2, refused}
for i = 1, n do
  if refused == 0 and grants[i] > 0 then redis.call('INCRBY', KEYS[i], grants[i]) end
  reply[2 * i + 1] = values[i]
  reply[2 * i + 2] = refused == 0 and grants[i] or 0
end
return reply
"""

_SHA = hashlib.sha1(RESERVE_SCRIPT.encode(), usedforsecurity=False).hexdigest()


class RedisQuotaLeases:
    """A :class:`~modelgate.limits.quota_leases.QuotaLeases` on Redis under ``prefix``:
    ``reserve`` is one ``EVALSHA``; ``charge`` is :class:`RedisQuotaCounter`'s. Store errors
    are ``ModelgateError(UNAVAILABLE)``. ``close`` closes the client, which this owns."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str = "modelgate:") -> None:
        self._client = client
        self._prefix = prefix
        self._single = RedisQuotaCounter(client, prefix)

    async def charge(self, charges: Sequence[QuotaCharge]) -> QuotaResult | None:
        return await self._single.charge(charges)

    async def reserve(self, slices: Sequence[Slice]) -> Reservation | None:
        check_charges([s.charge for s in slices])
        keys = [self._prefix + s.charge.key for s in slices]
        args: list[Any] = [len(slices)]
        for s in slices:
            c = s.charge
            assert c.limit is not None, "only a quota with a limit is reserved"
            args += [
                c.limit,
                max(1, int(c.ttl_s * 1000)),
                "" if c.seed is None else c.seed,
                s.want,
                s.need,
                1 if s.check else 0,
            ]
        try:
            try:
                reply: Any = await self._client.evalsha(_SHA, len(keys), *keys, *args)
            except NoScriptError:
                reply = await self._client.eval(RESERVE_SCRIPT, len(keys), *keys, *args)
        except REDIS_FAILURES as exc:
            raise ModelgateError(
                ErrorKind.UNAVAILABLE, f"quota store unavailable: {exc!r}"
            ) from exc
        status, refused, *rest = (int(v) for v in reply)
        if status == 0:
            return None
        return Reservation(
            refused - 1 if status == 1 else None, tuple(rest[0::2]), tuple(rest[1::2])
        )

    async def close(self) -> None:
        await self._client.aclose()
