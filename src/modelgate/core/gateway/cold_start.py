"""Waiting for a node to start, instead of failing at once (what Knative's activator does
for a service scaled to zero).

When a node pool has scaled to zero, a request for one of its models finds no node that
serves it. Its autoscaler sees the demand (the gateway's requests in flight, which include
the waiting ones) and starts a node; the request waits for it up to ``wait_s`` (and never
past its own deadline), and is woken as soon as a refresh of the node table shows a node
announcing the model. When the wait ends without one, the caller gets the usual 503 with
``Retry-After``.

Only a model no live node announces waits: nodes that announce it but whose breakers are
open are failing, not starting, and are answered as before. At most ``max_waiting``
requests wait at once; the next ones are answered at once, so a burst for a model that
will not come cannot pile up without bound.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

__all__ = ["ColdStartWait"]


class ColdStartWait:
    """Requests waiting for a node; :meth:`announced` wakes them after each table refresh."""

    def __init__(
        self,
        wait_s: float,
        *,
        max_waiting: int = 1000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.wait_s = wait_s
        self.max_waiting = max_waiting
        self._clock = clock
        self._changed = asyncio.Event()
        #: requests waiting now (for tests and the admin view)
        self.waiting = 0

    def announced(self) -> None:
        """The node table changed: every waiter looks again."""
        self._changed.set()
        self._changed = asyncio.Event()

    async def wait(self, available: Callable[[], bool], deadline: float) -> bool:
        """Wait until ``available()`` is true; False when the wait (``wait_s``, or the
        caller's ``deadline`` on this class's clock if sooner) ended first, or when too
        many requests wait already."""
        if available():
            return True
        if self.wait_s <= 0 or self.waiting >= self.max_waiting:
            return False
        until = min(self._clock() + self.wait_s, deadline)
        self.waiting += 1
        try:
            while True:
                left = until - self._clock()
                if left <= 0:
                    return False
                changed = self._changed
                try:
                    await asyncio.wait_for(changed.wait(), left)
                except TimeoutError:
                    return available()
                if available():
                    return True
        finally:
            self.waiting -= 1
