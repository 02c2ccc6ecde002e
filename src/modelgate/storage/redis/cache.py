"""``RedisResultStore``: cached results shared by every replica on one Redis server.

An entry is one string key (``prefix + key``) holding :mod:`.cache_codec`'s bytes, with a Redis
expiry at its ``stale_until``, so nothing needs sweeping. A lookup is one ``GET``; a write
is one ``SET ... PX`` made in the background, so a miss never waits for it. The store
never fails a request: a refused connection, a timeout or a reply that does not decode is
a miss, a write that fails is dropped, and while Redis is down it is not asked again
before a short cooldown (:class:`~modelgate.limits.outage.Outage`).
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Callable

import redis.asyncio
from redis.exceptions import RedisError

from modelgate.core.serving.ports import CachedResult
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.limits.outage import Outage
from modelgate.storage.redis.cache_codec import decode_result, encode_result

__all__ = ["RedisResultStore"]

log = logging.getLogger("modelgate.cache")


class RedisResultStore:
    """A :class:`~modelgate.core.serving.ports.ResultStore` on Redis. ``close`` closes the
    client, which this store owns. At most ``max_pending`` writes wait; more are dropped."""

    def __init__(
        self,
        client: redis.asyncio.Redis,
        prefix: str = "modelgate:cache:",
        *,
        max_pending: int = 256,
        cooldown_s: float = 1.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._client = client
        self._prefix = prefix
        self._max_pending = max_pending
        self._clock = clock
        self._outage = Outage("result cache store", cooldown_s=cooldown_s)
        self._pending: set[asyncio.Task[None]] = set()
        #: writes dropped because too many were waiting
        self.dropped = 0

    @property
    def degraded(self) -> bool:
        """True while Redis is unreachable (every lookup is then a miss)."""
        return self._outage.degraded

    async def get(self, key: str) -> CachedResult | None:
        name = self._prefix + key

        async def read() -> bytes | None:
            try:
                raw = await self._client.get(name)
            except (RedisError, OSError, TimeoutError) as exc:
                raise ModelgateError(ErrorKind.UNAVAILABLE, f"unreachable: {exc!r}") from exc
            return raw.encode() if isinstance(raw, str) else raw  # a client decoding replies

        raw = await self._outage.call(read, _nothing)
        if raw is None:
            return None
        try:
            result = decode_result(raw)
        except (ValueError, KeyError, TypeError, struct.error, ModelgateError) as exc:
            log.warning("ignoring a cached result that does not decode (%s): %s", name, exc)
            return None
        return result if result.stale_until > self._clock() else None

    def put(self, key: str, result: CachedResult) -> None:
        if len(self._pending) >= self._max_pending:
            self.dropped += 1
            return
        task = asyncio.get_running_loop().create_task(self._write(self._prefix + key, result))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _write(self, name: str, result: CachedResult) -> None:
        ttl_ms = int((result.stale_until - self._clock()) * 1000)
        if ttl_ms <= 0:
            return
        raw = encode_result(result)

        async def write() -> None:
            try:
                await self._client.set(name, raw, px=ttl_ms)
            except (RedisError, OSError, TimeoutError) as exc:
                raise ModelgateError(ErrorKind.UNAVAILABLE, f"unreachable: {exc!r}") from exc

        await self._outage.call(write, _nothing)

    async def flush(self) -> None:
        """Wait for the writes in flight (tests, and before closing)."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def close(self) -> None:
        await self.flush()
        await self._client.aclose()


async def _nothing() -> None:
    return None
