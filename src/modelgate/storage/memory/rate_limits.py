"""``MemoryRateLimiter``: GCRA in a dictionary, for one process (embedded mode) and as the
per-replica cap of :class:`~modelgate.limits.resilient.FallbackRateLimiter`."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable

from modelgate.core.admission.ports import Decision
from modelgate.limits import gcra

__all__ = ["MemoryRateLimiter"]

_NS = 1_000_000_000
#: expired keys dropped from the cold end on every hit: amortised cleanup, O(1) per hit
_TRIM_PER_HIT = 2
#: what ``gcra.admit`` lets a backlog reach, relative to the window
_WITHIN = 1 + gcra.TOLERANCE
#: gcra's slack when counting whole remaining tokens
_COUNT_SLACK = gcra.COUNT_SLACK


class MemoryRateLimiter:
    """An in-process :class:`~modelgate.core.admission.ports.RateLimiter`.

    Atomic within one event loop: ``hit`` reads and writes a key with no ``await`` between
    them. It is not shared across threads or processes, so with several workers each one
    holds its own buckets.

    Memory is bounded by ``max_keys``. A key whose bucket is full again (TAT in the past)
    holds no information and is dropped: a few on every hit from the least recently admitted
    end, and all of them in a sweep (at most once per ``sweep_interval_s``) when a new key
    finds the table full. If it is still full, the least recently admitted key is forgotten
    and starts again with a full bucket: a flood of distinct keys can loosen the limit of
    quiet keys but never grow the table.
    """

    def __init__(
        self,
        *,
        max_keys: int = 100_000,
        sweep_interval_s: float = 1.0,
        clock_ns: Callable[[], int] = time.monotonic_ns,
    ) -> None:
        if max_keys < 1:
            raise ValueError(f"max_keys must be at least 1, not {max_keys}")
        self._max_keys = max_keys
        self._sweep_interval_ns = int(sweep_interval_s * _NS)
        self._clock_ns = clock_ns
        # key -> TAT as (whole ns, fraction of a ns); ordered from least to most recently admitted
        self._tats: OrderedDict[str, tuple[int, float]] = OrderedDict()
        self._last_sweep_ns: int | None = None

    def __len__(self) -> int:
        """The number of keys held (expired ones included until they are dropped)."""
        return len(self._tats)

    async def hit(self, key: str, limit: int, window_s: float, cost: int = 1) -> Decision:
        return self.hit_now(key, limit, window_s, cost)

    def hit_now(self, key: str, limit: int, window_s: float, cost: int = 1) -> Decision:
        """:meth:`hit` without a coroutine: the answer is at hand, so admission asks this
        directly (:class:`~modelgate.core.admission.ports.ImmediateRateLimiter`)."""
        if not (limit >= 1 and 0 <= cost <= limit and 0.0 < window_s < math.inf):
            gcra.check_arguments(limit, window_s, cost)  # raises: its test, spelled out
        now = self._clock_ns()
        tats = self._tats
        if tats:  # up to _TRIM_PER_HIT expired keys dropped from the cold end (inlined)
            for _ in range(_TRIM_PER_HIT):
                oldest, (whole, frac) = next(iter(tats.items()))  # least recently admitted
                if float(whole - now) + frac > 0:  # gcra.backlog_of, inlined
                    break
                del tats[oldest]
                if not tats:
                    break
        window_ns = window_s * _NS
        stored = tats.get(key)
        # gcra.backlog_of, inlined: once per hit
        backlog = 0.0 if stored is None else max(float(stored[0] - now) + stored[1], 0.0)
        # gcra.admit, inlined (the same arithmetic, without a call per hit)
        after = backlog + cost * (window_ns / limit)
        if after > window_ns * _WITHIN:
            return gcra.decide(
                allowed=False, backlog_s=backlog / _NS, limit=limit, window_s=window_s, cost=cost
            )
        if after > 0:
            if stored is None and len(tats) >= self._max_keys:
                self._make_room(now)
            whole = math.floor(after)  # gcra.split_tat, inlined
            tats[key] = (now + whole, after - whole)
            tats.move_to_end(key)
        # gcra.allowed, inlined: the same arithmetic, without a call per hit
        after_s = after / _NS
        remaining = math.floor((window_s - after_s) / (window_s / limit) + _COUNT_SLACK)
        return Decision(True, limit, min(max(remaining, 0), limit), after_s, 0.0)

    async def close(self) -> None:
        self._tats.clear()

    def _make_room(self, now: int) -> None:
        if self._last_sweep_ns is None or now - self._last_sweep_ns >= self._sweep_interval_ns:
            self._last_sweep_ns = now
            expired = [k for k, tat in self._tats.items() if gcra.backlog_of(*tat, now) == 0]
            for k in expired:
                del self._tats[k]
        while len(self._tats) >= self._max_keys:
            self._tats.popitem(last=False)
