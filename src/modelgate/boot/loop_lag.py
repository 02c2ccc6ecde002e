"""The event loop's lag, sampled for the queueing-delay controller
(:class:`~modelgate.core.admission.overload.QueueDelay`).

A timer is set every ``period_s``; how late it fires is how long a callback waits for the
loop right now, which under CPU saturation is how long a new connection's bytes wait
before a handler sees them. Cheap: one timer callback per period, no per-request work.
"""

from __future__ import annotations

import asyncio

from modelgate.core.admission.overload import QueueDelay

__all__ = ["LoopLag"]


class LoopLag:
    """A lifecycle service: ``start`` sets the first timer, ``close`` cancels the next."""

    def __init__(self, controller: QueueDelay, *, period_s: float = 0.02) -> None:
        self.name = "loop lag"
        self.controller = controller
        self.period_s = period_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def __repr__(self) -> str:
        return "LoopLag()"

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._schedule()

    async def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
        self._loop = None

    def _schedule(self) -> None:
        assert self._loop is not None
        self._due = self._loop.time() + self.period_s
        self._handle = self._loop.call_at(self._due, self._tick)

    def _tick(self) -> None:
        if self._loop is None:
            return
        self.controller.observe(max(self._loop.time() - self._due, 0.0))
        self._schedule()
