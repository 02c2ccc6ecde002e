"""Strike stores behind :class:`~modelgate.core.admission.abuse.StrikeStore` that need no server:
``MemoryStrikeStore`` (one process, and the fallback while Redis is down) and
``FallbackStrikeStore`` (a shared store with a local one behind it). The Redis backend is
:mod:`.redis_strikes`, imported only when chosen."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from modelgate.core.admission.abuse import StrikeStore
from modelgate.limits.outage import Outage

__all__ = ["FallbackStrikeStore", "MemoryStrikeStore", "check_seconds"]

log = logging.getLogger(__name__)

T = TypeVar("T")


def check_seconds(what: str, seconds: float) -> None:
    """A window or block length must be a positive, finite number of seconds."""
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ValueError(f"{what} must be a positive number of seconds, not {seconds}")


class MemoryStrikeStore:
    """A :class:`~modelgate.core.admission.abuse.StrikeStore` in two dictionaries, for one process.

    Atomic within one event loop (no ``await`` between a read and its write); each process
    of ``--workers`` keeps its own counts. Each table holds at most ``max_subjects``: when a
    new subject finds it full, expired entries are swept (at most once per
    ``sweep_interval_s``), then the oldest entries go, so a flood of distinct subjects
    cannot grow memory (it can make quiet subjects forget their counts).
    """

    def __init__(
        self,
        *,
        max_subjects: int = 100_000,
        sweep_interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_subjects < 1:
            raise ValueError(f"max_subjects must be at least 1, not {max_subjects}")
        self._max = max_subjects
        self._sweep_interval_s = sweep_interval_s
        self._clock = clock
        # subject -> (end of its window, strikes in it), oldest window first
        self._strikes: dict[str, tuple[float, int]] = {}
        # subject -> end of its block
        self._blocks: dict[str, float] = {}
        self._last_sweep = {"strikes": -math.inf, "blocks": -math.inf}

    async def strike(self, subject: str, window_s: float) -> int:
        check_seconds("the strike window", window_s)
        now = self._clock()
        entry = self._strikes.get(subject)
        if entry is not None and entry[0] > now:
            count = entry[1] + 1
            self._strikes[subject] = (entry[0], count)
            return count
        if entry is not None:
            del self._strikes[subject]  # a new window: to the young end
        self._make_room("strikes", self._strikes, now, lambda item: item[0])
        self._strikes[subject] = (now + window_s, 1)
        return 1

    async def block(self, subject: str, seconds: float) -> None:
        check_seconds("a block", seconds)
        now = self._clock()
        self._blocks.pop(subject, None)
        self._make_room("blocks", self._blocks, now, lambda until: until)
        self._blocks[subject] = now + seconds

    async def blocked_for(self, subject: str) -> float:
        until = self._blocks.get(subject)
        if until is None:
            return 0.0
        left = until - self._clock()
        if left <= 0:
            del self._blocks[subject]
            return 0.0
        return left

    async def close(self) -> None:
        self._strikes.clear()
        self._blocks.clear()

    def _make_room(
        self, name: str, table: dict[str, T], now: float, end: Callable[[T], float]
    ) -> None:
        if len(table) < self._max:
            return
        if now - self._last_sweep[name] >= self._sweep_interval_s:
            self._last_sweep[name] = now
            for subject in [s for s, value in table.items() if end(value) <= now]:
                del table[subject]
        while len(table) >= self._max:
            del table[next(iter(table))]


class FallbackStrikeStore:
    """A :class:`~modelgate.core.admission.abuse.StrikeStore` that asks ``primary`` (shared by the
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
