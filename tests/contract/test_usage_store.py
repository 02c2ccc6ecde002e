"""The UsageStore contract on every backend (memory, SQLite, PostgreSQL): append, grouped
reports and their filters, quota totals, and the price table."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modelgate.core.admission.usage import (
    GROUPS,
    Price,
    UsageQuery,
    UsageRecord,
    UsageStore,
    UsageTotals,
)
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.memory.usage import MemoryUsageStore
from modelgate.storage.sql.usage import SqlUsageStore

from .conftest import WITH_MEMORY, store_factory

DAY1 = datetime(2025, 3, 4, 23, 59, tzinfo=UTC)
DAY2 = datetime(2025, 3, 5, 0, 0, tzinfo=UTC)


@pytest.fixture(params=WITH_MEMORY)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def fresh_store(
    backend: str, request: pytest.FixtureRequest
) -> Callable[[], Awaitable[UsageStore]]:
    """A factory of empty stores (one per Hypothesis example); SQL ones share one database."""
    return store_factory(backend, request, MemoryUsageStore, SqlUsageStore)


@pytest.fixture
async def store(fresh_store: Callable[[], Awaitable[UsageStore]]) -> UsageStore:
    return await fresh_store()


def rec(
    period_start: datetime = DAY1,
    tenant_id: str = "t1",
    key_id: str | None = "k1",
    model: str = "m1",
    version: str | None = "1",
    *,
    status: str = "ok",
    cache_hit: bool = False,
    requests: int = 1,
    rows: int = 0,
    tokens: int = 0,
    latency: float = 10.0,
    latency_max: float | None = None,
    compute_ms: float = 0.0,
    cost: float = 0.0,
) -> UsageRecord:
    return UsageRecord(
        period_start=period_start,
        tenant_id=tenant_id,
        key_id=key_id,
        model=model,
        version=version,
        hardware="cpu",
        status=status,
        cache_hit=cache_hit,
        requests=requests,
        rows=rows,
        tokens=tokens,
        latency_ms_sum=latency,
        latency_ms_max=latency if latency_max is None else latency_max,
        compute_ms_sum=compute_ms,
        cost=cost,
    )


async def test_a_report_sums_per_utc_day(store: UsageStore) -> None:
    # 23:59 on the 4th in UTC is the 5th in UTC+2: days are UTC days whatever the offset
    await store.append(
        [
            rec(DAY1, requests=2, rows=10, latency=30.0, latency_max=20.0, cost=0.5),
            rec(DAY1.astimezone(timezone(timedelta(hours=2))), status="error", rows=1),
            rec(DAY2, requests=4, tokens=7, latency=8.0, compute_ms=1500.0, cost=1.25),
        ]
    )
    rows = await store.report(UsageQuery())
    assert [r.day for r in rows] == ["2025-03-04", "2025-03-05"]
    first, second = rows
    assert (first.requests, first.errors, first.rows, first.tokens) == (3, 1, 11, 0)
    assert first.latency_ms_avg == pytest.approx(40.0 / 3)
    assert first.latency_ms_max == 20.0
    assert first.cost == pytest.approx(0.5)
    assert first.tenant_id is first.model is first.key_id is first.version is None
    assert (second.requests, second.tokens, second.compute_seconds) == (4, 7, 1.5)
    assert second.cost == pytest.approx(1.25)


async def test_reports_group_by_any_columns_in_their_order(store: UsageStore) -> None:
    await store.append(
        [
            rec(model="zeta", version="2", key_id=None),
            rec(model="alpha", version="1", key_id="k2", requests=3),
            rec(model="alpha", version="2", key_id="k1"),
            rec(tenant_id="t2", model="alpha", version=None),
        ]
    )
    by_model = await store.report(UsageQuery(group_by=("model",)))
    assert [(r.model, r.requests) for r in by_model] == [("alpha", 5), ("zeta", 1)]
    # group_by order does not matter: columns come in day, tenant, key, model, version order
    rows = await store.report(UsageQuery(group_by=("version", "tenant", "model")))
    assert [(r.tenant_id, r.model, r.version, r.requests) for r in rows] == [
        ("t1", "alpha", "1", 3),
        ("t1", "alpha", "2", 1),
        ("t1", "zeta", "2", 1),
        ("t2", "alpha", None, 1),
    ]
    keys = await store.report(UsageQuery(group_by=("key",)))
    assert [(r.key_id, r.requests) for r in keys] == [(None, 1), ("k1", 2), ("k2", 3)]
    total = await store.report(UsageQuery(group_by=()))
    assert len(total) == 1 and total[0].requests == 6 and total[0].day is None


async def test_reports_filter_by_tenant_key_model_and_half_open_time_range(
    store: UsageStore,
) -> None:
    await store.append(
        [
            rec(DAY1, requests=1),
            rec(DAY2, requests=2),
            rec(DAY2 + timedelta(minutes=1), requests=4, model="m2"),
            rec(DAY2, tenant_id="t2", key_id="k9", requests=8),
        ]
    )

    async def total(**filters: object) -> int:
        rows = await store.report(UsageQuery(group_by=(), **filters))  # type: ignore[arg-type]
        return sum(r.requests for r in rows)

    assert await total() == 15
    assert await total(tenant_id="t1") == 7
    assert await total(tenant_id="t1", key_id="k9") == 0  # another tenant's key: nothing
    assert await total(key_id="k9") == 8
    assert await total(model="m2") == 4
    assert await total(since=DAY2) == 14
    assert await total(until=DAY2) == 1
    assert await total(since=DAY2, until=DAY2 + timedelta(minutes=1)) == 10
    assert await total(tenant_id="nobody") == 0
    assert await store.report(UsageQuery(tenant_id="nobody")) == []
    assert await store.report(UsageQuery(tenant_id="x" * 500)) == []


async def test_totals_skip_requests_that_never_reached_a_model(store: UsageStore) -> None:
    await store.append(
        [
            rec(DAY1, requests=100, rows=100),  # before `since`
            rec(DAY2, requests=2, rows=5, tokens=9),
            rec(DAY2, status="error", requests=1, rows=1),  # reached the model: counts
            rec(DAY2, status="rate_limited", requests=50, rows=50),
            rec(DAY2, status="overloaded", requests=60, rows=60),
            rec(DAY2, tenant_id="t2", requests=7),
        ]
    )
    assert await store.totals("t1", DAY2) == UsageTotals(3, 6, 9)
    assert await store.totals("t1", DAY1) == UsageTotals(103, 106, 9)
    assert await store.totals("nobody", DAY1) == UsageTotals(0, 0, 0)


async def test_prices_are_upserted_listed_in_order_and_deleted(store: UsageStore) -> None:
    assert await store.list_prices() == []
    t0 = datetime(2025, 1, 1, tzinfo=UTC)
    await store.set_price(Price("model:m1", 0.5, 0.0, t0))
    await store.set_price(Price("default", 0.1, 0.01, t0))
    replaced = Price("model:m1", 2.0, 3.0, t0 + timedelta(days=1))
    await store.set_price(replaced)
    assert await store.list_prices() == [Price("default", 0.1, 0.01, t0), replaced]
    assert await store.delete_price("model:m1") is True
    assert await store.delete_price("model:m1") is False
    assert [p.target for p in await store.list_prices()] == ["default"]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
async def test_text_no_sql_backend_can_hold_is_refused_all_or_nothing(store: UsageStore) -> None:
    with pytest.raises(ModelgateError) as error:
        await store.append([rec(), rec(model="bad\x00model")])
    assert error.value.kind is ErrorKind.INVALID_ARGUMENT
    assert await store.report(UsageQuery()) == []  # all or nothing


NAMES = st.sampled_from(["a", "b", "é", "Z"])
RECORDS = st.lists(
    st.builds(
        rec,
        period_start=st.integers(0, 3 * 24 * 60).map(lambda m: DAY1 + timedelta(minutes=m)),
        tenant_id=NAMES,
        key_id=st.none() | NAMES,
        model=NAMES,
        version=st.none() | st.sampled_from(["1", "2"]),
        status=st.sampled_from(["ok", "error", "rate_limited"]),
        requests=st.integers(1, 1000),
        rows=st.integers(0, 10**6),
        tokens=st.integers(0, 10**6),
        latency=st.floats(0, 1e4),
        compute_ms=st.floats(0, 1e4),
        cost=st.floats(0, 100),
    ),
    max_size=30,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(records=RECORDS, group_by=st.lists(st.sampled_from(GROUPS), unique=True))
async def test_report_sums_equal_what_was_appended(
    fresh_store: Callable[[], Awaitable[UsageStore]],
    records: list[UsageRecord],
    group_by: list[str],
) -> None:
    store = await fresh_store()
    await store.append(records[: len(records) // 2])
    await store.append(records[len(records) // 2 :])
    expected: dict[tuple[str | None, ...], list[float]] = defaultdict(lambda: [0, 0, 0, 0, 0.0])
    for r in records:
        columns = {
            "day": r.period_start.date().isoformat(),
            "tenant": r.tenant_id,
            "key": r.key_id,
            "model": r.model,
            "version": r.version,
        }
        sums = expected[tuple(columns[g] if g in group_by else None for g in GROUPS)]
        sums[0] += r.requests
        sums[1] += r.requests if r.status != "ok" else 0
        sums[2] += r.rows
        sums[3] += r.tokens
        sums[4] += r.cost

    rows = await store.report(UsageQuery(group_by=tuple(group_by)))

    got = {
        (r.day, r.tenant_id, r.key_id, r.model, r.version): [
            r.requests,
            r.errors,
            r.rows,
            r.tokens,
            pytest.approx(r.cost),
        ]
        for r in rows
    }
    assert got == dict(expected)
    keys = [(r.day, r.tenant_id, r.key_id, r.model, r.version) for r in rows]
    assert keys == sorted(keys, key=lambda k: [(v is not None, v or "") for v in k])


async def test_hourly_sums_requests_per_model_and_utc_hour(store: UsageStore) -> None:
    # what the predictive warm pool reads: every status, every tenant, UTC hours
    plus_two = timezone(timedelta(hours=2))
    await store.append(
        [
            rec(datetime(2025, 3, 4, 9, 5, tzinfo=UTC), requests=2),
            rec(datetime(2025, 3, 4, 9, 59, tzinfo=UTC), tenant_id="t2", status="error"),
            rec(datetime(2025, 3, 4, 12, 30, tzinfo=plus_two), requests=3),  # 10:30 UTC
            rec(datetime(2025, 3, 4, 9, 10, tzinfo=UTC), model="m2", requests=5),
            rec(datetime(2025, 3, 4, 8, 59, tzinfo=UTC), requests=100),  # before since
        ]
    )
    counts = await store.hourly(datetime(2025, 3, 4, 9, 0, tzinfo=UTC))
    found = {(c.hour, c.model): c.requests for c in counts}
    assert found == {
        (datetime(2025, 3, 4, 9, tzinfo=UTC), "m1"): 3,
        (datetime(2025, 3, 4, 10, tzinfo=UTC), "m1"): 3,
        (datetime(2025, 3, 4, 9, tzinfo=UTC), "m2"): 5,
    }
