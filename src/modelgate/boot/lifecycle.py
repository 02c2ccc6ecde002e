"""What the composition root starts and closes: a list of services, started in order and
closed in reverse (:meth:`Lifecycle.close` closes every one, started or not).

A component whose own ``start`` and ``close`` are what the process needs is listed as it
is (the :class:`Service` protocol). :class:`Step` makes a service of two callables, for a
component that only closes, or whose start and close sit at different places in the
order; :class:`Loop` is a background task, started and cancelled.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Protocol

__all__ = ["Lifecycle", "Loop", "Service", "Step"]


class Service(Protocol):
    async def start(self) -> None:
        """Start-up I/O and background tasks; the server is live but not yet ready."""

    async def close(self) -> None:
        """Let go of what ``start`` took (and what was built), after the requests in
        flight. Called whether or not ``start`` was."""


async def _nothing() -> None:
    return None


class Step:
    """A service made of two callables, either of which may do nothing."""

    def __init__(
        self,
        name: str,
        *,
        start: Callable[[], Awaitable[None]] = _nothing,
        close: Callable[[], Awaitable[None]] = _nothing,
    ) -> None:
        self.name = name
        self._start = start
        self._close = close

    def __repr__(self) -> str:
        return f"Step({self.name!r})"

    async def start(self) -> None:
        await self._start()

    async def close(self) -> None:
        await self._close()


class Loop:
    """A background loop: ``start`` creates its task, ``close`` cancels it (not started:
    nothing to cancel)."""

    def __init__(self, name: str, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.name = name
        self._run = run
        self._task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        return f"Loop({self.name!r})"

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()


class Lifecycle:
    """Services started in order, closed in reverse. A start that raises stops the start
    (the caller closes); a close that raises stops the close, as any error at shutdown."""

    def __init__(self, services: Sequence[Service]) -> None:
        self.services = list(services)

    async def start(self) -> None:
        for service in self.services:
            await service.start()

    async def close(self) -> None:
        for service in reversed(self.services):
            await service.close()
