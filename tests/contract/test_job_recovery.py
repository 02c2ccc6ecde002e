"""A database restart never leaves an acknowledged job waiting out its lease while its
worker is alive (issue 17, finding 7), on memory, SQLite and PostgreSQL.

A job worker (two claim slots, a 30 s lease) runs jobs through a queue that fails the way
a database going down makes it fail, at the moment that used to stall a job:

- a claim that committed and whose answer was lost (the connection reset after COMMIT):
  the job was leased to the worker, which never knew; it waited out the whole lease;
- an item's result written, then the answer broken in a way the store did not classify:
  the run was given up and the job, still leased to its living worker, waited out the
  lease;
- item results whose writes fail while the database is down: retried, not dropped;
- the job's owner read from an identity store that is down: the job went FAILED for good.

Each job must end (succeeded, every item's result written once, one attempt) well within
the lease. The worker's own time is real; the bound is generous for a loaded machine."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from modelgate.core.jobs.jobs import JobOwner, JobPolicy, JobResult, JobState, NewJob
from modelgate.core.jobs.ports import JobQueue
from modelgate.core.jobs.worker import JobWorker
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.memory.jobs import MemoryJobQueue
from modelgate.storage.sql.jobs import SqlJobQueue

from .conftest import WITH_MEMORY, store_factory

LEASE_S = 30.0
#: every job must have ended this long after the database answers again
BOUND_S = 8.0
OWNER = JobOwner("ten_acme", "key_1", "key", ("infer",))
ITEMS = 3


def _down() -> ModelgateError:
    return ModelgateError(ErrorKind.UNAVAILABLE, "the database is unavailable", retry_after=1)


class FailingQueue:
    """A real queue whose chosen calls fail as a database restart makes them fail."""

    def __init__(self, queue: JobQueue):
        self.queue = queue
        #: claims that commit, then lose their answer
        self.lost_claims = 0
        #: item writes that commit, then break with an error the store did not classify
        self.broken_completes = 0
        #: item writes refused (the database is down), before anything is written
        self.refused_completes = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.queue, name)

    async def claim(
        self, worker: str, now: datetime, lease_s: float, *, resume: bool = False
    ) -> Any:
        claimed = await self.queue.claim(worker, now, lease_s, resume=resume)
        if claimed is not None and self.lost_claims:
            self.lost_claims -= 1
            raise _down()
        return claimed

    async def complete_item(self, job_id: str, result: JobResult) -> bool:
        if self.refused_completes:
            self.refused_completes -= 1
            raise _down()
        written = await self.queue.complete_item(job_id, result)
        if self.broken_completes:
            self.broken_completes -= 1
            raise ConnectionAbortedError("the connection broke while the answer was read")
        return written


class Echo:
    """The inference service: answers each request with itself."""

    async def infer(self, request: Any, principal: Any) -> Any:
        return request


class Principals:
    """Owners as the identity store gives them; the first ``down`` lookups find it down."""

    def __init__(self, down: int = 0):
        self.down = down

    async def principal(self, owner: JobOwner) -> None:
        if self.down:
            self.down -= 1
            raise _down()
        return None


@pytest.fixture(params=WITH_MEMORY)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def queues(backend: str, request: pytest.FixtureRequest) -> Callable[[], Awaitable[JobQueue]]:
    return store_factory(backend, request, MemoryJobQueue, SqlJobQueue)


def _job(number: int) -> NewJob:
    return NewJob(
        id=f"job_{number:024d}",
        owner=OWNER,
        model="echo",
        version=None,
        items=tuple({"item": i} for i in range(ITEMS)),
        priority=0,
        max_attempts=3,
        created_at=datetime.now(UTC),
        idempotency_key=None,
        request_hash="h",
    )


async def _run_jobs(queue: FailingQueue, principals: Principals, jobs: int = 4) -> float:
    """Submit ``jobs``, run a worker until every one has ended; the seconds that took.
    Fails when one has not ended within ``BOUND_S``."""
    ids = [(await queue.queue.submit(_job(n), None))[0].id for n in range(jobs)]
    worker = JobWorker(
        queue,  # type: ignore[arg-type]
        Echo(),  # type: ignore[arg-type]
        principals,  # type: ignore[arg-type]
        lambda model, version, body: SimpleNamespace(body=body, parameters={}),  # type: ignore[arg-type,return-value]
        lambda response, parameters: {"echo": response.body},
        JobPolicy(lease_s=LEASE_S, retry_backoff_s=0.0, item_concurrency=1),
        worker_id="recovering",
        slots=2,
        poll_s=0.05,
    )
    started = time.monotonic()
    worker.start()
    try:
        while True:
            found = [await queue.queue.get(i) for i in ids]
            if all(
                j is not None and j.state not in (JobState.QUEUED, JobState.RUNNING) for j in found
            ):
                break
            waited = time.monotonic() - started
            states = [(j.state.value, j.worker) for j in found if j is not None]
            assert waited < BOUND_S, f"not ended {waited:.1f} s on (lease {LEASE_S} s): {states}"
            await asyncio.sleep(0.05)
    finally:
        await worker.close()
    for job_id in ids:
        job = await queue.queue.get(job_id)
        assert job is not None
        assert (job.state, job.attempts, job.completed) == (JobState.SUCCEEDED, 1, ITEMS)
        results = await queue.queue.results(job_id)
        assert [r.index for r in results] == list(range(ITEMS))  # each once
        assert all(r.ok and r.response == {"echo": {"item": r.index}} for r in results)
    return time.monotonic() - started


async def test_a_claim_whose_answer_was_lost_is_resumed_at_once(
    queues: Callable[[], Awaitable[JobQueue]],
) -> None:
    queue = FailingQueue(await queues())
    queue.lost_claims = 3
    await _run_jobs(queue, Principals())


async def test_a_run_given_up_after_a_broken_write_is_resumed_at_once(
    queues: Callable[[], Awaitable[JobQueue]],
) -> None:
    queue = FailingQueue(await queues())
    queue.broken_completes = 2
    await _run_jobs(queue, Principals())


async def test_results_written_while_the_database_is_down_are_retried(
    queues: Callable[[], Awaitable[JobQueue]],
) -> None:
    queue = FailingQueue(await queues())
    queue.refused_completes = 6  # about a second of retries (0.1, 0.2, 0.4 s ...)
    await _run_jobs(queue, Principals())


async def test_an_identity_store_outage_does_not_fail_the_job(
    queues: Callable[[], Awaitable[JobQueue]],
) -> None:
    queue = FailingQueue(await queues())
    await _run_jobs(queue, Principals(down=3))


async def test_a_claim_resumes_only_its_own_job_and_counts_no_attempt(
    queues: Callable[[], Awaitable[JobQueue]],
) -> None:
    queue = await queues()
    first = (await queue.submit(_job(1), None))[0]
    second = (await queue.submit(_job(2), None))[0]
    now = datetime.now(UTC)
    held = await queue.claim("w/0", now, LEASE_S, resume=True)
    assert held is not None and held.job.id == first.id and held.job.attempts == 1
    # another slot does not take it (its lease is alive): it gets the next job
    other = await queue.claim("w/1", now, LEASE_S, resume=True)
    assert other is not None and other.job.id == second.id
    # its own slot takes it back, the same attempt, with the items still to do
    await queue.complete_item(first.id, JobResult(0, True, {"done": 0}, completed_at=now))
    again = await queue.claim("w/0", now, LEASE_S, resume=True)
    assert again is not None and again.job.id == first.id and again.job.attempts == 1
    assert [i for i, _ in again.pending] == [1, 2]
    # without resume, a claim leaves what it holds alone (nothing else is queued)
    assert await queue.claim("w/0", now, LEASE_S) is None
