"""``SqlUsageStore``: aggregated usage records and the price table in SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, case, func, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

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
from modelgate.storage.sql.bulk_insert import BulkInsert
from modelgate.storage.sql.engine import reading, writing
from modelgate.storage.sql.schema import ID_LENGTH, NAME_LENGTH, prices, usage_records
from modelgate.storage.sql.values import checked_text, checked_time, storable

__all__ = ["SqlUsageStore"]

_U = usage_records.c
# report column -> table column (``day`` is an expression, per dialect)
_TEXT_GROUPS = {"tenant": _U.tenant_id, "key": _U.key_id, "model": _U.model, "version": _U.version}


class SqlUsageStore:
    """:class:`~modelgate.core.admission.usage.UsageStore` on ``usage_records`` and ``prices``.

    Text the columns cannot hold on every backend (NUL, over-long) is INVALID_ARGUMENT on
    write and matches nothing in a filter, as in the identity store. Reports order text by
    code point on both backends (PostgreSQL compares with the "C" collation).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._insert = BulkInsert(usage_records, _RECORD_COLUMNS, engine.dialect)

    async def append(self, records: Sequence[UsageRecord]) -> None:
        if not records:
            return
        async with writing(self._engine) as connection:
            await self._insert.execute(connection, records, _record_row)

    async def report(self, query: UsageQuery) -> list[UsageRow]:
        filters = self._filters(query)
        if filters is None:
            return []
        groups: dict[str, ColumnElement[Any]] = {}
        for name in GROUPS:
            if name in query.group_by:
                groups[name] = self._day() if name == "day" else _TEXT_GROUPS[name]
        failed = case((_U.status != "ok", _U.requests), else_=0)
        statement = (
            select(
                *(column.label(name) for name, column in groups.items()),
                func.sum(_U.requests).label("requests"),
                func.sum(failed).label("errors"),
                func.sum(_U.rows).label("rows"),
                func.sum(_U.tokens).label("tokens"),
                func.sum(_U.explanations).label("explanations"),
                func.sum(_U.latency_ms_sum).label("latency_ms_sum"),
                func.max(_U.latency_ms_max).label("latency_ms_max"),
                func.sum(_U.compute_ms_sum).label("compute_ms_sum"),
                func.sum(_U.cost).label("cost"),
            )
            .where(*filters)
            .group_by(*groups.values())
            .order_by(*(self._ordered(column) for column in groups.values()))
        )
        async with reading(self._engine) as connection:
            result = await connection.execute(statement)
            return [_row(row._mapping) for row in result if row.requests is not None]

    async def totals(self, tenant_id: str, since: datetime) -> UsageTotals:
        checked_time(since, "since")
        if not storable(tenant_id, ID_LENGTH):
            return UsageTotals(0, 0, 0)
        statement = select(
            func.coalesce(func.sum(_U.requests), 0),
            func.coalesce(func.sum(_U.rows), 0),
            func.coalesce(func.sum(_U.tokens), 0),
        ).where(
            _U.tenant_id == tenant_id,
            _U.period_start >= since,
            _U.status.not_in(sorted(NOT_ADMITTED)),
        )
        async with reading(self._engine) as connection:
            requests, rows, tokens = (await connection.execute(statement)).one()
        return UsageTotals(int(requests), int(rows), int(tokens))

    async def hourly(self, since: datetime) -> list[HourlyCount]:
        checked_time(since, "since")
        hour = self._hour()
        statement = (
            select(hour.label("hour"), _U.model, func.sum(_U.requests).label("requests"))
            .where(_U.period_start >= since)
            .group_by(hour, _U.model)
        )
        async with reading(self._engine) as connection:
            result = await connection.execute(statement)
            return [
                HourlyCount(
                    datetime.strptime(row.hour, "%Y-%m-%d %H").replace(tzinfo=UTC),
                    row.model,
                    int(row.requests),
                )
                for row in result
            ]

    async def set_price(self, price: Price) -> None:
        row = {
            "target": checked_text(price.target, "price target", NAME_LENGTH),
            "per_1k_units": price.per_1k_units,
            "per_compute_second": price.per_compute_second,
            "updated_at": checked_time(price.updated_at, "updated_at"),
        }
        insert = (postgresql.insert if self._postgres else sqlite.insert)(prices).values(row)
        upsert = insert.on_conflict_do_update(
            index_elements=[prices.c.target],
            set_={name: insert.excluded[name] for name in row if name != "target"},
        )
        async with writing(self._engine) as connection:
            await connection.execute(upsert)

    async def list_prices(self) -> list[Price]:
        async with reading(self._engine) as connection:
            result = await connection.execute(
                select(prices).order_by(self._ordered(prices.c.target))
            )
            return [
                Price(r.target, r.per_1k_units, r.per_compute_second, r.updated_at) for r in result
            ]

    async def delete_price(self, target: str) -> bool:
        if not storable(target, NAME_LENGTH):
            return False
        async with writing(self._engine) as connection:
            result = await connection.execute(prices.delete().where(prices.c.target == target))
        return result.rowcount > 0

    def _day(self) -> ColumnElement[Any]:
        # Constants as literal SQL, not bound parameters: PostgreSQL must see the GROUP BY
        # expression as the very one selected. Stored times are UTC on both backends.
        if self._postgres:
            utc = func.timezone(literal_column("'UTC'"), _U.period_start)
            return func.to_char(utc, literal_column("'YYYY-MM-DD'"))
        return func.substr(_U.period_start, 1, 10)  # SQLite's text 'YYYY-MM-DD HH:MM:SS...'

    def _hour(self) -> ColumnElement[Any]:
        # 'YYYY-MM-DD HH' in UTC on both backends, as ``_day`` does for days
        if self._postgres:
            utc = func.timezone(literal_column("'UTC'"), _U.period_start)
            return func.to_char(utc, literal_column("'YYYY-MM-DD HH24'"))
        return func.substr(_U.period_start, 1, 13)

    def _ordered(self, column: ColumnElement[Any]) -> ColumnElement[Any]:
        # NULL first, as SQLite does by default; text by code point on both backends.
        ordered = column.collate("C") if self._postgres else column
        return ordered.asc().nulls_first()

    @staticmethod
    def _filters(query: UsageQuery) -> list[ColumnElement[bool]] | None:
        filters: list[ColumnElement[bool]] = []
        for value, column, length in (
            (query.tenant_id, _U.tenant_id, ID_LENGTH),
            (query.key_id, _U.key_id, ID_LENGTH),
            (query.model, _U.model, NAME_LENGTH),
        ):
            if value is not None:
                if not storable(value, length):
                    return None  # no stored record can match it
                filters.append(column == value)
        if query.since is not None:
            filters.append(_U.period_start >= checked_time(query.since, "since"))
        if query.until is not None:
            filters.append(_U.period_start < checked_time(query.until, "until"))
        return filters


#: what :func:`_record_row` answers, in this order (``id`` is the database's)
_RECORD_COLUMNS = (
    "period_start",
    "tenant_id",
    "key_id",
    "model",
    "version",
    "hardware",
    "status",
    "cache_hit",
    "requests",
    "rows",
    "tokens",
    "explanations",
    "latency_ms_sum",
    "latency_ms_max",
    "compute_ms_sum",
    "cost",
)


def _record_row(record: UsageRecord) -> tuple[Any, ...]:
    key_id, version = record.key_id, record.version
    return (
        checked_time(record.period_start, "period_start"),
        checked_text(record.tenant_id, "usage tenant_id", ID_LENGTH),
        None if key_id is None else checked_text(key_id, "usage key_id", ID_LENGTH),
        checked_text(record.model, "usage model", NAME_LENGTH),
        None if version is None else checked_text(version, "usage version", ID_LENGTH),
        checked_text(record.hardware, "usage hardware", 32),
        checked_text(record.status, "usage status", 32),
        record.cache_hit,
        record.requests,
        record.rows,
        record.tokens,
        record.explanations,
        record.latency_ms_sum,
        record.latency_ms_max,
        record.compute_ms_sum,
        record.cost,
    )


def _row(row: Any) -> UsageRow:
    requests = int(row["requests"])
    return UsageRow(
        day=row.get("day"),
        tenant_id=row.get("tenant"),
        key_id=row.get("key"),
        model=row.get("model"),
        version=row.get("version"),
        requests=requests,
        errors=int(row["errors"]),
        rows=int(row["rows"]),
        tokens=int(row["tokens"]),
        explanations=int(row["explanations"]),
        latency_ms_avg=float(row["latency_ms_sum"]) / requests if requests else 0.0,
        latency_ms_max=float(row["latency_ms_max"]),
        compute_seconds=float(row["compute_ms_sum"]) / 1000,
        cost=float(row["cost"]),
    )
