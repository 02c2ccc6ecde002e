"""``RowWriter``: whatever the store does (refuses rows, goes down midway, the task is
cancelled), every row is written once, in order, or counted as dropped."""

from __future__ import annotations

import asyncio
import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modelgate.core.serving.row_writer import RowWriter
from modelgate.errors import ErrorKind, ModelgateError, invalid

log = logging.getLogger("test.row_writer")


class Store:
    """Refuses rows in ``refused``; fails (UNAVAILABLE or a raw error) while ``down``."""

    def __init__(self, refused: frozenset[int] = frozenset(), down_after: int | None = None):
        self.rows: list[int] = []
        self.refused = refused
        self.down_after = down_after  # appends that succeed before the outage
        self.appends = 0
        self.raw = False

    async def append(self, rows: list[int]) -> None:
        await asyncio.sleep(0)
        if self.down_after is not None and self.appends >= self.down_after:
            if self.raw:
                raise ConnectionError("database unreachable")
            raise ModelgateError(ErrorKind.UNAVAILABLE, "the database is unavailable")
        if any(r in self.refused for r in rows):
            raise invalid("refused")
        self.appends += 1
        self.rows.extend(rows)


def writer(store: Store, max_waiting: int = 10_000, step: int | None = 3) -> RowWriter[int]:
    return RowWriter(
        store.append, what="test", max_waiting=max_waiting, name_of=str, log=log, step=step
    )


@settings(max_examples=200, deadline=None)
@given(
    count=st.integers(0, 40),
    refused=st.frozensets(st.integers(0, 39), max_size=6),
    down_after=st.none() | st.integers(0, 8),
    step=st.none() | st.integers(1, 7),
    raw=st.booleans(),
)
def test_every_row_is_written_once_in_order_or_counted(
    count: int, refused: frozenset[int], down_after: int | None, step: int | None, raw: bool
) -> None:
    async def run() -> None:
        store = Store(refused, down_after)
        store.raw = raw
        rows = writer(store, step=step)
        rows.add(range(count))
        first = await rows.write()
        store.down_after = None  # the database is back
        second = await rows.write()
        expected = [r for r in range(count) if r not in refused]
        assert store.rows == expected
        assert first + second == len(expected)
        assert rows.dropped == len([r for r in range(count) if r in refused])
        assert len(rows) == 0

    asyncio.run(run())


async def test_an_outage_keeps_only_max_waiting_rows_and_counts_the_rest() -> None:
    store = Store(down_after=0)
    rows = writer(store, max_waiting=4)
    rows.add(range(10))
    assert await rows.write() == 0
    assert rows.rows == [0, 1, 2, 3] and rows.dropped == 6  # the oldest are kept


@pytest.mark.parametrize("cancel_at", [0, 1, 2, 3])
async def test_a_cancelled_write_keeps_what_it_had_not_written(cancel_at: int) -> None:
    store = Store()
    rows = writer(store, step=2)
    rows.add(range(7))
    task = asyncio.create_task(rows.write())
    for _ in range(cancel_at):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert store.rows + rows.rows == list(range(7))  # nothing lost, nothing twice
    remaining = len(rows)
    assert await rows.write() == remaining
    assert store.rows == list(range(7))
