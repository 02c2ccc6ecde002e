"""``MemoryQuotaCounter``: quota counters in a dictionary; atomic within one event loop (no
``await`` between read and write). One process: embedded mode, and the per-replica
fallback of :class:`~modelgate.limits.quotas.FallbackQuotaCounter`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from modelgate.core.admission.ports import QuotaCharge, QuotaResult
from modelgate.limits.quotas import check_charges

__all__ = ["MemoryQuotaCounter"]


def _refuses(used: int, charge: QuotaCharge) -> bool:
    return charge.limit is not None and used + max(charge.amount, 1) > charge.limit


class MemoryQuotaCounter:
    """Counters in a dictionary; expired ones are dropped as they are met and in a sweep."""

    def __init__(
        self, *, max_keys: int = 1_000_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._values: dict[str, tuple[int, float]] = {}
        self._max_keys = max_keys
        self._clock = clock

    async def charge(self, charges: Sequence[QuotaCharge]) -> QuotaResult | None:
        check_charges(charges)
        now = self._clock()
        current: list[int] = []
        for charge in charges:
            found = self._values.get(charge.key)
            if found is None or found[1] <= now:
                if charge.seed is None:
                    return None
                found = (charge.seed, now + charge.ttl_s)
                self._values[charge.key] = found
            current.append(found[0])
        for i, charge in enumerate(charges):
            if _refuses(current[i], charge):
                return QuotaResult(False, tuple(current), i)
        for i, charge in enumerate(charges):
            current[i] += charge.amount
            self._values[charge.key] = (current[i], self._values[charge.key][1])
        if len(self._values) > self._max_keys:
            self._values = {k: v for k, v in self._values.items() if v[1] > now}
        return QuotaResult(True, tuple(current))

    async def close(self) -> None:
        self._values.clear()
