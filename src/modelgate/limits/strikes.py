"""``FallbackStrikeStore``: a shared :class:`~modelgate.core.admission.ports.StrikeStore`
(Redis) with a local one behind it, and the argument check every strike store shares. The
backends: ``MemoryStrikeStore`` (:mod:`modelgate.storage.memory.strikes`: one process, and
the fallback while Redis is down) and ``RedisStrikeStore``
(:mod:`modelgate.storage.redis.strikes`, imported only when chosen)."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from modelgate.core.admission.ports import StrikeStore
from modelgate.limits.outage import Outage

__all__ = ["FallbackStrikeStore", "check_seconds"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def check_seconds(what: str, seconds: float) -> None:
    """A window or block length must be a positive, finite number of seconds."""
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{what} must be a positive number of seconds, not {seconds}")


class FallbackStrikeStore:
    """A :class:`~modelgate.core.admission.ports.StrikeStore` that asks ``primary`` (shared by the
    replicas) and, while it is unavailable, ``local``: throttling goes on per replica,
    with the counts and blocks made meanwhile kept locally only.

    A dead primary is not hammered: after a failure it is skipped for ``cooldown_s``, then
    one call probes it (the others stay local while the probe is in flight). A failure is a
    ``ModelgateError(UNAVAILABLE)`` from the primary; any other error passes through.
    ``close`` closes both stores.
    """

    def __init__(
        self,
        primary: StrikeStore,
        local: StrikeStore,
        *,
        cooldown_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._local = local
        self._outage = Outage("strike store (counting locally)", cooldown_s=cooldown_s, clock=clock)

    @property
    def degraded(self) -> bool:
        """True from a failure of the primary until its next success."""
        return self._outage.degraded

    async def strike(self, subject: str, window_s: float) -> int:
        return await self._call(lambda store: store.strike(subject, window_s))

    async def block(self, subject: str, seconds: float) -> None:
        await self._call(lambda store: store.block(subject, seconds))

    async def blocked_for(self, subject: str) -> float:
        return await self._call(lambda store: store.blocked_for(subject))

    async def close(self) -> None:
        try:
            await self._primary.close()
        finally:
            await self._local.close()

    async def _call(self, operation: Callable[[StrikeStore], Awaitable[T]]) -> T:
        return await self._outage.call(
            lambda: operation(self._primary), lambda: operation(self._local)
        )
