"""``BulkInsert``: many rows into one table, the statement compiled once per engine.

The background writers (predictions kept for feedback, usage sums) insert thousands of rows
a second from the event loop's thread. Through ``connection.execute(table.insert(), dicts)``
SQLAlchemy builds each row's parameters anew (``construct_params``) and runs each column's
bind processor on every value (on SQLite a ``DATETIME`` becomes text by ``%``-formatting,
twice per prediction): about 60 µs of the loop's CPU per prediction row, most of the
writer's cost (bench/writer_throughput.py).

Here SQLAlchemy still writes the SQL and still chooses each value's conversion, but once:
the dialect compiles the ``INSERT`` when the store is built (the very text ``execute``
would send: placeholders and, on asyncpg, the bind casts), each column's bind processor is
looked up once (a time on SQLite is one ``isoformat``: :func:`sqlite_utc_text`), and the
rows go to the driver as plain tuples through
:meth:`~sqlalchemy.ext.asyncio.AsyncConnection.exec_driver_sql`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

from sqlalchemy import Dialect, Table
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.types import TypeEngine

from modelgate.storage.sql.schema import UtcDateTime

__all__ = ["BulkInsert", "sqlite_utc_text"]

R = TypeVar("R")


class BulkInsert:
    """``INSERT INTO table (columns...)`` for ``dialect``; :meth:`execute` takes each row
    as a tuple of Python values in ``columns`` order (what ``table.insert()`` would take
    as a dict), converted exactly as SQLAlchemy converts them.

    How the rows travel depends on the driver. sqlite3's ``executemany`` loops in C, in
    aiosqlite's thread: one call per piece. asyncpg's ``executemany`` sends a Bind and an
    Execute per row and the server answers each, about 4,000 rows a second here: so on
    PostgreSQL a piece is one multi-row ``INSERT ... VALUES (...), (...)``, compiled once
    per row count (the count of a full piece, and powers of two for the rest, so that a
    few prepared statements serve every batch).
    """

    def __init__(self, table: Table, columns: Sequence[str], dialect: Dialect) -> None:
        self._table = table
        self._columns = list(columns)
        self._dialect = dialect
        self._multi_row = dialect.name == "postgresql"
        compiled = table.insert().compile(dialect=dialect, column_keys=self._columns)
        order = compiled.positiontup
        if order is None or sorted(order) != sorted(columns):
            raise ValueError(f"{dialect.name}: not a positional INSERT of {self._columns}")
        #: the one-row statement's text, with positional placeholders
        self.sql = compiled.string
        #: where each placeholder's value is in a row
        self._positions = [self._columns.index(name) for name in order]
        # each placeholder's bind processor: what the column type does to a value on the way
        # to the driver (SQLite: a datetime to text, a number to a float); None: nothing
        self._processors: list[Callable[[Any], Any] | None] = [
            _processor(table.c[name].type, dialect) for name in order
        ]
        self._multi_row_sql: dict[int, str] = {}

    def parameters(self, rows: Iterable[Sequence[Any]]) -> list[tuple[Any, ...]]:
        """``rows`` as the driver takes them: in placeholder order, each value converted
        by its column's bind processor."""
        positions = self._positions
        converters = [(slot, p) for slot, p in enumerate(self._processors) if p is not None]
        if not converters and positions == sorted(positions):
            return [tuple(row) for row in rows]
        out: list[tuple[Any, ...]] = []
        for row in rows:
            values = [row[i] for i in positions]
            for slot, convert in converters:
                values[slot] = convert(values[slot])
            out.append(tuple(values))
        return out

    async def execute(
        self,
        connection: AsyncConnection,
        records: Sequence[R],
        row_of: Callable[[R], Sequence[Any]],
        *,
        piece: int = 500,
        convert: int = 100,
    ) -> None:
        """Insert ``records`` in ``connection``'s transaction, each made a row by
        ``row_of`` (which may refuse one by raising), ``piece`` rows at a time. The loop
        runs other work while the driver writes a piece, and between the conversions of
        each ``convert`` rows of a piece: it is held for one conversion at a time (0.7 ms
        for 100 prediction rows here), however many rows the transaction takes. A whole
        piece of 500 converted at once held it for 2.6 ms at best, and a request arriving
        then waited as long (``python -m bench.inprocess stalls``)."""
        for start in range(0, len(records), piece):
            end = min(start + piece, len(records))
            rows: list[tuple[Any, ...]] = []
            for first in range(start, end, convert):
                if first > start:
                    await asyncio.sleep(0)  # requests run between conversions
                chunk = records[first : min(first + convert, end)]
                rows += self.parameters(row_of(record) for record in chunk)
            if not self._multi_row:
                await connection.exec_driver_sql(self.sql, rows)
                continue
            done = 0
            for count in _row_counts(len(rows), piece):
                flat = tuple(value for row in rows[done : done + count] for value in row)
                await connection.exec_driver_sql(self._sql_for(count), flat)
                done += count

    def _sql_for(self, rows: int) -> str:
        """The text of one ``INSERT`` of ``rows`` rows (compiled once per count)."""
        sql = self._multi_row_sql.get(rows)
        if sql is None:
            blank = dict.fromkeys(self._columns)
            compiled = self._table.insert().values([blank] * rows).compile(dialect=self._dialect)
            one_row = [name for name in compiled.positiontup or ()][: len(self._columns)]
            expected = [f"{name}_m{i}" for i in range(rows) for name in _unsuffixed(one_row)]
            if compiled.positiontup != expected or [
                self._columns[i] for i in self._positions
            ] != _unsuffixed(one_row):
                raise ValueError(f"{self._dialect.name}: unexpected multi-row INSERT")
            sql = self._multi_row_sql[rows] = compiled.string
        return sql


def _unsuffixed(names: Sequence[str]) -> list[str]:
    return [name.removesuffix("_m0") for name in names]


def _row_counts(total: int, piece: int) -> list[int]:
    """``total`` rows as statement sizes: ``piece`` while they last, then powers of two."""
    counts = [piece] * (total // piece)
    rest = total % piece
    bit = 1 << max(rest.bit_length() - 1, 0)
    while rest:
        if rest >= bit:
            counts.append(bit)
            rest -= bit
        bit >>= 1
    return counts


def _processor(column_type: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """The column type's bind processor for ``dialect``; for a :class:`UtcDateTime` on
    SQLite, an equivalent one that does the same in one C call (the general one takes
    about five times as long: a time zone check, ``astimezone``, ``replace``, then
    ``%``-formatting of seven fields), used only where it gives the very same text."""
    process = column_type.dialect_impl(dialect).bind_processor(dialect)
    if (
        process is not None
        and isinstance(column_type, UtcDateTime)
        and dialect.name == "sqlite"
        and all(process(probe) == sqlite_utc_text(probe) for probe in _PROBES)
    ):
        return sqlite_utc_text
    return process


def sqlite_utc_text(value: datetime | None) -> str | None:
    """What SQLAlchemy stores for a :class:`UtcDateTime` on SQLite: the time in UTC as
    ``YYYY-MM-DD HH:MM:SS.ffffff``; a naive time is refused, as the type refuses it."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: modelgate stores aware UTC times")
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


_PROBES = (
    datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC),
    datetime(1, 1, 1, tzinfo=UTC),
    datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
    datetime(2026, 6, 30, 23, 30, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
)
