"""Rate limits: the limiter port, shaped by its use.

``hit`` makes one atomic decision per call in every backend (no get-then-set), so a limit
holds across processes and replicas that share the backend.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["Decision", "RateLimiter"]


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    limit: int
    remaining: int
    #: seconds until the window (or bucket) is full again
    reset_after_s: float
    #: seconds to wait before a retry can succeed; 0 when allowed
    retry_after_s: float


class RateLimiter(Protocol):
    """``hit(key, limit, window_s, cost)``: admit ``cost`` units under ``limit`` per
    ``window_s`` seconds for ``key`` if they fit, atomically; a refused hit takes nothing.

    The algorithm is GCRA (a token bucket with ``limit`` tokens refilled over ``window_s``),
    so bursts up to ``limit`` pass and the long-run rate is ``limit / window_s``.
    """

    async def hit(self, key: str, limit: int, window_s: float, cost: int = 1) -> Decision: ...

    async def close(self) -> None: ...
