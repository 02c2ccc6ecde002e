"""``BulkInsert`` on SQLite and PostgreSQL: it stores exactly what SQLAlchemy's own
``table.insert()`` stores (the same text on SQLite, the same values on PostgreSQL), and the
SQLite time text is SQLAlchemy's for every aware time."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.dialects.sqlite.aiosqlite import SQLiteDialect_aiosqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from modelgate.core.admission.usage import UsageRecord
from modelgate.core.monitoring.predictions import PredictionRecord
from modelgate.errors import ModelgateError
from modelgate.storage.sql.bulk_insert import BulkInsert, _row_counts, sqlite_utc_text
from modelgate.storage.sql.engine import writing
from modelgate.storage.sql.feedback import _COLUMNS, SqlFeedbackStore, _row
from modelgate.storage.sql.schema import UtcDateTime, predictions, usage_records
from modelgate.storage.sql.usage import _RECORD_COLUMNS, SqlUsageStore, _record_row

EAST = timezone(timedelta(hours=5, minutes=45))
WEST = timezone(timedelta(hours=-9, minutes=-30))


def _predictions(prefix: str) -> list[PredictionRecord]:
    times = [
        datetime(2026, 3, 1, 12, 0, 0, 1, tzinfo=UTC),
        datetime(2026, 3, 1, 23, 59, 59, 999_999, tzinfo=EAST),
        datetime(1999, 12, 31, 20, 0, tzinfo=WEST),
    ]
    scores: list[float | None] = [0.1, -0.0, None, 1e300, 2.0, 3]  # type: ignore[list-item]
    return [
        PredictionRecord(
            id=f"{prefix}{i}",
            row=i % 3,
            tenant_id="t-é",
            request_id=f"r'; DROP TABLE predictions; --{i}",
            inference_id=None if i % 2 else "oip-🙂",
            model="m",
            version="1",
            subject=None if i % 3 else "s" * 64,
            created_at=times[i % 3],
            expires_at=times[i % 3] + timedelta(days=30),
            predicted=None if i == 4 else 2**62 - i,
            score=scores[i],
        )
        for i in range(6)
    ]


def _usage(tenant: str) -> list[UsageRecord]:
    at = datetime(2026, 3, 1, 12, 1, tzinfo=EAST)
    records = []
    for i in range(4):
        record = UsageRecord(at, tenant, None if i % 2 else "k", "m", None, "cpu", "ok", i == 1)
        record.requests, record.rows, record.tokens = i, 2**40 + i, 0
        record.latency_ms_sum, record.latency_ms_max, record.compute_ms_sum = -0.0, 1.5, 3
        record.cost = 0.000_001 * i
        records.append(record)
    return records


async def _raw(engine: AsyncEngine, sql: str) -> list[tuple[Any, ...]]:
    async with engine.connect() as connection:
        return [tuple(row) for row in await connection.execute(text(sql))]


async def test_predictions_are_stored_as_sqlalchemy_stores_them(engine: AsyncEngine) -> None:
    await SqlFeedbackStore(engine).append(_predictions("bulk-"))
    async with engine.begin() as connection:
        rows = [dict(zip(_COLUMNS, _row(r), strict=True)) for r in _predictions("core-")]
        await connection.execute(predictions.insert(), rows)
    select = "SELECT * FROM predictions WHERE id LIKE '{}%' ORDER BY id"
    bulk = await _raw(engine, select.format("bulk-"))
    core = await _raw(engine, select.format("core-"))
    assert len(bulk) == 6
    assert [r[1:] for r in bulk] == [r[1:] for r in core]
    assert [str(r[0]).removeprefix("bulk-") for r in bulk] == [
        str(r[0]).removeprefix("core-") for r in core
    ]


async def test_usage_records_are_stored_as_sqlalchemy_stores_them(engine: AsyncEngine) -> None:
    await SqlUsageStore(engine).append(_usage("bulk"))
    async with engine.begin() as connection:
        rows = [dict(zip(_RECORD_COLUMNS, _record_row(r), strict=True)) for r in _usage("core")]
        await connection.execute(usage_records.insert(), rows)
    select = "SELECT * FROM usage_records WHERE tenant_id = '{}' ORDER BY id"
    bulk = await _raw(engine, select.format("bulk"))
    core = await _raw(engine, select.format("core"))
    assert len(bulk) == 4
    assert [r[3:] for r in bulk] == [r[3:] for r in core]  # past id, period, tenant
    assert [r[1] for r in bulk] == [r[1] for r in core]


async def test_a_refused_row_writes_none_of_its_call(engine: AsyncEngine) -> None:
    store = SqlFeedbackStore(engine)
    records = _predictions("all-or-none-")
    records[5] = replace(records[5], tenant_id="x" * 10_000)  # too long: refused
    with pytest.raises(Exception, match="longer than"):
        await store.append(records)
    assert await _raw(engine, "SELECT id FROM predictions") == []


async def test_a_refusal_in_a_later_piece_undoes_the_earlier_pieces(engine: AsyncEngine) -> None:
    insert = BulkInsert(predictions, _COLUMNS, engine.dialect)
    records = _predictions("late-")
    records[5] = replace(records[5], request_id="\x00")  # refused
    with pytest.raises(ModelgateError, match="NUL"):
        async with writing(engine) as connection:
            await insert.execute(connection, records, _row, piece=2)
    assert await _raw(engine, "SELECT id FROM predictions") == []


def test_a_piece_is_any_size() -> None:
    insert = BulkInsert(predictions, _COLUMNS, SQLiteDialect_aiosqlite())
    rows = [_row(r) for r in _predictions("p-")]
    assert len(insert.parameters(rows)) == 6
    assert insert.parameters([]) == []


_SQLITE = SQLiteDialect_aiosqlite()
_GENERAL = UtcDateTime().dialect_impl(_SQLITE).bind_processor(_SQLITE)


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.builds(
            timezone, st.timedeltas(min_value=timedelta(hours=-23), max_value=timedelta(hours=23))
        ),
    )
)
def test_sqlite_time_text_is_sqlalchemys(at: datetime) -> None:
    assert _GENERAL is not None
    assert sqlite_utc_text(at) == _GENERAL(at)


def test_sqlite_time_text_refuses_a_naive_time_as_the_type_does() -> None:
    assert sqlite_utc_text(None) is None
    for convert in (sqlite_utc_text, _GENERAL):
        assert convert is not None
        with pytest.raises(ValueError, match="naive"):
            convert(datetime(2026, 1, 1))


@given(st.integers(min_value=0, max_value=5000), st.integers(min_value=1, max_value=600))
def test_rows_are_split_into_full_pieces_then_powers_of_two(total: int, piece: int) -> None:
    counts = _row_counts(total, piece)
    assert sum(counts) == total
    assert all(count == piece for count in counts[: total // piece])
    rest = counts[total // piece :]
    assert all(count & (count - 1) == 0 for count in rest)  # powers of two
    assert len(rest) == len(set(rest))  # each at most once: a few statements serve all


async def test_every_row_count_is_written(engine: AsyncEngine) -> None:
    insert = BulkInsert(predictions, _COLUMNS, engine.dialect)
    template = _predictions("n-")[0]
    records = [replace(template, id=f"n-{i}") for i in range(23)]
    async with writing(engine) as connection:
        await insert.execute(connection, records, _row, piece=8)  # 8, 8, 4, 2, 1
    ids = {r[0] for r in await _raw(engine, "SELECT id FROM predictions")}
    assert ids == {f"n-{i}" for i in range(23)}


async def test_the_loop_runs_between_the_conversions_of_a_piece(engine: AsyncEngine) -> None:
    """A piece's rows are converted ``convert`` at a time, other tasks running between:
    a flush of thousands of rows never holds the event loop for a whole piece."""
    insert = BulkInsert(predictions, _COLUMNS, engine.dialect)
    template = _predictions("c-")[0]
    records = [replace(template, id=f"c-{i}") for i in range(23)]
    turns = 0
    seen: list[int] = []

    async def other_work() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    def row_of(record: PredictionRecord) -> tuple[Any, ...]:
        seen.append(turns)
        return _row(record)

    ticker = asyncio.create_task(other_work())
    await asyncio.sleep(0)
    try:
        async with writing(engine) as connection:
            await insert.execute(connection, records, row_of, piece=10, convert=4)
    finally:
        ticker.cancel()
    # pieces of 10, 10, 3; within each, conversions of 4, 4, 2 (and 3): the loop turned
    # between every two conversions, never inside one
    chunks = [seen[i : i + 4] for i in (0, 4)] + [seen[8:10]]
    chunks += [seen[i : i + 4] for i in (10, 14)] + [seen[18:20], seen[20:23]]
    assert all(len(set(chunk)) == 1 for chunk in chunks)
    firsts = [chunk[0] for chunk in chunks]
    assert firsts == sorted(set(firsts))  # a new turn for every conversion
    ids = {r[0] for r in await _raw(engine, "SELECT id FROM predictions")}
    assert ids == {f"c-{i}" for i in range(23)}
