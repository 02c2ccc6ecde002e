"""``FallbackRateLimiter``: what a request gets while the shared limiter store is down.

The policy is a setting (``mode``):

- ``"open"``: answer from a per-replica in-process limiter with the same limits (scaled by
  ``local_share``), so a replica stays capped while the cluster-wide count is lost; with
  ``local_share = 1 / replicas`` the cluster as a whole stays near the limit.
- ``"closed"``: refuse every hit (``retry_after_s`` = the cool-down).

A dead store is not hammered: after a failure the primary is skipped for ``cooldown_s``;
then one request probes it (others keep the degraded answer while the probe is in flight),
and on success every request goes back to it. A failure is a
``ModelgateError(UNAVAILABLE)`` from the primary, which the backends raise for their store's
errors; any other error passes through.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Literal

from modelgate.core.admission.ports import Decision, RateLimiter
from modelgate.limits import gcra
from modelgate.limits.outage import Outage

__all__ = ["FailureMode", "FallbackRateLimiter"]

log = logging.getLogger(__name__)

FailureMode = Literal["open", "closed"]


class FallbackRateLimiter:
    """A :class:`~modelgate.core.admission.ports.RateLimiter` that asks ``primary`` and,
    while it is unavailable, applies ``mode``. ``degraded`` is true from a failure until the next
    success of the primary (for metrics and health). ``close`` closes both limiters."""

    def __init__(
        self,
        primary: RateLimiter,
        local: RateLimiter,
        mode: FailureMode,
        *,
        cooldown_s: float = 1.0,
        local_share: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if mode not in ("open", "closed"):
            raise ValueError(f"mode must be 'open' or 'closed', not {mode!r}")
        if not 0 < local_share <= 1:
            raise ValueError(f"local_share must be in (0, 1], not {local_share}")
        self._primary = primary
        self._local = local
        self._mode = mode
        self._local_share = local_share
        self._outage = Outage(f"rate limiter (fail {mode})", cooldown_s=cooldown_s, clock=clock)

    @property
    def degraded(self) -> bool:
        return self._outage.degraded

    async def hit(self, key: str, limit: int, window_s: float, cost: int = 1) -> Decision:
        # checked here too, so that a bad call fails the same way in every state
        gcra.check_arguments(limit, window_s, cost)
        return await self._outage.call(
            lambda: self._primary.hit(key, limit, window_s, cost),
            lambda: self._fallback(key, limit, window_s, cost),
        )

    async def close(self) -> None:
        try:
            await self._primary.close()
        finally:
            await self._local.close()

    async def _fallback(self, key: str, limit: int, window_s: float, cost: int) -> Decision:
        if self._mode == "closed":
            cooldown = self._outage.cooldown_s
            return Decision(
                allowed=False,
                limit=limit,
                remaining=0,
                reset_after_s=cooldown,
                retry_after_s=cooldown,
            )
        local_limit = max(1, int(limit * self._local_share))
        return await self._local.hit(key, local_limit, window_s, min(cost, local_limit))
