"""Retries that cannot make an outage worse: a budget, and backoff with full jitter.

:class:`RetryBudget` lets retries be at most ``ratio`` of the requests of the last
``window_s`` seconds, plus ``min_retries`` per window so that a quiet service can still
retry: 20% of the last 10 s plus 100 by default, Finagle's defaults (10 retries a second
over a 10 s window). When the budget is spent, the first error is the answer: a failing
node is not hit by a multiple of its normal traffic.

The window is in time, not in requests, on purpose: a node killed under load fails every
call it holds at once (about half of the gateway's concurrency), and those calls must all
go to the other nodes. A budget of the last hundred requests plus 10 held about 30
retries whatever the rate, so at 2,000 requests/s a kill failed a few requests for want of
tokens; 20% of the last 10 s plus 100 holds 4,100 there, and still caps a persistent
outage at 20% of the traffic (plus 10 a second).

:func:`backoff` is capped exponential backoff with full jitter (AWS's "full jitter"):
a uniform draw in ``[0, min(cap, base * 2 ** attempt)]``.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

__all__ = ["RetryBudget", "backoff"]

#: the window is counted in this many slots: a slot's counts leave the window at once
_SLOTS = 10


class RetryBudget:
    __slots__ = (
        "_clock",
        "_current",
        "_per_s",
        "_requests",
        "_retries",
        "min_retries",
        "ratio",
        "requests",
        "retries",
    )

    def __init__(
        self,
        ratio: float = 0.2,
        *,
        window_s: float = 10.0,
        min_retries: int = 100,
        clock: Callable[[], float] = time.monotonic,
    ):
        if not 0 <= ratio <= 1 or window_s <= 0 or min_retries < 0:
            raise ValueError("ratio must be in [0, 1], window_s > 0, min_retries >= 0")
        self.ratio = ratio
        self.min_retries = min_retries
        self._clock = clock
        self._per_s = _SLOTS / window_s  # slots per second
        self._requests = [0] * _SLOTS  # per slot of the window
        self._retries = [0] * _SLOTS
        self._current = int(clock() * self._per_s)  # the slot number of now
        #: totals since creation (for metrics and tests)
        self.requests = 0
        self.retries = 0

    def _advance(self) -> int:
        """The index of now's slot, with the slots that left the window emptied."""
        now = int(self._clock() * self._per_s)
        if now != self._current:
            for number in range(max(self._current + 1, now - _SLOTS + 1), now + 1):
                self._requests[number % _SLOTS] = 0
                self._retries[number % _SLOTS] = 0
            self._current = now
        return now % _SLOTS

    def request(self) -> None:
        """Count one request (its first attempt)."""
        self.requests += 1
        self._requests[self._advance()] += 1

    def try_retry(self) -> bool:
        """Take one retry from the budget; False when it is spent."""
        slot = self._advance()
        if sum(self._retries) + 1 > self.ratio * sum(self._requests) + self.min_retries:
            return False
        self._retries[slot] += 1
        self.retries += 1
        return True


def backoff(
    attempt: int, *, base_s: float = 0.005, cap_s: float = 0.1, rng: random.Random | None = None
) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first retry)."""
    ceiling = min(cap_s, base_s * (2 ** min(attempt, 30)))
    return (rng or random).uniform(0.0, ceiling)
