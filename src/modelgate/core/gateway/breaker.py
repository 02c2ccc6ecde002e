"""Circuit breakers: stop sending work to a target that keeps failing, then probe it.

A :class:`CircuitBreaker` is ``closed`` (calls pass) until ``failures`` calls in a row have
failed; it is then ``open`` for ``open_s`` seconds (calls are refused at once, so they can
go elsewhere), then ``half_open``: one call at a time is let through as a probe; a success
closes the breaker, a failure opens it again for another ``open_s``.

Only failures that say something about the target count (it was unreachable, it timed out,
it answered 5xx); a caller's bad input does not. The gateway keeps one breaker per node and
one per (node, model version), so one broken model does not take its node out of service.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal

__all__ = ["BreakerPolicy", "BreakerState", "CircuitBreaker"]

BreakerState = Literal["closed", "open", "half_open"]

#: each state as a number, for a Prometheus gauge
STATE_VALUES: dict[BreakerState, int] = {"closed": 0, "open": 1, "half_open": 2}


class BreakerPolicy:
    __slots__ = ("failures", "open_s")

    def __init__(self, failures: int = 5, open_s: float = 5.0):
        if failures < 1 or open_s <= 0:
            raise ValueError("failures must be at least 1 and open_s positive")
        self.failures = failures
        self.open_s = open_s


class CircuitBreaker:
    """One target's breaker. Not thread-safe: used on the event loop."""

    __slots__ = ("_clock", "_failed", "_on_change", "_opened_at", "_probing", "policy", "state")

    def __init__(
        self,
        policy: BreakerPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: Callable[[BreakerState], Any] | None = None,
    ):
        self.policy = policy
        self.state: BreakerState = "closed"
        self._failed = 0  # failures in a row
        self._opened_at = 0.0
        self._probing = False
        self._clock = clock
        self._on_change = on_change

    def available(self) -> bool:
        """True when a call may be sent now (without taking the half-open probe slot)."""
        if self.state == "closed":
            return True
        if self.state == "open":
            return self._clock() - self._opened_at >= self.policy.open_s
        return not self._probing

    def allow(self) -> bool:
        """Take permission for one call: always while closed; the probe slot while half-open
        (after ``open_s``); never while open. Each allowed call must end in
        :meth:`success` or :meth:`failure` (or :meth:`release` when it was never sent)."""
        if self.state == "closed":
            return True
        if self.state == "open":
            if self._clock() - self._opened_at < self.policy.open_s:
                return False
            self._move("half_open")
        if self._probing:
            return False
        self._probing = True
        return True

    def success(self) -> None:
        self._failed = 0
        self._probing = False
        if self.state != "closed":
            self._move("closed")

    def failure(self) -> None:
        self._probing = False
        self._failed += 1
        if self.state == "half_open" or (
            self.state == "closed" and self._failed >= self.policy.failures
        ):
            self._opened_at = self._clock()
            self._move("open")

    def release(self) -> None:
        """The allowed call was not made (or its outcome says nothing about the target)."""
        self._probing = False

    def _move(self, state: BreakerState) -> None:
        self.state = state
        if self._on_change is not None:
            self._on_change(state)
