"""Writing out what a background writer still holds when the process stops."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

__all__ = ["drain"]


async def drain(
    flush: Callable[[], Awaitable[object]],
    pending: Callable[[], int],
    *,
    attempts: int = 3,
    pause_s: float = 0.2,
) -> int:
    """Flush until nothing is pending, at most ``attempts`` times, waiting a little longer
    between tries (a database that blinked gets a moment); returns what is still pending."""
    for attempt in range(attempts):
        await flush()
        if not pending():
            return 0
        if attempt + 1 < attempts:
            await asyncio.sleep(pause_s * (attempt + 1))
    return pending()
