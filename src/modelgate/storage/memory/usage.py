"""A :class:`~modelgate.core.admission.usage.UsageStore` in a list and a dictionary (tests)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime

from modelgate.core.admission.usage import (
    GROUPS,
    NOT_ADMITTED,
    Price,
    UsageQuery,
    UsageRecord,
    UsageRow,
    UsageTotals,
)
from modelgate.core.serving.usage_profile import HourlyCount

__all__ = ["MemoryUsageStore"]

_Key = tuple[str | None, ...]


class MemoryUsageStore:
    def __init__(self) -> None:
        self._records: list[UsageRecord] = []
        self._prices: dict[str, Price] = {}

    async def append(self, records: Sequence[UsageRecord]) -> None:
        # copies: the recorder's objects must not change what was written
        self._records.extend(dataclasses.replace(r) for r in records)

    async def hourly(self, since: datetime) -> list[HourlyCount]:
        sums: dict[tuple[datetime, str], int] = {}
        for r in self._records:
            if r.period_start >= since:
                hour = r.period_start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
                sums[hour, r.model] = sums.get((hour, r.model), 0) + r.requests
        return [HourlyCount(hour, model, n) for (hour, model), n in sums.items()]

    async def report(self, query: UsageQuery) -> list[UsageRow]:
        sums: dict[_Key, list[float]] = {}
        for r in self._records:
            if not _matches(r, query):
                continue
            group = {
                "day": r.period_start.astimezone(UTC).date().isoformat(),
                "tenant": r.tenant_id,
                "key": r.key_id,
                "model": r.model,
                "version": r.version,
            }
            key = tuple(group[name] if name in query.group_by else None for name in GROUPS)
            acc = sums.setdefault(key, [0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0, 0])
            acc[0] += r.requests
            acc[1] += r.requests if r.status != "ok" else 0
            acc[2] += r.rows
            acc[3] += r.tokens
            acc[4] += r.latency_ms_sum
            acc[5] = max(acc[5], r.latency_ms_max)
            acc[6] += r.compute_ms_sum
            acc[7] += r.cost
            acc[8] += r.explanations
        # None first, then text by code point, column by column: what the SQL stores do
        ordered = sorted(sums.items(), key=lambda item: [(v is not None, v or "") for v in item[0]])
        return [
            UsageRow(
                day=key[0],
                tenant_id=key[1],
                key_id=key[2],
                model=key[3],
                version=key[4],
                requests=int(a[0]),
                errors=int(a[1]),
                rows=int(a[2]),
                tokens=int(a[3]),
                explanations=int(a[8]),
                latency_ms_avg=a[4] / a[0] if a[0] else 0.0,
                latency_ms_max=a[5],
                compute_seconds=a[6] / 1000,
                cost=a[7],
            )
            for key, a in ordered
        ]

    async def totals(self, tenant_id: str, since: datetime) -> UsageTotals:
        counted = [
            r
            for r in self._records
            if r.tenant_id == tenant_id and r.period_start >= since and r.status not in NOT_ADMITTED
        ]
        return UsageTotals(
            sum(r.requests for r in counted),
            sum(r.rows for r in counted),
            sum(r.tokens for r in counted),
        )

    async def set_price(self, price: Price) -> None:
        self._prices[price.target] = price

    async def list_prices(self) -> list[Price]:
        return [self._prices[target] for target in sorted(self._prices)]

    async def delete_price(self, target: str) -> bool:
        return self._prices.pop(target, None) is not None


def _matches(record: UsageRecord, query: UsageQuery) -> bool:
    return (
        (query.tenant_id is None or record.tenant_id == query.tenant_id)
        and (query.key_id is None or record.key_id == query.key_id)
        and (query.model is None or record.model == query.model)
        and (query.since is None or record.period_start >= query.since)
        and (query.until is None or record.period_start < query.until)
    )
