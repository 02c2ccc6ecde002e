"""``JobWorker``: claims jobs from the queue and runs their items through the
:class:`~modelgate.core.pipeline.inference.InferenceService`, as the tenant that submitted them, so
jobs are authorized, admitted, limited, metered and monitored like synchronous requests
(who that tenant is now: :mod:`modelgate.core.jobs.principals`).

While it runs a job, the worker renews its lease every third of ``lease_s`` (a renewal
that failed is tried again within a second or two); a renewal refused (the job was
cancelled, or the lease expired and another worker took the job) stops the run at once.
Each item's result is written when it is known, once; a run of a job claimed again after
a lost lease only runs the items without a result.

Each claim loop ("slot") claims under an id of its own, ``<worker id>/<slot>``, and a
claim takes back first the job its id still holds: a claim whose answer was lost when the
database went down (the job was leased, the worker never knew), or a run given up when a
write failed for good. So a database restart never leaves a job waiting out its lease
while its worker is alive: the slot's next claim, once the database answers, resumes it
(the same attempt, only the items without a result). A lease's expiry is for workers
that died.

On SIGTERM (a node reclaimed at short notice, a rolling update) a worker **hands its jobs
back** (:meth:`JobWorker.hand_back`): it stops claiming and starts no new item, lets the
items running now finish and writes their results, then releases each job (the attempt is
not counted) for another worker, which runs only the items without a result. So a notice
shorter than a job loses no item and runs none twice to completion, as long as the items
in flight finish within ``handback_s``; after that they are cancelled and released too
(an item whose model was already running may then run again elsewhere: at least once).

An idle worker costs one cheap read per poll, whatever its slots: a slot whose claim found
nothing waits, and one loop asks the queue every ``poll_s`` whether anything is claimable
(:meth:`~modelgate.core.jobs.ports.JobQueue.claimable`), waking one waiting slot when it
is (or when the read fails, so the claim meets and reports the failure as before). A slot
that claimed a job wakes the next waiting one, so a backlog fills every slot at once. A
job submitted or retried through this process's :class:`~modelgate.core.jobs.service.JobService`
wakes a waiting slot at once (:meth:`JobWorker.wake`), so it starts without waiting for a
poll; a job queued by another process is claimed within ``poll_s``, as before (the waiting
slots: :mod:`modelgate.core.jobs.idle_slots`).

Items are work nobody waits on: their requests are marked non-critical, and a gateway
sends them to spot nodes first (:mod:`modelgate.core.gateway.capacity`).

How an item's error is handled:

- the request's own fault (invalid input, unknown output, too large, unsupported, a model
  the owner may not use): the item's result is that error, final;
- rate limited or overloaded with a short ``retry_after`` (at most ``_WAIT_LIMIT_S``):
  wait, then try the item again, within the same attempt;
- anything else (the model failed, is unavailable, a longer wait): the attempt fails and
  the job goes back to the queue after a backoff, or to the dead letter after
  ``max_attempts``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import socket
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from modelgate.core.access.identity import Principal
from modelgate.core.jobs.idle_slots import IdleSlots
from modelgate.core.jobs.jobs import ClaimedJob, Job, JobPolicy, JobResult, JobState
from modelgate.core.jobs.ports import JobQueue
from modelgate.core.jobs.principals import JobPrincipals
from modelgate.core.pipeline.inference import InferenceService
from modelgate.core.serving.requests import InferenceRequest, InferenceResponse
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["JobPrincipals", "JobWorker", "default_worker_id", "purge_finished"]

log = logging.getLogger("modelgate.jobs")
T = TypeVar("T")

#: errors that are the request's own: retrying cannot help
_FINAL = frozenset(
    {
        ErrorKind.INVALID_ARGUMENT,
        ErrorKind.NOT_FOUND,
        ErrorKind.PERMISSION_DENIED,
        ErrorKind.PAYLOAD_TOO_LARGE,
        ErrorKind.UNSUPPORTED,
        ErrorKind.FAILED_PRECONDITION,
    }
)
_WAIT = frozenset({ErrorKind.RATE_LIMITED, ErrorKind.OVERLOADED})
_WAIT_LIMIT_S = 30.0
#: longest pause between claims while the database is unavailable: a slot notices it is
#: back (and takes back the job it holds) within this
_OUTAGE_POLL_S = 1.0
#: a failed lease renewal is tried again after this (not a third of the lease later)
_RENEW_RETRY_S = 1.0
#: a slot's holder id is the worker id (cut to this), "/" and the slot (128 in all at most)
_HOLDER_LENGTH = 120
#: finished jobs deleted per purge statement
_PURGE_BATCH = 500

#: decodes an OIP request body into a request for (model, version)
Decode = Callable[[str, str | None, dict[str, Any]], InferenceRequest]
#: encodes a response (and its request's parameters) as an OIP response body
Encode = Callable[[InferenceResponse, dict[str, Any]], dict[str, Any]]


def _unavailable(exc: BaseException) -> bool:
    """Is ``exc`` (or, for a task group's, every error in it) the database's outage?"""
    if isinstance(exc, BaseExceptionGroup):
        return all(_unavailable(e) for e in exc.exceptions)
    return isinstance(exc, ModelgateError) and exc.kind is ErrorKind.UNAVAILABLE


def default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"[:120]


class _AttemptFailedError(Exception):
    pass


async def purge_finished(queue: JobQueue, before: datetime) -> int:
    """Delete every finished job that ended before ``before``, ``_PURGE_BATCH`` per
    statement with the event loop free in between; answers how many."""
    purged = 0
    while True:
        deleted = await queue.purge(before, _PURGE_BATCH)
        purged += deleted
        if deleted < _PURGE_BATCH:
            return purged
        await asyncio.sleep(0)  # a long backlog: let the claim loops in between


class JobWorker:
    def __init__(
        self,
        queue: JobQueue,
        inference: InferenceService,
        principals: JobPrincipals,
        decode: Decode,
        encode: Encode,
        policy: JobPolicy | None = None,
        *,
        worker_id: str | None = None,
        slots: int = 2,
        poll_s: float = 1.0,
        notify: Callable[[Job], None] | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.queue = queue
        self.inference = inference
        self.principals = principals
        self.policy = policy or JobPolicy()
        self.worker_id = worker_id or default_worker_id()
        self._decode = decode
        self._encode = encode
        self._slots = slots
        self._poll_s = poll_s
        self._notify = notify
        self._now = now
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        #: hand_back() was called: claim nothing, start no item, release what is held
        self._handing_back = False
        #: the claim slots that wait, for work or after a failure
        self._slots_idle = IdleSlots()
        self._hand_back: asyncio.Task[None] | None = None

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        """Run ``slots`` claim loops in the background (needs a running event loop)."""
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._claim_loop(n)) for n in range(self._slots)]
        self._loops.append(loop.create_task(self._watch_loop()))
        self._loops.append(loop.create_task(self._purge_loop()))
        log.info("job worker %s started (%d slots)", self.worker_id, self._slots)

    async def close(self) -> None:
        """Stop claiming; jobs being run are given back to the queue at once."""
        self._stopping = True
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._loops = []

    async def hand_back(self, timeout_s: float) -> None:
        """Stop claiming and starting items; the items running finish (for up to
        ``timeout_s``) and their results are written; each job held is then released to the
        queue without counting its attempt. Then :meth:`close`. Called again, it waits for
        the first call."""
        if self._hand_back is None:
            self._hand_back = asyncio.get_running_loop().create_task(
                self._hand_back_jobs(timeout_s)
            )
        await asyncio.shield(self._hand_back)

    async def _hand_back_jobs(self, timeout_s: float) -> None:
        self._handing_back = True
        claims = self._loops[: self._slots]
        for slot, task in enumerate(claims):
            if slot in self._slots_idle.idle:  # asleep between claims: nothing held
                task.cancel()
        if claims:
            _done, running = await asyncio.wait(claims, timeout=timeout_s)
            if running:
                log.warning(
                    "job worker %s: %d jobs' items did not finish in %.1f s; released",
                    self.worker_id, len(running), timeout_s,
                )  # fmt: skip
        await self.close()

    def wake(self) -> None:
        """A job was queued by this process: a waiting slot claims now, not at the next
        poll. Does nothing when no slot waits (a busy slot claims again when its job ends),
        or when the worker does not run."""
        self._slots_idle.announce()

    def holder(self, slot: int) -> str:
        """The id slot ``slot`` claims under (one job at a time per id)."""
        return f"{self.worker_id[:_HOLDER_LENGTH]}/{slot}"

    async def _claim_loop(self, slot: int) -> None:
        holder = self.holder(slot)
        outage = 0  # claims in a row that found the database unavailable
        while not self._stopping and not self._handing_back:
            slots = self._slots_idle
            announced = slots.announced
            try:
                worked = await self.run_once(holder)
                outage = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the outermost layer of a worker: log, back off, go on
                if _unavailable(exc):
                    outage += 1
                    if outage == 1:  # once per outage, without a traceback
                        log.warning("job worker %s: the database is unavailable", self.worker_id)
                    await slots.pause(slot, min(0.1 * 2**outage, _OUTAGE_POLL_S))
                    continue
                # a write that failed otherwise: the job stays held by this slot, whose
                # next claim takes it back (after a pause: the failure may repeat). Not a
                # wait for work: a held job is not what the poll looks for.
                log.exception("job worker %s: claiming or running failed", holder)
                await slots.pause(slot, self._poll_s)
                continue
            if not worked and not self._handing_back and slots.announced == announced:
                await slots.wait(slot)

    async def _watch_loop(self) -> None:
        """Every ``poll_s`` while a slot waits, one cheap read for every waiting slot: is
        anything claimable (queued by another process, a retry whose time came, a lease
        that expired)? Then one slot claims, and wakes the next when it got a job."""
        while not self._stopping and not self._handing_back:
            await asyncio.sleep(self._poll_s)
            if not self._slots_idle.waiting:
                continue
            try:
                found = await self.queue.claimable(self._now())
            except asyncio.CancelledError:
                raise
            except Exception:  # the database is down (or worse): let a claim meet it, as
                # before, and report it the claim loop's way (once per outage, backing off)
                log.debug("job worker %s: looking for work failed", self.worker_id, exc_info=True)
                found = True
            if found:
                self._slots_idle.wake_one()

    async def purge(self) -> int:
        """Delete the finished jobs whose retention has passed (in batches); answers how
        many were deleted."""
        before = self._now() - timedelta(seconds=self.policy.retention_s)
        purged = await purge_finished(self.queue, before)
        if purged:
            log.info("jobs: %d finished jobs past their retention deleted", purged)
        return purged

    async def _purge_loop(self) -> None:
        while not self._stopping:
            try:
                await self.purge()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the outermost layer of this task: try again later
                log.warning("jobs: expired jobs not purged: %r", exc)
            await asyncio.sleep(self.policy.purge_interval_s)

    async def _persist(self, job_id: str, write: Callable[[], Awaitable[T]]) -> T:
        """A queue write while the job is held, retried while the database is unavailable
        (the writes are idempotent: an item's first result stays, an end applies once) for
        up to a lease: an outage shorter than that costs no attempt. After that the error
        goes up, and the slot's next claim takes the job back (see the module docstring);
        the results not written are computed again then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.policy.lease_s
        delay = 0.1
        while True:
            try:
                return await write()
            except ModelgateError as exc:
                if exc.kind is not ErrorKind.UNAVAILABLE or loop.time() + delay > deadline:
                    raise
                log.warning(
                    "job %s: the database is unavailable; retrying in %.1f s", job_id, delay
                )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 2.0)

    # -- one job ---------------------------------------------------------------------------
    async def run_once(self, holder: str | None = None) -> bool:
        """Claim one job as ``holder`` (the worker id by default) and run it to its end (or
        to the loss of its lease); False when there was nothing to claim. One holder runs
        one job at a time."""
        holder = holder or self.worker_id
        claimed = await self.queue.claim(holder, self._now(), self.policy.lease_s, resume=True)
        if claimed is None:
            return False
        job = claimed.job
        if self._handing_back:  # claimed as the notice came: straight back
            await self._persist(job.id, lambda: self.queue.release(job.id, holder, self._now()))
            return True
        self._slots_idle.wake_one()  # there may be more: the next waiting slot looks
        log.info(
            "job %s claimed by %s (attempt %d of %d, %d items left)",
            job.id, holder, job.attempts, job.max_attempts, len(claimed.pending),
        )  # fmt: skip
        run = asyncio.get_running_loop().create_task(self._run(claimed, holder))
        beat = asyncio.get_running_loop().create_task(self._heartbeat(job.id, holder, run))
        try:
            await run
        except asyncio.CancelledError:
            if not run.cancelled() or self._stopping:
                # this worker is shutting down: give the job back without spending an attempt
                run.cancel()
                with contextlib.suppress(Exception):
                    await asyncio.shield(self.queue.release(job.id, holder, self._now()))
                raise
            log.info("job %s: lease lost or job cancelled; %s stops", job.id, holder)
        finally:
            beat.cancel()
        return True

    async def _heartbeat(self, job_id: str, holder: str, run: asyncio.Task[None]) -> None:
        interval = self.policy.lease_s / 3
        delay = interval
        while not run.done():
            await asyncio.sleep(delay)
            try:
                held = await self.queue.heartbeat(job_id, holder, self._now(), self.policy.lease_s)
            except Exception as exc:  # a database hiccup: renew as soon as it answers again
                delay = min(_RENEW_RETRY_S, interval)
                log.warning("job %s: heartbeat failed (%r); again in %.1f s", job_id, exc, delay)
                continue
            delay = interval
            if not held:
                run.cancel()
                return

    async def _run(self, claimed: ClaimedJob, holder: str) -> None:
        job = claimed.job
        try:
            principal = await self.principals.principal(job.owner)
        except ModelgateError as exc:
            if exc.kind is ErrorKind.UNAVAILABLE:
                # the identity store is down: not the job's fault; it goes back as it was
                # and this slot waits for the database (the claim loop's outage pause)
                await self._persist(job.id, lambda: self.queue.release(job.id, holder, self._now()))
                raise
            await self._end(job, holder, JobState.FAILED, exc.message)
            return
        pending = list(claimed.pending)
        error = None
        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(min(self.policy.item_concurrency, len(pending))):
                    group.create_task(self._items(job, principal, pending))
        except* _AttemptFailedError as failed:
            error = str(failed.exceptions[0])
        if self._handing_back and (pending or error is not None):
            # the items not started (and a failed one) are for another worker, this attempt
            # uncounted: each finished item's result is written already
            await self._persist(job.id, lambda: self.queue.release(job.id, holder, self._now()))
            log.info(
                "job %s handed back by %s (%d items not started)", job.id, holder, len(pending)
            )
            return
        if error is not None:
            now = self._now()
            retry_at = now + timedelta(seconds=self.policy.retry_delay(job.attempts))
            ended = await self._persist(
                job.id, lambda: self.queue.retry(job.id, holder, error, now, retry_at)
            )
            if ended is not None:
                log.warning(
                    "job %s attempt %d failed (%s): %s", job.id, job.attempts, error,
                    "dead-lettered" if ended.state is JobState.DEAD else "will be retried",
                )  # fmt: skip
                if ended.state is JobState.DEAD:
                    self._tell(ended)
            return
        await self._end(job, holder, JobState.SUCCEEDED, None)

    async def _end(self, job: Job, holder: str, state: JobState, error: str | None) -> None:
        now = self._now()
        ended = await self._persist(
            job.id, lambda: self.queue.finish(job.id, holder, state, error, now)
        )
        if ended is not None:
            log.info("job %s %s", job.id, state.value)
            self._tell(ended)

    def _tell(self, job: Job) -> None:
        if self._notify is not None and job.webhook_url:
            self._notify(job)

    async def _items(
        self,
        job: Job,
        principal: Principal | None,
        pending: list[tuple[int, dict[str, Any]]],
    ) -> None:
        while pending and not self._handing_back:
            index, body = pending.pop(0)
            result = await self._item(job, principal, index, body)
            if result is None:  # handed back before it ran
                pending.append((index, body))
                return
            await self._persist(job.id, functools.partial(self.queue.complete_item, job.id, result))

    async def _item(
        self, job: Job, principal: Principal | None, index: int, body: dict[str, Any]
    ) -> JobResult | None:
        """The item's result; None when the worker is handing back and the item waits."""
        while True:
            try:
                request = self._decode(job.model, job.version, body)
                request.critical = False  # nobody waits on it: spot capacity first
                response = await self.inference.infer(request, principal)
                encoded = self._encode(response, request.parameters)
                return JobResult(index, True, response=encoded, completed_at=self._now())
            except ModelgateError as exc:
                if exc.kind in _FINAL:
                    error = {"code": exc.kind.value, "message": exc.message}
                    return JobResult(index, False, error=error, completed_at=self._now())
                wait = exc.retry_after
                if exc.kind in _WAIT and wait is not None and wait <= _WAIT_LIMIT_S:
                    if self._handing_back:
                        return None
                    await asyncio.sleep(wait)
                    continue
                raise _AttemptFailedError(
                    f"item {index}: {exc.kind.value}: {exc.message}"
                ) from None
            except Exception as exc:  # a model that raised: the attempt fails, logged here
                log.exception("job %s item %d failed", job.id, index)
                raise _AttemptFailedError(f"item {index}: {type(exc).__name__}") from None
