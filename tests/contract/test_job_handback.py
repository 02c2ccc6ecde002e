"""A worker told to stop (a spot node reclaimed: SIGTERM with a notice shorter than a job)
hands its job back: no new item starts, the items running finish and their results are
written, the job goes back to the queue with its attempt uncounted, and another worker
runs only the items without a result. No item is lost or run twice to completion; on
memory, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest

from modelgate.core.jobs.jobs import JobOwner, JobPolicy, JobState, NewJob
from modelgate.core.jobs.ports import JobQueue
from modelgate.core.jobs.worker import JobWorker
from modelgate.storage.memory.jobs import MemoryJobQueue
from modelgate.storage.sql.jobs import SqlJobQueue

from .conftest import WITH_MEMORY, store_factory

ITEMS = 12
OWNER = JobOwner("ten_acme", "key_1", "key", ("infer",))


class SlowModel:
    """The inference service: each item takes ``delay_s``; counts runs to completion, and
    whether each request was marked non-critical (a job item)."""

    def __init__(self, delay_s: float):
        self.delay_s = delay_s
        self.completed: Counter[int] = Counter()
        self.critical: set[bool] = set()

    async def infer(self, request: Any, principal: Any) -> Any:
        self.critical.add(request.critical)
        await asyncio.sleep(self.delay_s)
        self.completed[request.body["item"]] += 1
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


def _worker(queue: JobQueue, model: SlowModel, name: str, poll_s: float = 0.05) -> JobWorker:
    return JobWorker(
        queue,
        model,  # type: ignore[arg-type]
        Principals(),  # type: ignore[arg-type]
        lambda model, version, body: SimpleNamespace(body=body, parameters={}, critical=True),  # type: ignore[arg-type,return-value]
        lambda response, parameters: {"echo": response.body},
        JobPolicy(lease_s=30.0, retry_backoff_s=0.0, item_concurrency=2),
        worker_id=name,
        slots=2,
        poll_s=poll_s,
    )


async def _submit(queue: JobQueue) -> str:
    job = NewJob(
        id="job_000000000000000000000001",
        owner=OWNER,
        model="slow",
        version=None,
        items=tuple({"item": i} for i in range(ITEMS)),
        priority=0,
        max_attempts=3,
        created_at=datetime.now(UTC),
        idempotency_key=None,
        request_hash="h",
    )
    return (await queue.submit(job, None))[0].id


async def _until(predicate: Callable[[], Awaitable[bool]], timeout_s: float = 20.0) -> None:
    """Poll the queue (another worker's writes: no event to wait on) until ``predicate``."""
    async with asyncio.timeout(timeout_s):
        while not await predicate():  # noqa: ASYNC110 - polling a store, not an event
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("handback_s", [5.0, 0.01])
async def test_a_reclaimed_worker_hands_its_job_back_and_no_item_runs_twice(
    queues: Callable[[], Awaitable[JobQueue]], handback_s: float
) -> None:
    queue = await queues()
    job_id = await _submit(queue)
    spot_model, other_model = SlowModel(0.1), SlowModel(0.01)
    spot = _worker(queue, spot_model, "spot")
    spot.start()

    async def some_done() -> bool:
        return len(await queue.results(job_id)) >= 3

    await _until(some_done)
    # the notice: 5 s lets the two items running finish; 10 ms cancels them mid-run
    await spot.hand_back(handback_s)
    job = await queue.get(job_id)
    assert job is not None and job.state is JobState.QUEUED  # back at once, not leased
    written = {r.index for r in await queue.results(job_id)}
    assert 3 <= len(written) < ITEMS
    if handback_s > 1:  # every item that ran to completion has its result written
        assert set(spot_model.completed) == written
    assert all(count == 1 for count in spot_model.completed.values())
    other = _worker(queue, other_model, "on-demand")
    other.start()
    try:

        async def ended() -> bool:
            found = await queue.get(job_id)
            return found is not None and found.state is JobState.SUCCEEDED

        await _until(ended)
    finally:
        await other.close()
    results = await queue.results(job_id)
    assert [r.index for r in results] == list(range(ITEMS))  # each once
    assert all(r.ok and r.response == {"echo": {"item": r.index}} for r in results)
    runs = spot_model.completed + other_model.completed
    written_by_spot = written
    assert set(other_model.completed) == set(range(ITEMS)) - written_by_spot
    if handback_s > 1:
        assert sorted(runs.elements()) == list(range(ITEMS))  # none ran twice to completion
    job = await queue.get(job_id)
    assert job is not None and job.attempts == 1  # the hand-back counted no attempt
    assert spot_model.critical == {False}  # job items are non-critical work


async def test_an_idle_worker_hands_back_at_once(
    queues: Callable[[], Awaitable[JobQueue]],
) -> None:
    worker = _worker(await queues(), SlowModel(0.0), "idle", poll_s=60.0)
    worker.start()
    await asyncio.sleep(0.1)  # asleep between claims
    async with asyncio.timeout(2.0):
        await worker.hand_back(30.0)
