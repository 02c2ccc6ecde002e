"""``RedisRateLimiter``: GCRA in one Lua script per check, so a limit holds across every
replica that shares the Redis server.

The script reads the key, decides and writes in one atomic step on the server (no
get-then-set), and takes the time from the server's ``TIME``, so replicas with skewed
clocks agree. It needs Redis 5 or later (scripts replicate their effects, which lets
``TIME`` precede a write). Each key expires when its bucket is full again, so idle keys
vanish.

Every error of the store (refused connection, timeout, a reply that is an error) is raised
as ``ModelgateError(UNAVAILABLE)``; what to do then is the policy of
:class:`~modelgate.limits.resilient.FallbackRateLimiter`, not of this backend.
"""

from __future__ import annotations

import hashlib
from typing import Any

import redis.asyncio
from redis.exceptions import NoScriptError

from modelgate.core.admission.ports import Decision
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.limits import gcra
from modelgate.storage.redis.client import REDIS_FAILURES

__all__ = ["GCRA_SCRIPT", "RedisRateLimiter"]

#: KEYS[1]: the key. ARGV: window (µs), limit, cost. Returns {1 if admitted else 0, the
#: backlog in µs after the hit (the one it found, if refused)} -- the backlog as a string,
#: since Redis truncates Lua numbers to integers. Mirrors :mod:`modelgate.limits.gcra`,
#: TOLERANCE included; the TAT is stored as "<whole µs>:<fraction of a µs>".
GCRA_SCRIPT = """
local window = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local backlog = 0
local stored = redis.call('GET', KEYS[1])
if stored then
  local whole, frac = string.match(stored, '^(%d+):(.+)$')
  if not whole then
    return redis.error_reply('modelgate: not a rate-limit key: ' .. KEYS[1])
  end
  backlog = math.max((tonumber(whole) - now) + tonumber(frac), 0)
end
local after = backlog + cost * (window / limit)
if after > window * (1 + 1e-9) then
  return {0, string.format('%.17g', backlog)}
end
if after > 0 then
  local whole = math.floor(after)
  redis.call('SET', KEYS[1], string.format('%.0f:%.17g', now + whole, after - whole),
    'PX', string.format('%d', math.ceil(after / 1000)))
end
return {1, string.format('%.17g', after)}
"""

_SHA = hashlib.sha1(GCRA_SCRIPT.encode(), usedforsecurity=False).hexdigest()
_US = 1_000_000


class RedisRateLimiter:
    """A :class:`~modelgate.core.admission.ports.RateLimiter` on Redis; the keys are
    ``prefix + key``.

    Each ``hit`` is one ``EVALSHA`` round trip. The script's SHA1 is computed here, as
    ``SCRIPT LOAD`` would answer it; when the server does not know it (first use, restart,
    ``SCRIPT FLUSH``), the hit is sent once as ``EVAL``, which caches it again. ``close``
    closes the client, which this limiter owns.
    """

    def __init__(self, client: redis.asyncio.Redis, prefix: str = "modelgate:rl:") -> None:
        self._client = client
        self._prefix = prefix
        self._sha = _SHA

    async def hit(self, key: str, limit: int, window_s: float, cost: int = 1) -> Decision:
        gcra.check_arguments(limit, window_s, cost)
        args = (self._prefix + key, repr(window_s * _US), limit, cost)
        try:
            try:
                reply: Any = await self._client.evalsha(self._sha, 1, *args)
            except NoScriptError:
                reply = await self._client.eval(GCRA_SCRIPT, 1, *args)
        except REDIS_FAILURES as exc:
            raise ModelgateError(
                ErrorKind.UNAVAILABLE, f"rate-limit store unavailable: {exc!r}"
            ) from exc
        allowed, backlog_us = reply
        return gcra.decide(
            allowed=bool(allowed),
            backlog_s=float(backlog_us) / _US,
            limit=limit,
            window_s=window_s,
            cost=cost,
        )

    async def close(self) -> None:
        await self._client.aclose()
