"""``Outage``: how the limit stores shared by replicas (Redis) fail over to a local answer.

The rate limiter, the quota counter and the abuse strike store each ask a shared primary
and, while it is unavailable, answer locally (or refuse, as their setting says). This is
the one place that decides when to ask the primary again: after a failure it is skipped
for ``cooldown_s``; then one call probes it (others keep the local answer while the probe
is in flight), and on success every call goes back to it. A failure is a
``ModelgateError(UNAVAILABLE)`` from the primary, which the backends raise for their
store's errors; any other error passes through. Each change of state is logged once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["Outage"]

log = logging.getLogger("modelgate.limits")
T = TypeVar("T")


class Outage:
    def __init__(
        self,
        what: str,
        *,
        cooldown_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._what = what
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._degraded = False
        self._retry_at = 0.0
        self._probing = False

    @property
    def degraded(self) -> bool:
        """True from a failure of the primary until its next success."""
        return self._degraded

    @property
    def cooldown_s(self) -> float:
        return self._cooldown_s

    async def call(
        self,
        primary: Callable[[], Awaitable[T]],
        fallback: Callable[[], Awaitable[T]],
    ) -> T:
        """``primary()``, or ``fallback()`` while the primary is down or cooling off."""
        probe = self._degraded
        if probe and (self._probing or self._clock() < self._retry_at):
            return await fallback()
        self._probing = probe
        try:
            result = await primary()
        except ModelgateError as exc:
            if exc.kind is not ErrorKind.UNAVAILABLE:
                raise
            if not self._degraded:
                log.warning("%s degraded: %s", self._what, exc.message)
            self._degraded = True
            self._retry_at = self._clock() + self._cooldown_s
            return await fallback()
        finally:
            if probe:
                self._probing = False
        if self._degraded:
            log.warning("%s recovered", self._what)
            self._degraded = False
        return result
