"""``BackgroundRecorder``: the life cycle every recorder that writes off the request path
shares.

A recorder takes what the request path hands it with no I/O (a dictionary update, an
append to a list), holds it in a bounded backlog, and writes it from one background task:

- every ``flush_interval_s`` the task flushes (:meth:`BackgroundRecorder.flush`: one write
  at a time, under a lock, so a write that puts rows back never races the next swap), then
  runs its chores that are due (deleting expired rows every ``purge_interval_s``, re-reading
  settings); a chore or a flush that fails is logged and the task goes on;
- what the backlog could not hold, or the store refused, is counted in ``dropped``; after
  each flush the drops since the last one are logged once, as an error;
- :meth:`BackgroundRecorder.close` stops the task, then flushes until nothing is pending, a
  few tries with a growing pause between (a database that blinked gets a moment), and logs
  what is still pending as lost.

A subclass says only what differs: what waits and how it is written (``pending`` and
``_write``), what is purged (``purge``, through :meth:`BackgroundRecorder._purge_expired`)
and what else runs on the task (``_chores``). The backlog stays the subclass's, because
its bound differs: the feedback recorder and the payload logger hold a list of requests
(bounded in rows, and in bytes) and write the rows they build through
:class:`~modelgate.core.serving.row_writer.RowWriter`; the usage recorder holds sums per
group (bounded in groups) and merges a failed write back into the newer sums, so it writes
them itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

__all__ = ["BackgroundRecorder", "Chore"]


@dataclass(frozen=True, slots=True)
class Chore:
    """Work the flush task does after a flush, every ``every_s`` (the first time
    ``first_s`` after the task starts; 0: after its first flush)."""

    every_s: float
    run: Callable[[], Awaitable[object]]
    #: logged as a warning, after the recorder's name and before the error, when a run fails
    failed: str
    first_s: float = 0.0


class BackgroundRecorder(ABC):
    """The background task, the flush lock, drop accounting and the drain at shutdown (see
    the module docstring). ``what`` starts every line the recorder logs; ``dropped_text``
    follows the number of drops a flush reports, ``lost_text`` the number lost at
    shutdown."""

    def __init__(
        self,
        *,
        what: str,
        log: logging.Logger,
        task_name: str,
        flush_interval_s: float,
        dropped_text: str,
        lost_text: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._what = what
        self._log = log
        self._task_name = task_name
        self._interval = flush_interval_s
        self._dropped_text = dropped_text
        self._lost_text = lost_text
        self._clock = clock
        self._dropped = 0  # lost before the store saw them (the backlog was full, ...)
        self._dropped_logged = 0
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        #: what the task waits on between flushes; close() ends the wait at once
        self._pause: asyncio.Future[None] | None = None

    # -- what a recorder says ------------------------------------------------------------
    @property
    @abstractmethod
    def pending(self) -> int:
        """What waits to be written."""

    @property
    def dropped(self) -> int:
        """What was lost: the backlog was full, or the store refused it."""
        return self._dropped

    @abstractmethod
    async def _write(self) -> int:
        """Write what waits (the flush lock is held); answers how many rows were written.
        What cannot be written now stays pending, within the backlog's bound."""

    def _chores(self) -> Sequence[Chore]:
        """What the task runs besides flushing."""
        return ()

    def _lost(self) -> int:
        """How much is lost when ``pending`` is left at shutdown, in ``lost_text``'s unit."""
        return self.pending

    # -- the background task -------------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.create_task(self._run(), name=self._task_name)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        chores = [(chore, loop.time() + chore.first_s) for chore in self._chores()]
        while not self._stop.is_set():
            await self._wait(loop)
            if self._stop.is_set():
                return
            # the outermost layer of this task: whatever fails, it must keep running
            try:
                await self.flush()
            except Exception:
                self._log.exception("%s: flush failed", self._what)
            now = loop.time()
            for i, (chore, due) in enumerate(chores):
                if now < due:
                    continue
                chores[i] = (chore, now + chore.every_s)
                try:
                    await chore.run()
                except Exception as exc:
                    self._log.warning("%s: %s: %r", self._what, chore.failed, exc)

    async def _wait(self, loop: asyncio.AbstractEventLoop) -> None:
        """``flush_interval_s``, or until :meth:`close`: one timer and one future, where a
        ``wait_for`` on the stop event made a task each time (most of what an idle
        recorder cost)."""
        pause = self._pause = loop.create_future()
        timer = loop.call_later(self._interval, _end_pause, pause)
        try:
            await pause
        finally:
            timer.cancel()
            self._pause = None

    async def flush(self) -> int:
        """Write everything pending now; answers how many rows were written."""
        async with self._lock:
            written = await self._write()
            dropped = self.dropped
            if dropped > self._dropped_logged:
                lost, self._dropped_logged = dropped - self._dropped_logged, dropped
                self._log.error("%s: %d %s", self._what, lost, self._dropped_text)
            return written

    async def close(self, attempts: int = 3) -> None:
        """Stop the task and write what is left (a few tries, a short wait between)."""
        self._stop.set()
        if self._pause is not None:
            _end_pause(self._pause)
        if self._task is not None:
            await self._task
            self._task = None
        if await _drain(self.flush, lambda: self.pending, attempts=attempts):
            self._log.error("%s: %d %s", self._what, self._lost(), self._lost_text)

    async def _purge_expired(self, purge: Callable[[datetime], Awaitable[int]], rows: str) -> int:
        """Delete with ``purge`` what expired by the recorder's clock; answers how many
        ``rows`` (named so in the log) were deleted."""
        purged = await purge(datetime.fromtimestamp(self._clock(), UTC))
        if purged:
            self._log.info("%s: %d %s deleted", self._what, purged, rows)
        return purged


def _end_pause(pause: asyncio.Future[None]) -> None:
    if not pause.done():
        pause.set_result(None)


async def _drain(
    flush: Callable[[], Awaitable[object]],
    pending: Callable[[], int],
    *,
    attempts: int = 3,
    pause_s: float = 0.2,
) -> int:
    """Flush until nothing is pending, at most ``attempts`` times, waiting a little longer
    between tries (a database that blinked gets a moment); returns what is still pending."""
    for attempt in range(attempts):
        await flush()
        if not pending():
            return 0
        if attempt + 1 < attempts:
            await asyncio.sleep(pause_s * (attempt + 1))
    return pending()
