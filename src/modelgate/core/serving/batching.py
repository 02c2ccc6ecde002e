"""Adaptive micro-batching: a :class:`ModelRuntime` that wraps another one.

Concurrent requests are queued and merged into one call of the inner runtime, then split
back so each caller gets exactly its own rows. The batch grows with load by itself: while
one batch runs, the next one fills, so no delay is added when the model is idle
(``max_queue_delay_us: 0``). A positive delay lets the first request of a batch wait for
company, like Triton's ``max_queue_delay_microseconds``.

Requests are only merged when every non-batch dimension agrees; a request with more rows
than ``max_batch_size`` is cut into chunks, which join the back of the queue one turn at a
time, so other requests run between them. Waiting requests are taken per tenant in turn,
by deficit round robin weighted by ``Timing.weight`` (:mod:`modelgate.core.serving.fair_queue`):
one tenant's queued rows delay another tenant's request by at most one batch. A full queue
answers OVERLOADED at once, to the newcomer or, when another tenant holds more of the queue
for its weight, to that tenant's newest request.

When requests come one at a time (the last ``SOLO_STREAK`` batches each held one request),
queueing only costs: a future, an event-loop turn and, with a delay, the delay itself. The
batcher then runs requests directly, and every ``PROBE_EVERY``-th request goes through the
queue again as a probe: if others arrive beside it, batching resumes at once.

Each caller is charged its share of a merged batch's compute time (``Timing.compute_share_ns``,
what usage meters), never the whole of it: in proportion to its tokens when the runtime
counts them per row (``units_output``, an embedding model's token count), else to its rows.
The shares are whole nanoseconds and add up to the batch's time exactly: what the integer
division leaves goes to the batch's first (oldest) caller. A caller that went away before
the batch ended is charged nothing, and its share is not passed on to the others.

The merged call gets a Timing of its own (``_batch_timing``): the latest of its callers'
deadlines, and their tenant when they share one. What the inner runtime writes on it (a
gateway's node, hardware and response parameters) is copied to every caller of the batch;
the compute time is the batcher's own measure of the call, as for any batch.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from modelgate.core.serving.execution import PredictorRuntime
from modelgate.core.serving.fair_queue import FairQueue
from modelgate.core.serving.manifest import BatchingPolicy
from modelgate.core.serving.ports import Arrays, ModelRuntime, Timing, VersionObserver
from modelgate.errors import ErrorKind, ModelgateError, deadline_exceeded

__all__ = ["BatchingRuntime"]

_Outputs = dict[str, np.ndarray[Any, Any]]

SOLO_STREAK = 8
PROBE_EVERY = 32


@dataclass(slots=True)
class _Pending:
    inputs: Arrays
    rows: int
    key: tuple[tuple[int, ...], ...]
    future: asyncio.Future[_Outputs]
    timing: Timing | None
    enqueued_ns: int = field(default_factory=time.perf_counter_ns)
    #: the fair queue's lane (None: no tenant) and weight, from the request's Timing
    tenant: str | None = None
    weight: float = 1.0


class BatchingRuntime:
    """Queues requests and runs them in merged batches on ``inner``.

    ``concurrency`` batches may run at once (more than one only helps runtimes that work in
    threads). When ``inner`` is a predictor that runs inline, the batch runs straight from
    the loop callback, with no task per batch. ``units_output`` names the output that
    counts each row's tokens, by which a batch's compute is shared (None: by rows).
    """

    def __init__(
        self,
        inner: ModelRuntime,
        policy: BatchingPolicy,
        *,
        observer: VersionObserver | None = None,
        concurrency: int = 1,
        units_output: str | None = None,
    ):
        self.inner = inner
        self.policy = policy
        self._observer = observer
        self._concurrency = concurrency
        self._units_output = units_output
        self._queue: FairQueue[_Pending] = FairQueue()
        self._running = 0
        self._tasks: set[asyncio.Task[None]] = set()  # running batches, referenced until done
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        #: the predictor runtime called straight from the loop (None: ``inner`` is awaited)
        self._inline = inner if isinstance(inner, PredictorRuntime) and not inner.offload else None
        self._delay = policy.max_queue_delay_us / 1e6
        self._solo = 0  # consecutive batches of one request
        self._direct = False  # load is solo: skip the queue (see the module docstring)
        self._since_probe = 0
        #: told, for each batch taken from the queue, how long its oldest request waited
        #: there (seconds): shedding on queueing delay (core/admission/overload.py); None: off
        self.on_queue_wait: Callable[[float], None] | None = None

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    async def infer(self, inputs: Arrays, timing: Timing | None = None) -> _Outputs:
        deadline = timing.deadline if timing is not None else None
        if deadline is not None and time.monotonic() >= deadline:  # no clock read without one
            raise deadline_exceeded()
        rows = _rows(inputs)
        limit = self.policy.max_batch_size
        if rows > limit:
            return await self._chunked(inputs, rows, timing)
        if len(self._queue) >= self.policy.max_queue_size:
            self._make_room(timing)
        if self._direct and not self._queue and not self._running:
            self._since_probe += 1
            if self._since_probe < PROBE_EVERY:
                return await self._run_direct(inputs, rows, timing)
            self._since_probe = 0  # this one is a probe: queue it
        return await self._enqueue(asyncio.get_running_loop(), inputs, rows, timing)

    def _make_room(self, timing: Timing | None) -> None:
        """The queue is full: push out the newest request of the tenant holding most of it
        for its weight, or refuse this one when that is its own tenant."""
        tenant, weight = _lane(timing)
        pushed = self._queue.push_out(tenant, weight)
        error = ModelgateError(
            ErrorKind.OVERLOADED,
            f"the model's queue is full ({self.policy.max_queue_size} requests)",
            retry_after=1.0,
        )
        if pushed is None:
            raise error
        if not pushed.future.done():
            pushed.future.set_exception(error)

    async def _run_direct(self, inputs: Arrays, rows: int, timing: Timing | None) -> _Outputs:
        start = time.perf_counter_ns()
        if self._inline is not None:
            outputs = self._inline.predict(inputs)
        else:
            self._running += 1  # requests arriving meanwhile queue, and form the next batch
            try:
                outputs = await self.inner.infer(inputs, timing)  # its deadline, its tenant
            finally:
                self._running -= 1
                self._schedule(asyncio.get_running_loop())
        elapsed = time.perf_counter_ns() - start
        if timing is not None:
            timing.compute_ns = elapsed
            timing.batch_size = rows
            timing.compute_share_ns = (timing.compute_share_ns or 0) + elapsed  # all its own
        if self._observer is not None:
            self._observer.batch(rows, elapsed)
        return outputs

    async def _chunked(self, inputs: Arrays, rows: int, timing: Timing | None) -> _Outputs:
        """Serve a request bigger than a batch in chunks that take turns with other work:
        ``concurrency`` chunks are queued at a time, and the next ones only once they are
        done, at the back of the queue, behind whatever arrived meanwhile. A large request
        thus holds the model for one batch at a time, never for all of its rows."""
        step = self.policy.max_batch_size
        window = max(1, min(self._concurrency, self.policy.max_queue_size // 2))
        starts = list(range(0, rows, step))
        results: list[_Outputs] = []
        for first in range(0, len(starts), window):
            chunks = [
                {k: v[i : i + step] for k, v in inputs.items()} for i in starts[first:][:window]
            ]
            parts: list[Awaitable[_Outputs]]
            if first == 0:  # a full queue refuses the request before any of it ran
                parts = [self.infer(chunk, timing) for chunk in chunks]
            else:  # a request under way is not refused half done: its chunks always queue
                loop = asyncio.get_running_loop()
                parts = [self._enqueue(loop, chunk, _rows(chunk), timing) for chunk in chunks]
            results.extend(await asyncio.gather(*parts))
        return {name: np.concatenate([r[name] for r in results]) for name in results[0]}

    def _enqueue(
        self, loop: asyncio.AbstractEventLoop, inputs: Arrays, rows: int, timing: Timing | None
    ) -> asyncio.Future[_Outputs]:
        tenant, weight = _lane(timing)
        pending = _Pending(
            inputs, rows, _key(inputs), loop.create_future(), timing, tenant=tenant, weight=weight
        )
        self._queue.push(pending)
        if self._observer is not None:
            self._observer.queue(len(self._queue))
        self._schedule(loop)
        return pending.future

    def _schedule(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._running >= self._concurrency or not self._queue:
            return
        if self._delay and self._queue.rows < self.policy.max_batch_size:
            if self._timer is None:
                waited = (time.perf_counter_ns() - self._queue.oldest_ns()) / 1e9
                self._timer = loop.call_later(max(0.0, self._delay - waited), self._flush)
            return
        if isinstance(self._timer, asyncio.TimerHandle):  # a full batch need not wait
            self._timer.cancel()
            self._timer = None
        if self._timer is None:
            self._timer = loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._timer = None
        if self._running >= self._concurrency or not self._queue:
            return
        batch = self._take()
        if not batch:  # every queued request had been given up on
            return
        self._running += 1
        if self._inline is not None:
            try:
                self._run_inline(self._inline, batch)
            finally:
                self._running -= 1
                self._schedule(asyncio.get_running_loop())
        else:
            self._tasks.add(task := asyncio.get_running_loop().create_task(self._run(batch)))
            task.add_done_callback(self._tasks.discard)

    def _take(self) -> list[_Pending]:
        """The next batch, tenants in turn (:class:`FairQueue`); within a tenant, its oldest
        request and the queued ones that fit beside it, in arrival order.

        Requests whose caller is gone (cancelled) or whose deadline has passed are dropped
        here, before any work is done for them: they fail with DEADLINE_EXCEEDED."""
        now = time.monotonic()
        batch = self._queue.take(self.policy.max_batch_size, lambda p: _given_up(p, now))
        if self._observer is not None:
            self._observer.queue(len(self._queue))
        if self.on_queue_wait is not None and batch:
            oldest = min(p.enqueued_ns for p in batch)
            self.on_queue_wait((time.perf_counter_ns() - oldest) / 1e9)
        return batch

    def _run_inline(self, runtime: PredictorRuntime, batch: list[_Pending]) -> None:
        start = time.perf_counter_ns()
        try:
            outputs = runtime.predict(_merge(batch))
        except BaseException as exc:
            _fail(batch, exc)
            return
        self._delivered(batch, outputs, start)

    async def _run(self, batch: list[_Pending]) -> None:
        start = time.perf_counter_ns()
        answer = _batch_timing(batch)
        try:
            outputs = await self.inner.infer(_merge(batch), answer)
        except BaseException as exc:
            self._finished()
            _fail(batch, exc)
            if not isinstance(exc, Exception):
                raise
            return
        self._finished()  # before the callers wake, so they see an idle batcher
        self._delivered(batch, outputs, start, answer)

    def _finished(self) -> None:
        self._running -= 1
        self._schedule(asyncio.get_running_loop())

    def _delivered(
        self, batch: list[_Pending], outputs: _Outputs, start: int, answer: Timing | None = None
    ) -> None:
        end = time.perf_counter_ns()
        if len(batch) == 1:
            self._solo += 1
            self._direct = self._solo >= SOLO_STREAK
        else:
            self._solo = 0
            self._direct = False
        delivered = _deliver(batch, outputs, start, end, self._units_output, answer)
        if delivered and self._observer is not None:
            self._observer.batch(sum(p.rows for p in batch), end - start)

    def close(self) -> None:
        for pending in self._queue.drain():
            if not pending.future.done():
                pending.future.set_exception(
                    ModelgateError(ErrorKind.UNAVAILABLE, "the model was unloaded")
                )
        self.inner.close()


def _rows(inputs: Arrays) -> int:
    for array in inputs.values():
        return int(array.shape[0]) if array.ndim else 1
    return 0


def _key(inputs: Arrays) -> tuple[tuple[int, ...], ...]:
    return tuple(array.shape[1:] for array in inputs.values())


def _merge(batch: list[_Pending]) -> dict[str, np.ndarray[Any, Any]]:
    if len(batch) == 1:
        return dict(batch[0].inputs)
    return {name: np.concatenate([p.inputs[name] for p in batch]) for name in batch[0].inputs}


def _batch_timing(batch: list[_Pending]) -> Timing:
    """The Timing the merged call is made with: the latest of its callers' deadlines (none
    when a caller has none: someone waits for the answer that long), and the tenant they all
    share, with its weight and priority (none when they differ: the batch was already taken
    tenants in turn here), and critical when one of them is. A gateway forwards both to its node."""
    deadline: float | None = 0.0
    tenants: set[str | None] = set()
    critical = False
    for pending in batch:
        timing = pending.timing
        critical = critical or timing is None or timing.critical
        if timing is None or timing.deadline is None:
            deadline = None
        elif deadline is not None:
            deadline = max(deadline, timing.deadline)
        tenants.add(None if timing is None else timing.tenant)
    merged = Timing(deadline=deadline, critical=critical)
    first = batch[0].timing
    if len(tenants) == 1 and first is not None:
        merged.tenant, merged.weight, merged.priority = first.tenant, first.weight, first.priority
    return merged


def _deliver(
    batch: list[_Pending],
    outputs: _Outputs,
    start: int,
    end: int,
    units_output: str | None,
    answer: Timing | None = None,
) -> bool:
    """Each caller's rows, and its Timing: the batch's compute time with the caller's share
    of it, and what the inner runtime wrote on ``answer``, the merged call's Timing (a
    gateway's node, its hardware and response parameters)."""
    total = sum(p.rows for p in batch)
    for name, array in outputs.items():
        if array.ndim == 0 or array.shape[0] != total:
            _fail(
                batch,
                ModelgateError(
                    ErrorKind.INTERNAL,
                    f"output '{name}' has shape {list(array.shape)}, not {total} rows",
                ),
            )
            return False
    shares = _shares(batch, outputs, end - start, units_output)
    offset = 0
    for pending, share in zip(batch, shares, strict=True):
        if pending.future.done():  # the caller went away; its rows are dropped
            offset += pending.rows
            continue
        stop = offset + pending.rows
        pending.future.set_result({name: array[offset:stop] for name, array in outputs.items()})
        timing = pending.timing
        if timing is not None:
            timing.queue_ns = start - pending.enqueued_ns
            timing.compute_ns = end - start
            timing.batch_size = total
            if answer is not None:
                timing.hardware, timing.node = answer.hardware, answer.node
                timing.parameters = answer.parameters
            # summed: the chunks of a request bigger than a batch each add theirs
            timing.compute_share_ns = (timing.compute_share_ns or 0) + share
        offset = stop
    return True


def _shares(
    batch: list[_Pending], outputs: _Outputs, compute_ns: int, units_output: str | None
) -> list[int]:
    """Each caller's whole nanoseconds of the batch's ``compute_ns``, by its tokens (the
    ``units_output`` the runtime answered) or its rows; the remainder of the division goes
    to the first caller, so the shares add up to ``compute_ns`` exactly."""
    if len(batch) == 1:
        return [compute_ns]
    weights = _weights(batch, outputs, units_output)
    total = sum(weights)
    if total <= 0:  # no rows, no tokens: an equal share each
        weights, total = [1] * len(batch), len(batch)
    shares = [compute_ns * weight // total for weight in weights]
    shares[0] += compute_ns - sum(shares)
    return shares


def _weights(batch: list[_Pending], outputs: _Outputs, units_output: str | None) -> list[int]:
    """Each caller's tokens when the runtime counted them per row, else its rows."""
    rows = [p.rows for p in batch]
    units = outputs.get(units_output) if units_output is not None else None
    if units is None or units.dtype.kind not in "iu" or units.ndim != 1:
        return rows
    per_row: list[int] = units.tolist()  # Python ints: summed cheaper than numpy slices
    counts: list[int] = []
    offset = 0
    for n in rows:
        counts.append(sum(per_row[offset : offset + n]))
        offset += n
    return rows if min(counts) < 0 else counts


def _lane(timing: Timing | None) -> tuple[str | None, float]:
    """The fair queue's lane and weight of a request (no timing: the shared lane)."""
    if timing is None:
        return None, 1.0
    return timing.tenant, timing.weight if timing.weight > 0 else 1.0


def _expired(timing: Timing | None, now: float) -> bool:
    return timing is not None and timing.deadline is not None and now >= timing.deadline


def _given_up(pending: _Pending, now: float) -> bool:
    """True (and the caller told) when no one waits for ``pending`` any more."""
    if pending.future.done():
        return True
    if _expired(pending.timing, now):
        pending.future.set_exception(deadline_exceeded())
        return True
    return False


def _fail(batch: list[_Pending], exc: BaseException) -> None:
    if not isinstance(exc, ModelgateError):
        exc = ModelgateError(ErrorKind.INTERNAL, f"model execution failed: {exc}")
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(exc)
