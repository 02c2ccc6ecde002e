"""The JobQueue contract, on memory, SQLite and PostgreSQL: idempotent submission, per-tenant
limits, priorities, exclusive claims, leases that expire, heartbeats, results written once,
retries, the dead letter, cancellation and pagination. Times are the test's own."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest

from modelgate.core.jobs.jobs import JobOwner, JobQuery, JobResult, JobState, NewJob
from modelgate.core.jobs.ports import JobQueue
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.memory.jobs import MemoryJobQueue
from modelgate.storage.sql.jobs import SqlJobQueue

from .conftest import WITH_MEMORY, store_factory

T0 = datetime(2026, 1, 1, tzinfo=UTC)
ACME = JobOwner("ten_acme", "key_1", "key", ("infer",))
GLOBEX = JobOwner("ten_globex", "key_2", "key", ("infer",))
ITEM = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 4], "data": [1, 2, 3, 4]}]}


@pytest.fixture(params=WITH_MEMORY)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def queues(backend: str, request: pytest.FixtureRequest) -> Callable[[], Awaitable[JobQueue]]:
    return store_factory(backend, request, MemoryJobQueue, SqlJobQueue)


def job(
    number: int,
    owner: JobOwner = ACME,
    *,
    items: int = 2,
    priority: int = 0,
    key: str | None = None,
    attempts: int = 3,
) -> NewJob:
    return NewJob(
        id=f"job_{number:024d}",
        owner=owner,
        model="doubler",
        version=None,
        items=tuple(ITEM for _ in range(items)),
        priority=priority,
        max_attempts=attempts,
        created_at=T0 + timedelta(seconds=number),
        idempotency_key=key,
        request_hash="h",
    )


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


async def test_submit_get_and_idempotency_key(queues: Callable[[], Awaitable[JobQueue]]) -> None:
    queue = await queues()
    first, created = await queue.submit(job(1, key="retry-me"), None)
    assert created and first.state is JobState.QUEUED and first.total == 2
    again, created_again = await queue.submit(job(2, key="retry-me"), None)
    assert not created_again and again.id == first.id
    # the key belongs to its tenant: another tenant's same key is another job
    other, created_other = await queue.submit(job(3, GLOBEX, key="retry-me"), None)
    assert created_other and other.id != first.id
    assert await queue.get(first.id, "ten_acme") == first
    assert await queue.get(first.id, "ten_globex") is None  # another tenant's job
    assert await queue.get("job_missing") is None
    assert [j.id for j in await queue.list_jobs(JobQuery("ten_acme"))] == [first.id]


async def test_active_jobs_per_tenant_are_limited(
    queues: Callable[[], Awaitable[JobQueue]],
) -> None:
    queue = await queues()
    await queue.submit(job(1), 2)
    await queue.submit(job(2), 2)
    with pytest.raises(ModelgateError) as refused:
        await queue.submit(job(3), 2)
    assert refused.value.kind is ErrorKind.RATE_LIMITED
    await queue.submit(job(4, GLOBEX), 2)  # another tenant is not counted
    await queue.cancel(job(1).id, "ten_acme", at(10))
    await queue.submit(job(5), 2)  # a finished job frees its place


async def test_claims_take_higher_priority_first_then_oldest(
    queues: Callable[[], Awaitable[JobQueue]],
) -> None:
    queue = await queues()
    for number, priority in ((1, 0), (2, 5), (3, 5), (4, 9)):
        await queue.submit(job(number, priority=priority), None)
    order = []
    for _ in range(4):
        claimed = await queue.claim("w", at(100), 30)
        assert claimed is not None
        order.append(claimed.job.id)
    assert order == [job(4).id, job(2).id, job(3).id, job(1).id]
    assert await queue.claim("w", at(100), 30) is None


async def test_two_workers_claiming_at_once_get_different_jobs(
    queues: Callable[[], Awaitable[JobQueue]],
) -> None:
    queue = await queues()
    await queue.submit(job(1), None)
    claims = await asyncio.gather(*(queue.claim(f"w{i}", at(100), 30) for i in range(4)))
    held = [c for c in claims if c is not None]
    assert len(held) == 1
    assert held[0].job.state is JobState.RUNNING and held[0].job.attempts == 1


async def test_an_expired_lease_lets_another_worker_take_the_job(
    queues: Callable[[], Awaitable[JobQueue]],
) -> None:
    queue = await queues()
    await queue.submit(job(1, items=3), None)
    first = await queue.claim("dies", at(100), 10)
    assert first is not None and len(first.pending) == 3
    assert await queue.complete_item(first.job.id, JobResult(0, True, {"n": 0}, None, at(101)))
    assert await queue.heartbeat(first.job.id, "dies", at(105), 10)  # lease now to 115
    assert await queue.claim("other", at(114), 10) is None
    second = await queue.claim("other", at(116), 10)
    assert second is not None and second.job.worker == "other" and second.job.attempts == 2
    assert [index for index, _ in second.pending] == [1, 2]  # item 0 has its result
    # the dead worker's lease is gone: its heartbeat and its finish change nothing
    assert not await queue.heartbeat(first.job.id, "dies", at(117), 10)
    assert await queue.finish(first.job.id, "dies", JobState.SUCCEEDED, None, at(117)) is None


async def test_claimable_says_whether_a_claim_would_find_work(
    queues: Callable[[], Awaitable[JobQueue]],
) -> None:
    queue = await queues()
    assert not await queue.claimable(at(100))  # nothing queued
    await queue.submit(job(1, attempts=2), None)  # claimable from its creation, at(1)
    assert not await queue.claimable(at(0))
    assert await queue.claimable(at(1))
    assert await queue.claimable(at(1))  # a read: it took nothing
    first = await queue.claim("w", at(10), 30)
    assert first is not None and first.job.attempts == 1
    assert not await queue.claimable(at(39))  # running, its lease alive
    assert await queue.claimable(at(40))  # the lease expired: another worker may take it
    retried = await queue.retry(first.job.id, "w", "boom", at(20), at(50))
    assert retried is not None and retried.state is JobState.QUEUED
    assert not await queue.claimable(at(49))  # backing off
    assert await queue.claimable(at(50))
    last = await queue.claim("w", at(50), 10)  # the last attempt, whose worker dies
    assert last is not None and last.job.attempts == 2
    assert await queue.claimable(at(60))  # a claim would dead-letter it: work to do
    assert await queue.claim("other", at(60), 10) is None
    assert not await queue.claimable(at(1000))  # dead: nothing left to do
    dead = await queue.get(first.job.id)
    assert dead is not None and dead.state is JobState.DEAD


async def test_a_result_is_written_once(queues: Callable[[], Awaitable[JobQueue]]) -> None:
    queue = await queues()
    await queue.submit(job(1), None)
    claimed = await queue.claim("w", at(100), 30)
    assert claimed is not None
    job_id = claimed.job.id
    assert await queue.complete_item(job_id, JobResult(0, True, {"first": 1}, None, at(101)))
    assert not await queue.complete_item(job_id, JobResult(0, True, {"second": 2}, None, at(102)))
    error = {"code": "invalid_argument", "message": "bad"}
    assert await queue.complete_item(job_id, JobResult(1, False, None, error, at(103)))
    results = await queue.results(job_id)
    assert [(r.index, r.ok, r.response, r.error) for r in results] == [
        (0, True, {"first": 1}, None),
        (1, False, None, error),
    ]
    assert [r.index for r in await queue.results(job_id, after=0)] == [1]
    done = await queue.finish(job_id, "w", JobState.SUCCEEDED, None, at(104))
    assert done is not None and done.state is JobState.SUCCEEDED
    assert (done.completed, done.failed, done.finished_at) == (1, 1, at(104))


async def test_failed_attempts_back_off_then_dead_letter(
    queues: Callable[[], Awaitable[JobQueue]],
) -> None:
    queue = await queues()
    await queue.submit(job(1, attempts=2), None)
    claimed = await queue.claim("w", at(100), 30)
    assert claimed is not None
    retried = await queue.retry(claimed.job.id, "w", "boom", at(101), at(111))
    assert retried is not None and retried.state is JobState.QUEUED and retried.error == "boom"
    assert await queue.claim("w", at(110), 30) is None  # backing off
    claimed = await queue.claim("w", at(111), 30)
    assert claimed is not None and claimed.job.attempts == 2
    dead = await queue.retry(claimed.job.id, "w", "boom again", at(112), at(130))
    assert dead is not None and dead.state is JobState.DEAD and dead.error == "boom again"
    assert await queue.claim("w", at(200), 30) is None
    again = await queue.requeue(dead.id, "ten_acme", at(300))
    assert again is not None and again.state is JobState.QUEUED and again.attempts == 0


async def test_a_lease_that_expires_on_the_last_attempt_dead_letters(
    queues: Callable[[], Awaitable[JobQueue]],
) -> None:
    queue = await queues()
    await queue.submit(job(1, attempts=1), None)
    assert await queue.claim("dies", at(100), 10) is not None
    assert await queue.claim("other", at(111), 10) is None
    dead = await queue.get(job(1).id)
    assert dead is not None and dead.state is JobState.DEAD and dead.finished_at == at(111)


async def test_cancel_and_release(queues: Callable[[], Awaitable[JobQueue]]) -> None:
    queue = await queues()
    await queue.submit(job(1), None)
    await queue.submit(job(2), None)
    assert await queue.cancel(job(1).id, "ten_globex", at(100)) is None  # not theirs
    queued = await queue.cancel(job(1).id, "ten_acme", at(100))
    assert queued is not None and queued.state is JobState.CANCELLED
    running = await queue.claim("w", at(101), 30)
    assert running is not None and running.job.id == job(2).id
    cancelled = await queue.cancel(job(2).id, None, at(102))
    assert cancelled is not None and cancelled.state is JobState.CANCELLED
    assert not await queue.heartbeat(job(2).id, "w", at(103), 30)  # the worker stops
    finished = await queue.cancel(job(2).id, None, at(104))  # a finished job: unchanged
    assert finished is not None and finished.finished_at == at(102)
    # release: a worker shutting down gives its job back without spending an attempt
    await queue.submit(job(3), None)
    claimed = await queue.claim("w", at(105), 30)
    assert claimed is not None and claimed.job.attempts == 1
    assert await queue.release(claimed.job.id, "w", at(106))
    again = await queue.claim("w2", at(106), 30)
    assert again is not None and again.job.id == job(3).id and again.job.attempts == 1


async def test_list_filters_and_pages_newest_first(
    queues: Callable[[], Awaitable[JobQueue]],
) -> None:
    queue = await queues()
    for number in range(1, 6):
        await queue.submit(job(number), None)
    await queue.submit(job(6, GLOBEX), None)
    await queue.cancel(job(2).id, None, at(100))
    page = await queue.list_jobs(JobQuery("ten_acme", limit=2))
    assert [j.id for j in page] == [job(5).id, job(4).id]
    page = await queue.list_jobs(JobQuery("ten_acme", after=page[-1].id, limit=10))
    assert [j.id for j in page] == [job(3).id, job(2).id, job(1).id]
    cancelled = await queue.list_jobs(JobQuery("ten_acme", state=JobState.CANCELLED))
    assert [j.id for j in cancelled] == [job(2).id]
    assert await queue.list_jobs(JobQuery("ten_acme", model="other")) == []


async def test_purge_deletes_only_jobs_that_ended_before_the_cutoff(
    queues: Callable[[], Awaitable[JobQueue]],
) -> None:
    queue = await queues()
    await queue.submit(job(1, key="old-key"), None)  # succeeds at 104
    await queue.submit(job(2), None)  # cancelled at 105
    await queue.submit(job(3), None)  # still running
    await queue.submit(job(4), None)  # still queued
    claimed = await queue.claim("w", at(100), 1000)
    assert claimed is not None and claimed.job.id == job(1).id
    await queue.complete_item(job(1).id, JobResult(0, True, {"y": 1}, None, at(101)))
    await queue.finish(job(1).id, "w", JobState.SUCCEEDED, None, at(104))
    await queue.cancel(job(2).id, None, at(105))
    running = await queue.claim("w", at(106), 1000)
    assert running is not None and running.job.id == job(3).id

    assert await queue.purge(at(104)) == 0  # ended at 104: not before it
    assert await queue.purge(at(105)) == 1
    assert await queue.get(job(1).id) is None
    assert await queue.results(job(1).id) == []
    # its idempotency key is free again: the same key makes a new job
    again, created = await queue.submit(job(9, key="old-key"), None)
    assert created and again.id == job(9).id
    assert await queue.purge(at(10_000)) == 1  # the cancelled one; never an active job
    left = {j.id: j.state for j in await queue.list_jobs(JobQuery("ten_acme"))}
    assert left == {
        job(3).id: JobState.RUNNING,
        job(4).id: JobState.QUEUED,
        job(9).id: JobState.QUEUED,
    }


async def test_purge_works_in_batches(queues: Callable[[], Awaitable[JobQueue]]) -> None:
    queue = await queues()
    for number in range(1, 6):
        await queue.submit(job(number), None)
        await queue.cancel(job(number).id, None, at(100 + number))
    assert await queue.purge(at(1000), limit=2) == 2
    assert await queue.get(job(1).id) is None and await queue.get(job(2).id) is None
    assert await queue.purge(at(1000), limit=2) == 2
    assert await queue.purge(at(1000), limit=2) == 1
    assert await queue.purge(at(1000), limit=2) == 0
