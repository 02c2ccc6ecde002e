"""Quota counters: :class:`~modelgate.core.admission.quotas.QuotaCounter` in memory, in Redis, and a
fallback for when Redis is down.

- ``MemoryQuotaCounter``: a dictionary; atomic within one event loop (no ``await`` between
  read and write). One process: embedded mode, and the per-replica fallback.
- ``RedisQuotaCounter``: one Lua script per call checks every counter and then adds to all
  of them, so a tenant's quota holds across every replica sharing the Redis server.
- ``FallbackQuotaCounter``: the Redis counter, and while Redis fails, the setting
  ``limiter_failure_mode`` decides: ``open`` counts in memory (seeded from the usage
  records, so a replica keeps roughly the right count), ``closed`` refuses.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import redis.asyncio
from redis.exceptions import NoScriptError

from modelgate.core.admission.quotas import QuotaCharge, QuotaCounter, QuotaResult
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.limits.outage import Outage
from modelgate.limits.redis import REDIS_FAILURES

__all__ = ["FallbackQuotaCounter", "MemoryQuotaCounter", "RedisQuotaCounter"]

log = logging.getLogger(__name__)


def _refuses(used: int, charge: QuotaCharge) -> bool:
    return charge.limit is not None and used + max(charge.amount, 1) > charge.limit


def _check(charges: Sequence[QuotaCharge]) -> None:
    for charge in charges:
        if charge.amount < 0 or (charge.seed is not None and charge.seed < 0):
            raise ValueError(f"quota amounts and seeds are never negative: {charge}")
        if not charge.ttl_s > 0:
            raise ValueError(f"a quota counter needs a positive ttl: {charge}")


class MemoryQuotaCounter:
    """Counters in a dictionary; expired ones are dropped as they are met and in a sweep."""

    def __init__(
        self, *, max_keys: int = 1_000_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._values: dict[str, tuple[int, float]] = {}
        self._max_keys = max_keys
        self._clock = clock

    async def charge(self, charges: Sequence[QuotaCharge]) -> QuotaResult | None:
        _check(charges)
        now = self._clock()
        current: list[int] = []
        for charge in charges:
            found = self._values.get(charge.key)
            if found is None or found[1] <= now:
                if charge.seed is None:
                    return None
                found = (charge.seed, now + charge.ttl_s)
                self._values[charge.key] = found
            current.append(found[0])
        for i, charge in enumerate(charges):
            if _refuses(current[i], charge):
                return QuotaResult(False, tuple(current), i)
        for i, charge in enumerate(charges):
            current[i] += charge.amount
            self._values[charge.key] = (current[i], self._values[charge.key][1])
        if len(self._values) > self._max_keys:
            self._values = {k: v for k, v in self._values.items() if v[1] > now}
        return QuotaResult(True, tuple(current))

    async def close(self) -> None:
        self._values.clear()


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
        _check(charges)
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


class FallbackQuotaCounter:
    """``primary`` (Redis), or while it fails, ``local`` (``open``) or a refusal
    (``closed``). After a failure the primary is skipped for ``cooldown_s``."""

    def __init__(
        self,
        primary: QuotaCounter,
        local: QuotaCounter,
        mode: Literal["open", "closed"],
        *,
        cooldown_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._local = local
        self._mode = mode
        self._outage = Outage(f"quota counter (fail {mode})", cooldown_s=cooldown_s, clock=clock)

    @property
    def degraded(self) -> bool:
        return self._outage.degraded

    async def charge(self, charges: Sequence[QuotaCharge]) -> QuotaResult | None:
        return await self._outage.call(
            lambda: self._primary.charge(charges), lambda: self._fallback(charges)
        )

    async def _fallback(self, charges: Sequence[QuotaCharge]) -> QuotaResult | None:
        if self._mode == "closed":
            raise ModelgateError(
                ErrorKind.UNAVAILABLE,
                "quotas cannot be checked right now (the quota store is unreachable)",
                retry_after=self._outage.cooldown_s,
            )
        return await self._local.charge(charges)

    async def close(self) -> None:
        try:
            await self._primary.close()
        finally:
            await self._local.close()
