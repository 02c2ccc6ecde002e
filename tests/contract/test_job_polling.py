"""How an idle worker finds work, on memory, SQLite and PostgreSQL: one cheap read per poll
for all its waiting slots (no claim), a job queued in this process claimed at once whatever
the poll interval, a job queued elsewhere within a poll, a backlog spread over every slot,
and a failing read that still lets the claims find (and report) the failure."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from modelgate.core.jobs.jobs import JobOwner, JobPolicy, JobState, NewJob
from modelgate.core.jobs.ports import JobQueue
from modelgate.core.jobs.worker import JobWorker
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.memory.jobs import MemoryJobQueue
from modelgate.storage.sql.jobs import SqlJobQueue

from .conftest import WITH_MEMORY, store_factory

OWNER = JobOwner("ten_acme", "key_1", "key", ("infer",))
#: long enough that a job waiting for a poll fails the test
NEVER_S = 60.0


class CountingQueue:
    """A real queue that counts the calls made to it, and can run a step inside a claim
    (after the claim's answer is known, before the worker has it)."""

    def __init__(self, queue: JobQueue):
        self.queue = queue
        self.calls: Counter[str] = Counter()
        self.during_claim: Callable[[], Awaitable[None]] | None = None
        self.claimable_fails = False
        self._claimed = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)

    async def claim(
        self, worker: str, now: datetime, lease_s: float, *, resume: bool = False
    ) -> Any:
        self.calls["claim"] += 1
        claimed = await self.queue.claim(worker, now, lease_s, resume=resume)
        step, self.during_claim = self.during_claim, None
        if step is not None:
            await step()
        if claimed is None:
            self.calls["empty claim"] += 1
            self._claimed.set()
        return claimed

    async def empty_claims(self, count: int) -> None:
        """Until ``count`` claims found nothing (each slot's first: the slots then wait)."""
        async with asyncio.timeout(5.0):
            while self.calls["empty claim"] < count:
                self._claimed.clear()
                await self._claimed.wait()

    async def claimable(self, now: datetime) -> bool:
        self.calls["claimable"] += 1
        if self.claimable_fails:
            raise ModelgateError(ErrorKind.UNAVAILABLE, "the database is unavailable")
        return await self.queue.claimable(now)


class Model:
    """The inference service: each item takes ``delay_s``; the most items running at once."""

    def __init__(self, delay_s: float = 0.0):
        self.delay_s = delay_s
        self.running = 0
        self.most = 0

    async def infer(self, request: Any, principal: Any) -> Any:
        self.running += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.running -= 1
        return request


class Principals:
    async def principal(self, owner: JobOwner) -> None:
        return None


@pytest.fixture(params=WITH_MEMORY)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def queues(backend: str, request: pytest.FixtureRequest) -> Callable[[], Awaitable[JobQueue]]:
    return store_factory(backend, request, MemoryJobQueue, SqlJobQueue)


def _worker(
    queue: CountingQueue, *, poll_s: float, slots: int = 2, model: Model | None = None
) -> JobWorker:
    return JobWorker(
        queue,  # type: ignore[arg-type]
        model or Model(),  # type: ignore[arg-type]
        Principals(),  # type: ignore[arg-type]
        lambda model, version, body: SimpleNamespace(body=body, parameters={}, critical=True),  # type: ignore[arg-type,return-value]
        lambda response, parameters: {"echo": response.body},
        JobPolicy(lease_s=30.0, retry_backoff_s=0.0, item_concurrency=1),
        worker_id="polling",
        slots=slots,
        poll_s=poll_s,
    )


async def _submit(queue: JobQueue, number: int) -> str:
    job = NewJob(
        id=f"job_{number:024d}",
        owner=OWNER,
        model="echo",
        version=None,
        items=({"item": 0},),
        priority=0,
        max_attempts=3,
        created_at=datetime.now(UTC),
        idempotency_key=None,
        request_hash="h",
    )
    return (await queue.submit(job, None))[0].id


async def _finished(queue: JobQueue, job_ids: list[str], timeout_s: float) -> float:
    """Seconds until every job succeeded (the queue is polled: another worker's writes)."""
    started = time.monotonic()
    async with asyncio.timeout(timeout_s):
        while True:
            jobs = [await queue.get(job_id) for job_id in job_ids]
            if all(j is not None and j.state is JobState.SUCCEEDED for j in jobs):
                return time.monotonic() - started
            await asyncio.sleep(0.01)  # polling a store: another worker's writes


async def test_an_idle_worker_reads_once_per_poll_for_all_its_slots(
    queues: Callable[[], Awaitable[JobQueue]],
) -> None:
    queue = CountingQueue(await queues())
    worker = _worker(queue, poll_s=0.05, slots=4)
    worker.start()
    try:
        await queue.empty_claims(4)
        queue.calls.clear()
        await asyncio.sleep(0.5)
    finally:
        await worker.close()
    # idle: no claim (a write transaction each), one read per poll for the four slots
    assert queue.calls["claim"] == 0
    assert 4 <= queue.calls["claimable"] <= 11


async def test_a_job_queued_in_this_process_is_claimed_at_once(
    queues: Callable[[], Awaitable[JobQueue]],
) -> None:
    queue = CountingQueue(await queues())
    worker = _worker(queue, poll_s=NEVER_S)
    worker.start()
    try:
        await queue.empty_claims(2)
        job_id = await _submit(queue, 1)
        worker.wake()  # what JobService does after a submission
        assert await _finished(queue, [job_id], timeout_s=5.0) < 2.0
    finally:
        await worker.close()


async def test_a_job_queued_while_a_slot_claims_is_not_missed(
    queues: Callable[[], Awaitable[JobQueue]],
) -> None:
    """The wake comes while the slot's claim, which found nothing, is still answering: no
    slot waits yet, and the slot must not go to sleep for a poll."""
    queue = CountingQueue(await queues())
    worker = _worker(queue, poll_s=NEVER_S, slots=1)
    submitted: list[str] = []
    woken = asyncio.Event()

    async def submit_and_wake() -> None:
        submitted.append(await _submit(queue, 1))
        worker.wake()
        woken.set()

    queue.during_claim = submit_and_wake  # the slot's first claim
    worker.start()
    try:
        async with asyncio.timeout(5.0):
            await woken.wait()
        assert await _finished(queue, submitted, timeout_s=5.0) < 2.0
    finally:
        await worker.close()


async def test_a_job_queued_elsewhere_is_claimed_within_a_poll(
    queues: Callable[[], Awaitable[JobQueue]],
) -> None:
    queue = CountingQueue(await queues())
    worker = _worker(queue, poll_s=0.3)
    worker.start()
    try:
        await queue.empty_claims(2)
        job_id = await _submit(queue, 1)  # another replica's: no wake here
        assert await _finished(queue, [job_id], timeout_s=5.0) < 0.3 + 1.0
    finally:
        await worker.close()


async def test_a_backlog_fills_every_slot_at_once(
    queues: Callable[[], Awaitable[JobQueue]],
) -> None:
    queue = CountingQueue(await queues())
    model = Model(delay_s=0.3)
    worker = _worker(queue, poll_s=NEVER_S, slots=3, model=model)
    worker.start()
    try:
        await queue.empty_claims(3)
        job_ids = [await _submit(queue, n) for n in range(3)]
        worker.wake()  # once: the slot that claims wakes the next
        await _finished(queue, job_ids, timeout_s=5.0)
    finally:
        await worker.close()
    assert model.most == 3  # the three jobs ran side by side


async def test_a_failing_read_lets_a_claim_meet_the_failure(
    queues: Callable[[], Awaitable[JobQueue]],
) -> None:
    queue = CountingQueue(await queues())
    queue.claimable_fails = True
    worker = _worker(queue, poll_s=0.05)
    worker.start()
    try:
        await queue.empty_claims(2)
        job_id = await _submit(queue, 1)  # another replica's: only a claim finds it
        await _finished(queue, [job_id], timeout_s=5.0)
    finally:
        await worker.close()
