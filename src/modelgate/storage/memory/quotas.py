"""``MemoryQuotaCounter``: quota counters in a dictionary; atomic within one event loop (no
``await`` between read and write). One process: embedded mode, and the per-replica
fallback of :class:`~modelgate.limits.quotas.FallbackQuotaCounter`."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from modelgate.core.admission.ports import QuotaCharge, QuotaResult
from modelgate.limits.quotas import check_charges

__all__ = ["MemoryQuotaCounter"]


class MemoryQuotaCounter:
    """Counters in a dictionary; expired ones are dropped as they are met and in a sweep."""

    def __init__(
        self, *, max_keys: int = 1_000_000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._values: dict[str, tuple[int, float]] = {}
        self._max_keys = max_keys
        self._clock = clock

    async def charge(self, charges: Sequence[QuotaCharge]) -> QuotaResult | None:
        return self.charge_now(charges)

    def charge_now(self, charges: Sequence[QuotaCharge]) -> QuotaResult | None:
        """:meth:`charge` without a coroutine: the answer is at hand, so quotas ask this
        directly (:class:`~modelgate.core.admission.ports.ImmediateQuotaCounter`)."""
        check_charges(charges)  # amounts and seeds are never negative
        now = self._clock()
        values = self._values
        afters: list[int] = []
        # (key, (count, expiry)) pairs, written only if every charge fits
        updates: list[tuple[str, tuple[int, float]]] = []
        refused: int | None = None  # the first charge that would pass its limit
        for key, amount, limit, ttl_s, seed in charges:
            found = values.get(key)
            if found is None or found[1] <= now:
                if seed is None:
                    return None
                found = values[key] = (seed, now + ttl_s)
            used, expires = found
            after = used + amount
            # refused when used + max(amount, 1) would pass the limit
            if refused is None and limit is not None and used + (amount or 1) > limit:
                refused = len(afters)
            afters.append(after)
            updates.append((key, (after, expires)))
        if refused is not None:
            before = tuple(after - c.amount for after, c in zip(afters, charges, strict=True))
            return QuotaResult(False, before, refused)
        values.update(updates)
        if len(values) > self._max_keys:
            self._values = {k: v for k, v in values.items() if v[1] > now}
        return QuotaResult(True, tuple(afters))

    async def close(self) -> None:
        self._values.clear()
