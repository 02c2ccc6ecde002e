"""``FallbackQuotaCounter``: the shared quota counter (Redis), and while Redis fails, the
setting ``limiter_failure_mode`` decides: ``open`` counts in memory (seeded from the usage
records, so a replica keeps roughly the right count), ``closed`` refuses. Also the argument
check every :class:`~modelgate.core.admission.ports.QuotaCounter` backend shares.

The backends: ``MemoryQuotaCounter`` (:mod:`modelgate.storage.memory.quotas`) and
``RedisQuotaCounter`` (:mod:`modelgate.storage.redis.quotas`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Literal

from modelgate.core.admission.ports import QuotaCharge, QuotaCounter, QuotaResult
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.limits.outage import Outage

__all__ = ["FallbackQuotaCounter", "check_charges"]


def check_charges(charges: Sequence[QuotaCharge]) -> None:
    """Amounts and seeds are never negative, and every counter expires (every backend
    checks its arguments the same way)."""
    for charge in charges:
        if charge.amount < 0 or (charge.seed is not None and charge.seed < 0):
            raise ValueError(f"quota amounts and seeds are never negative: {charge}")
        if not charge.ttl_s > 0:
            raise ValueError(f"a quota counter needs a positive ttl: {charge}")


class FallbackQuotaCounter:
    """``primary`` (Redis), or while it fails, ``local`` (``open``) or a refusal
    (``closed``). After a failure the primary is skipped for ``cooldown_s``."""

    def __init__(
        self,
        primary: QuotaCounter,
        local: QuotaCounter,
        mode: Literal["open", "closed"],
        *,
        cooldown_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._primary = primary
        self._local = local
        self._mode = mode
        self._outage = Outage(f"quota counter (fail {mode})", cooldown_s=cooldown_s, clock=clock)

    @property
    def degraded(self) -> bool:
        return self._outage.degraded

    async def charge(self, charges: Sequence[QuotaCharge]) -> QuotaResult | None:
        return await self._outage.call(
            lambda: self._primary.charge(charges), lambda: self._fallback(charges)
        )

    async def _fallback(self, charges: Sequence[QuotaCharge]) -> QuotaResult | None:
        if self._mode == "closed":
            raise ModelgateError(
                ErrorKind.UNAVAILABLE,
                "quotas cannot be checked right now (the quota store is unreachable)",
                retry_after=self._outage.cooldown_s,
            )
        return await self._local.charge(charges)

    async def close(self) -> None:
        try:
            await self._primary.close()
        finally:
            await self._local.close()
