"""The ports of jobs, as Protocols: the durable job queue. Adapters implement them.

Contracts are stated on each port; the implementations live outside ``core/``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from modelgate.core.jobs.jobs import ClaimedJob, Job, JobQuery, JobResult, JobState, NewJob

__all__ = [
    "JobQueue",
]


class JobQueue(Protocol):
    """The durable queue of asynchronous jobs (memory, SQLite, PostgreSQL).

    Times are the caller's (``now``), so a test can drive leases with its own clock.
    Contract:

    - ``submit`` enqueues the job and its items in one transaction and answers
      ``(job, True)``; with an ``idempotency_key`` already used by the same tenant it
      enqueues nothing and answers ``(that job, False)``, whatever its state. When the
      tenant already has ``max_active`` queued or running jobs it raises RATE_LIMITED
      (the count and the insert are one atomic step, across processes).
    - ``list_jobs`` answers a page of a tenant's jobs, newest first.
    - ``get`` answers None for an unknown id, and for another tenant's job when
      ``tenant_id`` is given (None: any tenant, for workers and operators).
    - ``claim`` takes one job, highest ``priority`` first, then oldest: a queued job
      whose retry time has come, or a running job whose lease expired (its worker died).
      Each claim counts an attempt; a job whose lease expired after its last allowed
      attempt turns DEAD instead of being claimed. Two workers never hold one lease:
      PostgreSQL claims with ``SELECT ... FOR UPDATE SKIP LOCKED``, SQLite inside its
      write lock. None: nothing to do. With ``resume``, a running job that ``worker``
      itself holds comes first, and its attempt goes on uncounted: a claim whose answer
      was lost, or a run given up when a write failed (a job worker's slot claims under
      an id of its own and runs one job at a time).
    - ``claimable`` answers whether a claim at ``now`` by a worker that holds nothing
      would find work (a queued job whose retry time has come, or a running job whose
      lease expired: claimed, or dead-lettered). A read: it takes and changes nothing,
      and costs less than a claim, so an idle worker asks it before claiming. Its answer
      may be stale by the time a claim runs (another worker was first): True, then a
      claim that finds nothing, is allowed; False while such a job exists is not.
    - ``heartbeat`` moves the lease forward; False when the worker no longer holds it
      (expired and taken, or the job was cancelled): the worker stops.
    - ``complete_item`` writes one item's result once: True when written, False when the
      item already had one (a re-run after a lost lease): the first result stays.
    - ``finish`` ends a running job held by ``worker`` (SUCCEEDED or FAILED); ``retry``
      ends its attempt with ``error``: back to QUEUED, claimable from ``available_at``, or
      DEAD when no attempt is left; ``release`` gives it back at once without counting
      the attempt (a worker shutting down). Each answers None (``release``: False) when
      ``worker`` does not hold the job, and changes nothing.
    - ``cancel`` turns a queued or running job CANCELLED (a running job's worker learns it
      at its next heartbeat) and answers the job; a finished job is answered unchanged;
      None when not found (another tenant's job included).
    - ``requeue`` puts a finished job (DEAD, FAILED, CANCELLED) back in the queue with
      its attempts reset; the items that have a result keep it.
    - ``results`` answers item results with ``index > after``, in index order.
    - ``purge`` deletes up to ``limit`` finished jobs (SUCCEEDED, FAILED, CANCELLED,
      DEAD) that ended before ``before``, with their items and results, and answers how
      many it deleted; queued and running jobs are never touched. A purged job's
      idempotency key is free again.
    """

    async def submit(self, job: NewJob, max_active: int | None) -> tuple[Job, bool]: ...

    async def get(self, job_id: str, tenant_id: str | None = None) -> Job | None: ...

    async def list_jobs(self, query: JobQuery) -> list[Job]: ...

    async def claim(
        self, worker: str, now: datetime, lease_s: float, *, resume: bool = False
    ) -> ClaimedJob | None: ...

    async def claimable(self, now: datetime) -> bool: ...

    async def heartbeat(self, job_id: str, worker: str, now: datetime, lease_s: float) -> bool: ...

    async def complete_item(self, job_id: str, result: JobResult) -> bool: ...

    async def finish(
        self, job_id: str, worker: str, state: JobState, error: str | None, now: datetime
    ) -> Job | None: ...

    async def retry(
        self, job_id: str, worker: str, error: str, now: datetime, available_at: datetime
    ) -> Job | None: ...

    async def release(self, job_id: str, worker: str, now: datetime) -> bool: ...

    async def cancel(self, job_id: str, tenant_id: str | None, now: datetime) -> Job | None: ...

    async def requeue(self, job_id: str, tenant_id: str | None, now: datetime) -> Job | None: ...

    async def results(self, job_id: str, after: int = -1, limit: int = 1000) -> list[JobResult]: ...

    async def purge(self, before: datetime, limit: int = 1000) -> int: ...
