"""UsageRecorder: per-minute aggregation on the request path, batched writes, prices at
write time, nothing lost when the store fails for a while or the process stops."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modelgate.core.admission.metering import UsageRecorder
from modelgate.core.admission.usage import Price, UsageQuery, UsageRecord, cost_of, price_for
from modelgate.errors import invalid
from modelgate.storage.memory.usage import MemoryUsageStore

T0 = datetime(2025, 6, 1, 12, 0, 5, tzinfo=UTC)


class Clock:
    def __init__(self, at: datetime = T0) -> None:
        self.at = at

    def __call__(self) -> float:
        return self.at.timestamp()


class FlakyStore(MemoryUsageStore):
    """A memory store whose writes fail while ``down`` is set, as a database outage does."""

    def __init__(self) -> None:
        super().__init__()
        self.down = False
        self.appends: list[int] = []
        #: runs inside a write, as requests that arrive while it is in flight
        self.during: Callable[[], None] | None = None

    async def append(self, records: Sequence[UsageRecord]) -> None:
        await asyncio.sleep(0)
        if self.during is not None:
            self.during()
        if self.down:
            raise ConnectionError("database unreachable")
        if any(r.model == "x" * 300 for r in records):  # as the SQL stores refuse it
            raise invalid("usage model is longer than 256 characters")
        self.appends.append(len(records))
        await super().append(records)


def hit(
    recorder: UsageRecorder,
    *,
    tenant: str = "t1",
    key: str | None = "k1",
    model: str = "m",
    status: str = "ok",
    rows: int = 1,
    tokens: int = 0,
    latency_ms: float = 10.0,
    compute_ms: float = 0.0,
    hardware: str = "cpu",
) -> None:
    recorder.record(
        tenant,
        key,
        model,
        "1",
        hardware=hardware,
        status=status,
        cache_hit=False,
        rows=rows,
        tokens=tokens,
        latency_ms=latency_ms,
        compute_ms=compute_ms,
    )


async def requests(store: MemoryUsageStore, **filters: object) -> int:
    rows = await store.report(UsageQuery(group_by=(), **filters))  # type: ignore[arg-type]
    return sum(r.requests for r in rows)


async def test_requests_are_summed_per_minute_and_group() -> None:
    clock, store = Clock(), MemoryUsageStore()
    recorder = UsageRecorder(store, clock=clock)
    hit(recorder, rows=3, latency_ms=5.0, compute_ms=2.0)
    hit(recorder, rows=4, latency_ms=15.0, compute_ms=3.0)
    hit(recorder, status="error")
    hit(recorder, key="k2")
    clock.at = T0 + timedelta(seconds=50)  # 12:00:55, same minute
    hit(recorder)
    clock.at = T0 + timedelta(seconds=60)  # 12:01:05, next minute
    hit(recorder)
    assert recorder.pending == 4

    assert await recorder.flush() == 4
    assert recorder.pending == 0
    stored = sorted(store._records, key=lambda r: (r.period_start, r.key_id or "", r.status))
    first = stored[0]
    assert first.period_start == datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
    assert (first.key_id, first.status, first.requests, first.rows) == ("k1", "error", 1, 1)
    ok = stored[1]
    assert (ok.key_id, ok.status, ok.requests, ok.rows) == ("k1", "ok", 3, 8)
    assert (ok.latency_ms_sum, ok.latency_ms_max, ok.compute_ms_sum) == (30.0, 15.0, 5.0)
    assert stored[-1].period_start == datetime(2025, 6, 1, 12, 1, tzinfo=UTC)
    assert await recorder.flush() == 0  # nothing twice


async def test_a_store_outage_loses_nothing_and_merges_with_new_requests(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore()
    recorder = UsageRecorder(store, clock=Clock())
    for _ in range(3):
        hit(recorder)
    store.down = True
    with caplog.at_level(logging.WARNING, "modelgate.usage"):
        assert await recorder.flush() == 0
    assert "kept for retry" in caplog.text
    assert recorder.pending == 1
    hit(recorder)  # the same group again while the database is down
    hit(recorder, model="other")
    assert await recorder.flush() == 0
    store.down = False
    assert await recorder.flush() == 2
    assert await requests(store) == 5
    assert await requests(store, model="m") == 4
    assert store.appends == [2]  # one batch once the store was back


async def test_close_writes_what_is_pending_and_retries_a_failed_write() -> None:
    store = FlakyStore()
    recorder = UsageRecorder(store, flush_interval_s=3600, clock=Clock())
    await recorder.start()
    hit(recorder)
    hit(recorder, tenant="t2")
    store.down = True

    async def recover() -> None:
        await asyncio.sleep(0.05)
        store.down = False

    healing = asyncio.create_task(recover())
    await recorder.close()  # first try fails, a later one succeeds
    await healing
    assert recorder.pending == 0
    assert await requests(store) == 2


async def test_the_background_task_flushes_on_its_interval() -> None:
    store = MemoryUsageStore()
    recorder = UsageRecorder(store, flush_interval_s=0.02, clock=Clock())
    await recorder.start()
    try:
        hit(recorder)
        for _ in range(100):
            if await requests(store) == 1:
                break
            await asyncio.sleep(0.01)
        assert await requests(store) == 1
    finally:
        await recorder.close()


async def test_used_keys_are_touched_with_their_latest_time_and_touch_errors_are_only_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock, touched = Clock(), []

    async def touch(key_id: str, at: datetime) -> bool:
        if key_id == "broken":
            raise ConnectionError("no database")
        touched.append((key_id, at))
        return True

    store = MemoryUsageStore()
    recorder = UsageRecorder(store, touch_key=touch, clock=clock)
    hit(recorder, key="k1")
    clock.at = T0 + timedelta(seconds=30)
    hit(recorder, key="k1")
    hit(recorder, key="broken")
    hit(recorder, key=None)
    with caplog.at_level(logging.WARNING, "modelgate.usage"):
        assert await recorder.flush() == 3
    assert touched == [("k1", T0 + timedelta(seconds=30))]
    assert "broken" in caplog.text
    assert await requests(store) == 4
    await recorder.flush()
    assert len(touched) == 1  # a key is touched once per flush in which it was used


async def test_a_busy_key_is_touched_at_most_once_a_minute_and_its_latest_use_at_close() -> None:
    """A key used at every flush has its last_used_at written once per touch interval
    (with its latest use), not at every flush; close writes what is still held back."""
    clock, touched = Clock(), []

    async def touch(key_id: str, at: datetime) -> bool:
        touched.append((key_id, at))
        return True

    recorder = UsageRecorder(MemoryUsageStore(), touch_key=touch, clock=clock)
    for second in range(0, 130):  # one flush a second, the key used before each
        clock.at = T0 + timedelta(seconds=second)
        hit(recorder, key="busy")
        if second == 70:
            hit(recorder, key="quiet")
        await recorder.flush()
    assert touched == [
        ("busy", T0),
        ("busy", T0 + timedelta(seconds=60)),
        ("quiet", T0 + timedelta(seconds=70)),  # its first use: at once
        ("busy", T0 + timedelta(seconds=120)),
    ]
    clock.at = T0 + timedelta(seconds=135)
    await recorder.close()
    assert touched[-1] == ("busy", T0 + timedelta(seconds=129))  # the latest use, at close


async def test_a_key_no_longer_used_gets_its_last_use_written_after_the_interval() -> None:
    clock, touched = Clock(), []

    async def touch(key_id: str, at: datetime) -> bool:
        touched.append((key_id, at))
        return True

    recorder = UsageRecorder(MemoryUsageStore(), touch_key=touch, clock=clock)
    hit(recorder, key="k")
    await recorder.flush()
    clock.at = T0 + timedelta(seconds=5)
    hit(recorder, key="k")  # then never again
    for second in range(6, 70):
        clock.at = T0 + timedelta(seconds=second)
        await recorder.flush()
    assert touched == [("k", T0), ("k", T0 + timedelta(seconds=5))]


async def test_prices_apply_at_flush_time_and_never_rewrite_history() -> None:
    store = MemoryUsageStore()
    recorder = UsageRecorder(store, clock=Clock(), price_refresh_s=0)
    await store.set_price(Price("default", per_1k_units=1.0, per_compute_second=0.0, updated_at=T0))
    await store.set_price(Price("model:embed", 2.0, 0.5, T0))
    await store.set_price(Price("hardware:gpu", 0.0, 10.0, T0))
    hit(recorder, model="tabular", rows=500)  # default: 500 rows
    hit(recorder, model="embed", rows=2, tokens=1000, compute_ms=2000)  # units are tokens
    hit(recorder, model="big", hardware="gpu", rows=1, compute_ms=300)
    await recorder.flush()
    await store.set_price(Price("default", 100.0, 0.0, T0))
    hit(recorder, model="tabular", rows=500)
    await recorder.flush()

    costs = {r.model: r.cost for r in await store.report(UsageQuery(group_by=("model",)))}
    assert costs["tabular"] == pytest.approx(0.5 + 50.0)  # the first 0.5 stays
    assert costs["embed"] == pytest.approx(2.0 + 1.0)
    assert costs["big"] == pytest.approx(3.0)


async def test_prices_are_read_once_per_refresh_interval() -> None:
    store = MemoryUsageStore()
    recorder = UsageRecorder(store, clock=Clock(), price_refresh_s=3600)
    await store.set_price(Price("default", 1.0, 0.0, T0))
    hit(recorder, rows=1000)
    await recorder.flush()
    await store.set_price(Price("default", 9.0, 0.0, T0))
    hit(recorder, rows=1000)
    await recorder.flush()  # still the cached price
    rows = await store.report(UsageQuery(group_by=()))
    assert rows[0].cost == pytest.approx(2.0)


async def test_groups_beyond_max_pending_are_dropped_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore()
    recorder = UsageRecorder(store, max_pending=2, clock=Clock())
    hit(recorder, model="a")
    hit(recorder, model="b")
    hit(recorder, model="c")  # a third group: dropped at once
    assert recorder.pending == 2 and recorder.dropped == 1

    def arrivals() -> None:  # while the failing write is in flight
        hit(recorder, model="d", rows=7)  # a new group: no room once the batch is back
        hit(recorder, model="a")  # an existing group: merged

    store.down, store.during = True, arrivals
    with caplog.at_level(logging.ERROR, "modelgate.usage"):
        await recorder.flush()
    assert recorder.pending == 2 and recorder.dropped == 2
    assert "2 requests dropped" in caplog.text
    store.down, store.during = False, None
    await recorder.flush()
    assert await requests(store) == 3
    assert await requests(store, model="a") == 2
    assert await requests(store, model="d") == 0


def test_the_most_specific_price_wins() -> None:
    prices = {
        p.target: p
        for p in [
            Price("default", 1.0, 0.0, T0),
            Price("hardware:gpu", 2.0, 0.0, T0),
            Price("model:m", 3.0, 0.0, T0),
        ]
    }
    assert price_for(prices, "m", "gpu") is prices["model:m"]
    assert price_for(prices, "x", "gpu") is prices["hardware:gpu"]
    assert price_for(prices, "x", "cpu") is prices["default"]
    assert price_for({}, "x", "cpu") is None
    assert cost_of(None, 10**6, 10**6) == 0.0
    assert cost_of(Price("p", 2.0, 4.0, T0), 1500, 250) == pytest.approx(3.0 + 1.0)


async def test_a_record_the_store_refuses_is_dropped_alone_never_retried_forever(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = FlakyStore()
    recorder = UsageRecorder(store, clock=Clock())
    hit(recorder, model="a")
    hit(recorder, model="x" * 300)
    hit(recorder, model="b")
    with caplog.at_level(logging.ERROR, "modelgate.usage"):
        assert await recorder.flush() == 2
    assert "refused" in caplog.text
    assert recorder.pending == 0 and recorder.dropped == 1
    assert await requests(store) == 2


@given(
    st.lists(
        st.floats(min_value=0, max_value=4e9, allow_nan=False) | st.sampled_from([59.999, 60.0]),
        min_size=1,
        max_size=30,
    )
)
def test_each_request_is_summed_into_the_utc_minute_of_its_clock(times: list[float]) -> None:
    """Whatever order the wall clock gives (it may step back), a request counts in the
    minute that holds its instant, exactly on a minute's boundary included."""
    at = iter(times)
    recorder = UsageRecorder(MemoryUsageStore(), clock=lambda: next(at))
    for _ in times:
        hit(recorder)
    minutes = Counter(datetime.fromtimestamp(t // 60 * 60, UTC) for t in times)
    held = {group[0]: record.requests for group, record in recorder._pending.items()}
    assert held == minutes
