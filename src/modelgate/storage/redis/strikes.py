"""``RedisStrikeStore``: failure counts and blocks in Redis, shared by every replica.

Each operation is one round trip: a strike is a Lua script (``INCR``, and ``PEXPIRE`` when
the key has no expiry yet: a fixed window that starts with its first strike, atomic on the
server); a block is ``SET PX``; the time left of a block is ``PTTL``. Keys expire with
their window or block, so idle subjects vanish. Every error of the store (refused
connection, timeout, an error reply) is raised as ``ModelgateError(UNAVAILABLE)``; what to
do then is :class:`~modelgate.limits.strikes.FallbackStrikeStore`'s policy.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import redis.asyncio
from redis.exceptions import NoScriptError

from modelgate.errors import ErrorKind, ModelgateError
from modelgate.limits.strikes import check_seconds
from modelgate.storage.redis.client import REDIS_FAILURES

__all__ = ["STRIKE_SCRIPT", "RedisStrikeStore"]

#: KEYS[1]: the subject's count. ARGV[1]: the window in ms. Returns the count after this
#: strike. PTTL is -1 on a key INCR just created (and on one that somehow lost its expiry).
STRIKE_SCRIPT = """
local count = redis.call('INCR', KEYS[1])
if redis.call('PTTL', KEYS[1]) < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
end
return count
"""

_SHA = hashlib.sha1(STRIKE_SCRIPT.encode(), usedforsecurity=False).hexdigest()


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisStrikeStore:
    """A :class:`~modelgate.core.admission.ports.StrikeStore` on Redis; keys are
    ``prefix + "strikes:" + subject`` and ``prefix + "block:" + subject``. ``close`` closes
    the client, which this store owns. Use a client from
    :func:`~modelgate.storage.redis.client.create_redis_client`, so that no call hangs."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str = "modelgate:abuse:") -> None:
        self._client = client
        self._strikes = prefix + "strikes:"
        self._blocks = prefix + "block:"
        self._sha = _SHA

    async def strike(self, subject: str, window_s: float) -> int:
        check_seconds("the strike window", window_s)
        args = (self._strikes + subject, _ms(window_s))
        try:
            try:
                count: Any = await self._client.evalsha(self._sha, 1, *args)
            except NoScriptError:  # first use, restart, SCRIPT FLUSH: send it whole once
                count = await self._client.eval(STRIKE_SCRIPT, 1, *args)
        except REDIS_FAILURES as exc:
            raise _unavailable(exc) from exc
        return int(count)

    async def block(self, subject: str, seconds: float) -> None:
        check_seconds("a block", seconds)
        try:
            await self._client.set(self._blocks + subject, b"1", px=_ms(seconds))
        except REDIS_FAILURES as exc:
            raise _unavailable(exc) from exc

    async def blocked_for(self, subject: str) -> float:
        try:
            left_ms: Any = await self._client.pttl(self._blocks + subject)
        except REDIS_FAILURES as exc:
            raise _unavailable(exc) from exc
        # -2: no such key, -1: no expiry (never written so by this store)
        return int(left_ms) / 1000 if int(left_ms) > 0 else 0.0

    async def close(self) -> None:
        await self._client.aclose()


def _unavailable(exc: BaseException) -> ModelgateError:
    return ModelgateError(ErrorKind.UNAVAILABLE, f"strike store unavailable: {exc!r}")
