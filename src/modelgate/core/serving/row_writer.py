"""``RowWriter``: rows built in the background that wait for a store's ``append``.

The payload logger and the feedback recorder each turn what the request path handed them
into rows, then write them here. What a write does with a store that fails:

- the database is down (any error but INVALID_ARGUMENT): the rows not written yet are kept,
  in order, for the next write; beyond ``max_waiting`` the newest are dropped and counted;
- the store refuses a step (INVALID_ARGUMENT: a row it cannot hold): that step is written
  again one row at a time, and only the refused rows are dropped and counted, so one bad
  row never holds the others back;
- the task is cancelled: every row not written is kept, and the cancellation goes on.

Rows are written ``step`` at a time (None: all at once), the event loop free between steps.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["RowWriter"]

R = TypeVar("R")


class RowWriter(Generic[R]):
    def __init__(
        self,
        append: Callable[[list[R]], Awaitable[None]],
        *,
        what: str,
        max_waiting: int,
        name_of: Callable[[R], str],
        log: logging.Logger,
        step: int | None = None,
    ) -> None:
        self._append = append
        self._what = what
        self._max_waiting = max_waiting
        self._name_of = name_of
        self._log = log
        self._step = step
        #: rows built and not written yet, oldest first
        self.rows: list[R] = []
        #: rows lost: refused by the store, or beyond ``max_waiting`` while it was down
        self.dropped = 0

    def __len__(self) -> int:
        return len(self.rows)

    def add(self, rows: Iterable[R]) -> None:
        self.rows.extend(rows)

    async def write(self) -> int:
        """Write every waiting row (see the module docstring); answers how many were
        written. Callers serialize their writes."""
        todo, self.rows = self.rows, []
        written = position = 0
        one_by_one_until = 0  # rows before this index go one at a time (a refused step)
        while position < len(todo):
            size = 1 if position < one_by_one_until else (self._step or len(todo))
            chunk = todo[position : position + size]
            try:
                await self._append(chunk)
            except asyncio.CancelledError:
                self.rows[:0] = todo[position:]
                raise
            except ModelgateError as exc:
                if exc.kind is not ErrorKind.INVALID_ARGUMENT:
                    self._keep(todo[position:], exc)
                    break
                if size > 1:
                    one_by_one_until = position + len(chunk)
                    continue
                self.dropped += 1
                self._log.error(
                    "%s: %s refused by the store, dropped: %s",
                    self._what,
                    self._name_of(chunk[0]),
                    exc.message,
                )
                position += 1
                continue
            except Exception as exc:  # the database is down: keep them, retry later
                self._keep(todo[position:], exc)
                break
            written += len(chunk)
            position += len(chunk)
            if position < len(todo):
                try:
                    await asyncio.sleep(0)  # requests run between steps
                except asyncio.CancelledError:
                    self.rows[:0] = todo[position:]
                    raise
        return written

    def _keep(self, rows: list[R], exc: Exception) -> None:
        room = max(self._max_waiting - len(self.rows), 0)
        if len(rows) > room:  # the newest that do not fit are lost, and counted
            self.dropped += len(rows) - room
            rows = rows[:room]
        self.rows[:0] = rows
        self._log.warning("%s: %d rows not written, kept for retry: %r", self._what, len(rows), exc)
