"""The claim slots of one job worker (core/jobs/worker.py) that have nothing to do: a slot
whose claim found nothing waits, holding nothing, until it is woken, first come first woken:
by a job this process queued (:meth:`IdleSlots.announce`), by the worker's poll finding work
queued elsewhere, or by a slot that got a job (there may be more: the next one looks). A
slot that failed waits a set time instead (:meth:`IdleSlots.pause`). Either way it is
:attr:`IdleSlots.idle`, and may be cancelled: it holds no job."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque

__all__ = ["IdleSlots"]


class IdleSlots:
    def __init__(self) -> None:
        #: the slots sleeping between claims (safe to cancel: they hold nothing)
        self.idle: set[int] = set()
        #: how often work was announced (:meth:`announce`): a slot whose claim found
        #: nothing claims again at once when work was announced while it claimed
        self.announced = 0
        # the slots waiting for work, first come first woken
        self._waiting: deque[asyncio.Future[None]] = deque()

    @property
    def waiting(self) -> bool:
        """Whether a slot waits for work."""
        return bool(self._waiting)

    def announce(self) -> None:
        """Work was queued: a waiting slot claims now."""
        self.announced += 1
        self.wake_one()

    def wake_one(self) -> None:
        """Wake the slot that has waited longest (none: nothing happens)."""
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def pause(self, slot: int, seconds: float) -> None:
        """Wait ``seconds`` (after a failure), idle."""
        self.idle.add(slot)
        try:
            await asyncio.sleep(seconds)
        finally:
            self.idle.discard(slot)

    async def wait(self, slot: int) -> None:
        """Wait, idle (the claim that found nothing resumed no job of this slot), until
        :meth:`announce` or :meth:`wake_one` wakes this slot."""
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        self.idle.add(slot)
        try:
            await waiter
        finally:
            self.idle.discard(slot)
            with contextlib.suppress(ValueError):  # cancelled while waiting: not woken
                self._waiting.remove(waiter)
