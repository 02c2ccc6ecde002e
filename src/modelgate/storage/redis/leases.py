"""``RedisTokenLeases``: a replica's way to take many tokens of a GCRA bucket at once, so
that :class:`~modelgate.limits.leases.LeasingRateLimiter` spends them locally instead of
asking Redis on every request.

The bucket is the very key :class:`~modelgate.storage.redis.rate_limits.RedisRateLimiter`
writes (same prefix, same "<whole µs>:<fraction>" TAT), so leasing and single hits may mix
on one key. One Lua script takes, atomically, as many whole tokens as the bucket holds up to
``want``, or none when fewer than ``need`` are left; a refusal changes nothing. Tokens are
never given back: a bucket refills only with time, which the refusal memo relies on
(:mod:`modelgate.core.admission.refusals`).

Store errors are raised as ``ModelgateError(UNAVAILABLE)``, as the limiter's are.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

import redis.asyncio
from redis.exceptions import NoScriptError

from modelgate.core.admission.ports import Decision
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.limits import gcra
from modelgate.limits.leases import Grant
from modelgate.storage.redis.client import REDIS_FAILURES

__all__ = ["LEASE_SCRIPT", "RedisTokenLeases"]

#: KEYS[1]: the key. ARGV: window (µs), limit, want, need, now (µs; "" for the server's
#: TIME; with a given time the key outlives its full bucket by a minute, since that time
#: need not run at the rate of the TTLs: a key whose bucket is full reads as no key).
#: Returns {tokens taken (0: refused), the backlog in µs after the take (the one found if
#: refused)}. The admission test is GCRA's (TOLERANCE included), for ``n`` tokens at once.
LEASE_SCRIPT = """
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local need = tonumber(ARGV[4])
local now
local linger = 0
if ARGV[5] == '' then
  local clock = redis.call('TIME')
  now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
else
  now = tonumber(ARGV[5])
  linger = 60000
end
local backlog = 0
local stored = redis.call('GET', KEYS[1])
if stored then
  local whole, frac = string.match(stored, '^(%d+):(.+)$')
  if not whole then
    return redis.error_reply('modelgate: not a rate-limit key: ' .. KEYS[1])
  end
  backlog = math.max((tonumber(whole) - now) + tonumber(frac), 0)
end
local emission = window / limit
local ceiling = window * (1 + 1e-9)
local n = math.min(want, math.floor((ceiling - backlog) / emission))
while n > 0 and backlog + n * emission > ceiling do n = n - 1 end
if n < need or n < 1 then
  return {0, string.format('%.17g', backlog)}
end
local after = backlog + n * emission
local whole = math.floor(after)
redis.call('SET', KEYS[1], string.format('%.0f:%.17g', now + whole, after - whole),
  'PX', string.format('%d', math.ceil(after / 1000) + linger))
return {n, string.format('%.17g', after)}
"""

_SHA = hashlib.sha1(LEASE_SCRIPT.encode(), usedforsecurity=False).hexdigest()
_US = 1_000_000


class RedisTokenLeases:
    """A :class:`~modelgate.limits.leases.TokenLeases` on Redis, the keys ``prefix + key``:
    ``take`` is one ``EVALSHA``; so is ``hit`` (a take of exactly ``cost``, for limits
    too small to lease). ``clock`` (seconds) replaces the server's ``TIME``, for tests that drive
    time; leave it None in production, where replicas must agree on one clock. ``close``
    closes the client, which this owns."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        prefix: str = "modelgate:rl:",
        *,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._clock = clock

    async def hit(self, key: str, limit: int, window_s: float, cost: int = 1) -> Decision:
        gcra.check_arguments(limit, window_s, cost)
        grant = await self.take(key, limit, window_s, cost, cost)
        return gcra.decide(
            allowed=grant.tokens > 0 or cost == 0,
            backlog_s=grant.backlog_s,
            limit=limit,
            window_s=window_s,
            cost=cost,
        )

    async def take(self, key: str, limit: int, window_s: float, want: int, need: int) -> Grant:
        now = "" if self._clock is None else str(round(self._clock() * _US))
        args = (self._prefix + key, repr(window_s * _US), limit, want, need, now)
        try:
            try:
                reply: Any = await self._client.evalsha(_SHA, 1, *args)
            except NoScriptError:
                reply = await self._client.eval(LEASE_SCRIPT, 1, *args)
        except REDIS_FAILURES as exc:
            raise ModelgateError(
                ErrorKind.UNAVAILABLE, f"rate-limit store unavailable: {exc!r}"
            ) from exc
        tokens, backlog_us = reply
        return Grant(int(tokens), float(backlog_us) / _US)

    async def close(self) -> None:
        await self._client.aclose()
