"""``MemoryStrikeStore``: abuse strikes and blocks in this process (one process, and the
fallback of :class:`~modelgate.limits.strikes.FallbackStrikeStore` while Redis is down)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TypeVar

from modelgate.limits.strikes import check_seconds

__all__ = ["MemoryStrikeStore"]

T = TypeVar("T")


class MemoryStrikeStore:
    """A :class:`~modelgate.core.admission.ports.StrikeStore` in two dictionaries, for one process.

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
