"""``RedisCanaryWindows``: every replica's canary window of a step, shared through Redis, so
that a gate judges the whole cluster's traffic rather than one replica's share of it.

One hash per model and deployment revision (a canary step is one revision),
``{prefix}canary:{model}:{revision}``, with one field per replica holding its window's
snapshot (:meth:`~modelgate.core.traffic.canary.StepWindow.snapshot`: counts and a latency
histogram). :meth:`exchange` writes this replica's field and reads every field in one
pipelined round trip; the hash expires ``ttl_s`` after its last write, so a finished step
leaves nothing behind. A replica that stopped keeps its last snapshot in the hash until
then: its requests were real.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
import redis.asyncio
from redis.exceptions import RedisError

from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["RedisCanaryWindows"]

log = logging.getLogger("modelgate.deployments")


class RedisCanaryWindows:
    """The :class:`~modelgate.core.traffic.ports.CanaryWindows` port on Redis. ``close`` closes
    the client, which this store owns."""

    def __init__(self, client: redis.asyncio.Redis, prefix: str = "modelgate:") -> None:
        self._client = client
        self._prefix = prefix

    async def exchange(
        self, model: str, revision: int, replica: str, snapshot: dict[str, Any], ttl_s: float
    ) -> list[dict[str, Any]]:
        key = f"{self._prefix}canary:{model}:{revision}"
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                pipe.hset(key, replica, orjson.dumps(snapshot))
                pipe.expire(key, max(int(ttl_s), 1))
                pipe.hgetall(key)
                _, _, found = await pipe.execute()
        except (RedisError, OSError, TimeoutError) as exc:
            raise ModelgateError(
                ErrorKind.UNAVAILABLE, f"canary windows unreachable: {exc!r}"
            ) from exc
        windows = []
        for field, value in found.items():
            try:
                window = orjson.loads(value)
            except orjson.JSONDecodeError:
                log.warning("ignoring the canary window of %r for %s: not JSON", field, model)
                continue
            if isinstance(window, dict):
                windows.append(window)
        return windows

    async def close(self) -> None:
        await self._client.aclose()
