"""Quotas per day and month: charging, refusing, seeding from usage, tokens after the
fact, and the 80% / 100% alerts (once each)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from modelgate.core.access.identity import Plan, Principal
from modelgate.core.admission.quotas import QuotaAlert, Quotas, period_bounds
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.memory.quotas import MemoryQuotaCounter

NOW = datetime(2026, 11, 28, 22, 0, tzinfo=UTC)


def principal(tenant: str = "t1", **limits: int) -> Principal:
    return Principal(tenant, "key_1", frozenset({"infer"}), Plan("p", **limits))  # type: ignore[arg-type]


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_periods_are_utc_days_and_calendar_months() -> None:
    assert period_bounds("day", NOW) == (
        datetime(2026, 11, 28, tzinfo=UTC),
        datetime(2026, 11, 29, tzinfo=UTC),
    )
    assert period_bounds("month", datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


async def test_requests_per_day_admits_the_quota_then_refuses_until_midnight() -> None:
    quotas = Quotas(MemoryQuotaCounter(), now=Clock(NOW))
    who = principal(requests_per_day=3)
    for _ in range(3):
        await quotas.admit(who, rows=1)
    with pytest.raises(ModelgateError) as info:
        await quotas.admit(who, rows=1)
    error = info.value
    assert error.kind is ErrorKind.RATE_LIMITED
    assert error.retry_after == pytest.approx(2 * 3600)  # 22:00 -> midnight UTC
    assert error.details["quota"] == "requests_per_day" and error.details["remaining"] == 0
    # another tenant has its own quota
    await quotas.admit(principal("t2", requests_per_day=3), rows=1)


async def test_a_new_day_starts_a_new_count_but_the_month_goes_on() -> None:
    clock = Clock(NOW)
    quotas = Quotas(MemoryQuotaCounter(), now=clock)
    who = principal(requests_per_day=2, requests_per_month=3)
    await quotas.admit(who, 1)
    await quotas.admit(who, 1)
    clock.now = datetime(2026, 11, 29, 0, 0, 1, tzinfo=UTC)
    await quotas.admit(who, 1)
    with pytest.raises(ModelgateError) as info:
        await quotas.admit(who, 1)
    assert info.value.details["quota"] == "requests_per_month"


async def test_rows_are_charged_and_a_batch_that_would_pass_the_quota_is_refused() -> None:
    quotas = Quotas(MemoryQuotaCounter(), now=Clock(NOW))
    who = principal(rows_per_day=10)
    await quotas.admit(who, rows=8)
    with pytest.raises(ModelgateError):
        await quotas.admit(who, rows=3)
    await quotas.admit(who, rows=2)  # the refused batch took nothing
    assert [(u.unit, u.used) for u in await quotas.usage(who)] == [("rows", 10)]


async def test_tokens_are_added_after_and_checked_before() -> None:
    quotas = Quotas(MemoryQuotaCounter(), now=Clock(NOW))
    who = principal(tokens_per_day=100)
    await quotas.admit(who, rows=1)
    quotas.add_tokens(who, 150)  # one request may pass the quota by its own size
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    with pytest.raises(ModelgateError) as info:
        await quotas.admit(who, rows=1)
    assert info.value.details["quota"] == "tokens_per_day"
    assert [(u.unit, u.used) for u in await quotas.usage(who)] == [("tokens", 150)]


async def test_missing_counters_are_seeded_from_the_usage_records() -> None:
    asked: list[tuple[str, datetime]] = []

    async def totals(tenant: str, since: datetime) -> tuple[int, int, int]:
        asked.append((tenant, since))
        return (5, 50, 0) if since.day == 28 else (90, 900, 0)

    quotas = Quotas(MemoryQuotaCounter(), totals=totals, now=Clock(NOW))
    who = principal(requests_per_day=6, requests_per_month=100, rows_per_month=1000)
    await quotas.admit(who, rows=1)
    assert sorted(since for _, since in asked) == [
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 11, 28, tzinfo=UTC),
    ]
    assert {(u.unit, u.period): u.used for u in await quotas.usage(who)} == {
        ("requests", "day"): 6,
        ("requests", "month"): 91,
        ("rows", "month"): 901,
    }
    with pytest.raises(ModelgateError):
        await quotas.admit(who, rows=1)
    assert len(asked) == 2  # seeded once, not on every request


async def test_alerts_at_80_and_100_percent_once_each_under_concurrency() -> None:
    alerts: list[QuotaAlert] = []
    quotas = Quotas(MemoryQuotaCounter(), alert=alerts.append, now=Clock(NOW))
    who = principal(requests_per_day=10)
    outcomes = await asyncio.gather(
        *(quotas.admit(who, 1) for _ in range(15)), return_exceptions=True
    )
    assert sum(o is None for o in outcomes) == 10
    assert [(a.threshold, a.used, a.limit, a.unit, a.period) for a in alerts] == [
        (0.8, 8, 10, "requests", "day"),
        (1.0, 10, 10, "requests", "day"),
    ]


async def test_a_failing_alert_sink_never_fails_the_request() -> None:
    def broken(alert: QuotaAlert) -> None:
        raise RuntimeError("webhook down")

    quotas = Quotas(MemoryQuotaCounter(), alert=broken, now=Clock(NOW))
    for _ in range(5):
        await quotas.admit(principal(requests_per_day=5), 1)


def test_a_plan_without_quotas_does_not_apply() -> None:
    assert not Quotas.applies(Plan("free", requests_per_second=5))
    assert Quotas.applies(Plan("pro", tokens_per_month=10))


class SlowTotals:
    """Usage totals that answer when :attr:`gate` opens, counting the look-ups."""

    def __init__(self, answer: tuple[int, int, int] = (5, 0, 0)) -> None:
        self.gate = asyncio.Event()
        self.calls: list[tuple[str, datetime]] = []
        self.answer = answer
        self.error: ModelgateError | None = None

    async def __call__(self, tenant_id: str, since: datetime) -> tuple[int, int, int]:
        self.calls.append((tenant_id, since))
        await self.gate.wait()
        if self.error is not None:
            raise self.error
        return self.answer


async def test_a_first_burst_waits_for_one_totals_look_up_per_tenant() -> None:
    totals = SlowTotals()
    quotas = Quotas(MemoryQuotaCounter(), totals=totals, now=Clock(NOW))
    who = principal(requests_per_day=8)
    burst = [asyncio.ensure_future(quotas.admit(who, rows=1)) for _ in range(20)]
    other = asyncio.ensure_future(quotas.admit(principal("t2", requests_per_day=8), rows=1))
    await asyncio.sleep(0)
    burst[0].cancel()  # a caller that goes does not cancel the look-up for the others
    await asyncio.sleep(0)
    totals.gate.set()
    results = await asyncio.gather(*burst, other, return_exceptions=True)
    day = datetime(2026, 11, 28, tzinfo=UTC)
    assert sorted(totals.calls) == [("t1", day), ("t2", day)]
    assert isinstance(results[0], asyncio.CancelledError)
    # seeded with 5 used: 3 of the 19 left are admitted, the rest refused by the quota
    refused = [r for r in results[1:20] if isinstance(r, ModelgateError)]
    assert len(refused) == 16 and all(r.kind is ErrorKind.RATE_LIMITED for r in refused)
    assert results[20] is None


async def test_a_failed_totals_look_up_fails_its_burst_and_the_next_request_tries_again() -> None:
    totals = SlowTotals()
    totals.error = ModelgateError(ErrorKind.UNAVAILABLE, "usage store down")
    quotas = Quotas(MemoryQuotaCounter(), totals=totals, now=Clock(NOW))
    who = principal(requests_per_day=8)
    burst = [asyncio.ensure_future(quotas.admit(who, rows=1)) for _ in range(5)]
    await asyncio.sleep(0)
    totals.gate.set()
    results = await asyncio.gather(*burst, return_exceptions=True)
    assert all(isinstance(r, ModelgateError) and r.kind is ErrorKind.UNAVAILABLE for r in results)
    assert len(totals.calls) == 1
    totals.error = None
    await quotas.admit(who, rows=1)
    assert len(totals.calls) == 2
