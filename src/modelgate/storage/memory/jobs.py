"""``MemoryJobQueue``: the job queue in one process's memory (tests, ``MODELGATE_AUTH=off``
laptops); nothing survives a restart. Every method runs without an ``await`` between its
read and its write, so each is atomic on the event loop."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta
from typing import Any

from modelgate.core.jobs.jobs import (
    ACTIVE_STATES,
    TERMINAL_STATES,
    ClaimedJob,
    Job,
    JobQuery,
    JobResult,
    JobState,
    NewJob,
)
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["MemoryJobQueue", "active_limit_error"]


def active_limit_error(limit: int) -> ModelgateError:
    return ModelgateError(
        ErrorKind.RATE_LIMITED,
        f"the tenant already has {limit} queued or running jobs (the most it may have); "
        "retry once some have finished",
        retry_after=5.0,
    )


@dataclasses.dataclass
class _Entry:
    job: Job
    items: list[dict[str, Any]]
    available_at: datetime
    results: dict[int, JobResult] = dataclasses.field(default_factory=dict)


class MemoryJobQueue:
    """:class:`~modelgate.core.jobs.ports.JobQueue` in memory."""

    def __init__(self) -> None:
        self._jobs: dict[str, _Entry] = {}
        self._keys: dict[tuple[str, str], str] = {}

    async def submit(self, job: NewJob, max_active: int | None) -> tuple[Job, bool]:
        tenant = job.owner.tenant_id
        if job.idempotency_key is not None:
            known = self._keys.get((tenant, job.idempotency_key))
            if known is not None:
                return self._jobs[known].job, False
        if max_active is not None:
            active = sum(
                1
                for e in self._jobs.values()
                if e.job.tenant_id == tenant and e.job.state in ACTIVE_STATES
            )
            if active >= max_active:
                raise active_limit_error(max_active)
        record = Job(
            id=job.id,
            owner=job.owner,
            model=job.model,
            version=job.version,
            state=JobState.QUEUED,
            priority=job.priority,
            total=len(job.items),
            completed=0,
            failed=0,
            attempts=0,
            max_attempts=job.max_attempts,
            created_at=job.created_at,
            webhook_url=job.webhook_url,
            idempotency_key=job.idempotency_key,
            request_hash=job.request_hash,
        )
        self._jobs[job.id] = _Entry(record, list(job.items), job.created_at)
        if job.idempotency_key is not None:
            self._keys[(tenant, job.idempotency_key)] = job.id
        return record, True

    async def get(self, job_id: str, tenant_id: str | None = None) -> Job | None:
        entry = self._entry(job_id, tenant_id)
        return entry.job if entry is not None else None

    async def list_jobs(self, query: JobQuery) -> list[Job]:
        jobs = [
            e.job
            for e in self._jobs.values()
            if e.job.tenant_id == query.tenant_id
            and (query.state is None or e.job.state is query.state)
            and (query.model is None or e.job.model == query.model)
            and (query.after is None or e.job.id < query.after)
        ]
        jobs.sort(key=lambda j: j.id, reverse=True)
        return jobs[: query.limit]

    async def claimable(self, now: datetime) -> bool:
        return any(
            (e.job.state is JobState.QUEUED and e.available_at <= now)
            or (e.job.state is JobState.RUNNING and _expired(e.job, now))
            for e in self._jobs.values()
        )

    async def claim(
        self, worker: str, now: datetime, lease_s: float, *, resume: bool = False
    ) -> ClaimedJob | None:
        candidates: list[_Entry] = []
        for entry in self._jobs.values():
            job = entry.job
            if resume and job.state is JobState.RUNNING and job.worker == worker:
                # held by this worker, which does not run it: it gave the run up when a
                # write failed; the same attempt goes on
                candidates = [entry]
                break
            if job.state is JobState.QUEUED and entry.available_at <= now:
                candidates.append(entry)
            elif job.state is JobState.RUNNING and _expired(job, now):
                if job.attempts >= job.max_attempts:
                    entry.job = _dead(job, now)
                else:
                    candidates.append(entry)
        if not candidates:
            return None
        entry = min(candidates, key=lambda e: (-e.job.priority, e.job.id))
        mine = resume and entry.job.state is JobState.RUNNING and entry.job.worker == worker
        entry.job = dataclasses.replace(
            entry.job,
            state=JobState.RUNNING,
            attempts=entry.job.attempts + (0 if mine else 1),
            worker=worker,
            lease_expires_at=now + timedelta(seconds=lease_s),
            started_at=entry.job.started_at or now,
        )
        pending = tuple((i, item) for i, item in enumerate(entry.items) if i not in entry.results)
        return ClaimedJob(entry.job, pending)

    async def heartbeat(self, job_id: str, worker: str, now: datetime, lease_s: float) -> bool:
        entry = self._held(job_id, worker)
        if entry is None:
            return False
        entry.job = dataclasses.replace(
            entry.job, lease_expires_at=now + timedelta(seconds=lease_s)
        )
        return True

    async def complete_item(self, job_id: str, result: JobResult) -> bool:
        entry = self._jobs.get(job_id)
        if entry is None or not 0 <= result.index < len(entry.items):
            return False
        if result.index in entry.results:
            return False
        entry.results[result.index] = result
        job = entry.job
        entry.job = dataclasses.replace(
            job,
            completed=job.completed + (1 if result.ok else 0),
            failed=job.failed + (0 if result.ok else 1),
        )
        return True

    async def finish(
        self, job_id: str, worker: str, state: JobState, error: str | None, now: datetime
    ) -> Job | None:
        entry = self._held(job_id, worker)
        if entry is None:
            return None
        entry.job = dataclasses.replace(
            entry.job, state=state, error=error, finished_at=now, worker=None, lease_expires_at=None
        )
        return entry.job

    async def retry(
        self, job_id: str, worker: str, error: str, now: datetime, available_at: datetime
    ) -> Job | None:
        entry = self._held(job_id, worker)
        if entry is None:
            return None
        job = entry.job
        if job.attempts >= job.max_attempts:
            entry.job = dataclasses.replace(_dead(job, now), error=error)
        else:
            entry.job = dataclasses.replace(
                job, state=JobState.QUEUED, error=error, worker=None, lease_expires_at=None
            )
            entry.available_at = available_at
        return entry.job

    async def release(self, job_id: str, worker: str, now: datetime) -> bool:
        entry = self._held(job_id, worker)
        if entry is None:
            return False
        job = entry.job
        entry.job = dataclasses.replace(
            job,
            state=JobState.QUEUED,
            attempts=max(0, job.attempts - 1),
            worker=None,
            lease_expires_at=None,
        )
        entry.available_at = now
        return True

    async def cancel(self, job_id: str, tenant_id: str | None, now: datetime) -> Job | None:
        entry = self._entry(job_id, tenant_id)
        if entry is None:
            return None
        if entry.job.state in ACTIVE_STATES:
            entry.job = dataclasses.replace(
                entry.job,
                state=JobState.CANCELLED,
                finished_at=now,
                worker=None,
                lease_expires_at=None,
            )
        return entry.job

    async def requeue(self, job_id: str, tenant_id: str | None, now: datetime) -> Job | None:
        entry = self._entry(job_id, tenant_id)
        if entry is None:
            return None
        if entry.job.state in TERMINAL_STATES and entry.job.state is not JobState.SUCCEEDED:
            entry.job = dataclasses.replace(
                entry.job, state=JobState.QUEUED, attempts=0, error=None, finished_at=None
            )
            entry.available_at = now
        return entry.job

    async def results(self, job_id: str, after: int = -1, limit: int = 1000) -> list[JobResult]:
        entry = self._jobs.get(job_id)
        if entry is None:
            return []
        indexes = sorted(i for i in entry.results if i > after)[:limit]
        return [entry.results[i] for i in indexes]

    async def purge(self, before: datetime, limit: int = 1000) -> int:
        ended = [
            job_id
            for job_id, e in self._jobs.items()
            if e.job.state in TERMINAL_STATES
            and e.job.finished_at is not None
            and e.job.finished_at < before
        ][:limit]
        for job_id in ended:
            job = self._jobs.pop(job_id).job
            if job.idempotency_key is not None:
                self._keys.pop((job.tenant_id, job.idempotency_key), None)
        return len(ended)

    def _entry(self, job_id: str, tenant_id: str | None) -> _Entry | None:
        entry = self._jobs.get(job_id)
        if entry is None or (tenant_id is not None and entry.job.tenant_id != tenant_id):
            return None
        return entry

    def _held(self, job_id: str, worker: str) -> _Entry | None:
        entry = self._jobs.get(job_id)
        if entry is None or entry.job.state is not JobState.RUNNING or entry.job.worker != worker:
            return None
        return entry


def _expired(job: Job, now: datetime) -> bool:
    return job.lease_expires_at is not None and job.lease_expires_at <= now


def _dead(job: Job, now: datetime) -> Job:
    return dataclasses.replace(
        job,
        state=JobState.DEAD,
        finished_at=now,
        worker=None,
        lease_expires_at=None,
        error=job.error or f"the worker's lease expired on each of {job.attempts} attempts",
    )
