"""``SqlJobQueue``: the job queue in SQLite (embedded) or PostgreSQL (shared by workers).

Over 400 lines but one concept: each method is one transaction on ``jobs`` and ``job_items``
under the claim and lease rules below, and they are checked best side by side.

How a claim stays exclusive on each backend:

- PostgreSQL: the candidate is read with ``SELECT ... FOR UPDATE SKIP LOCKED``, so two
  workers claiming at once lock different rows (the second skips the first's row instead of
  waiting for it), and the row's conditions are checked again once it is locked.
- SQLite: every write transaction holds the database's single write lock from its first
  statement (``BEGIN IMMEDIATE``, see engine.py), so a claim's read and update are one step
  for every process on the file.

Submission counts the tenant's active jobs and inserts in one transaction, serialized per
tenant (a PostgreSQL advisory lock on the tenant; SQLite's write lock), so the limit holds
across processes and an idempotency key is never used twice.

A database that cannot be reached (down, restarting, cut off, too slow) is UNAVAILABLE
from every method: submissions answer 503, and the worker waits and tries again.

With a cipher (the payload keys, ``MODELGATE_PAYLOAD_KEYS``) each item's request, response
and error are stored sealed (:mod:`modelgate.storage.sql.job_sealing`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Select,
    Update,
    and_,
    bindparam,
    case,
    delete,
    false,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from modelgate.core.governance.ports import PayloadCipher
from modelgate.core.jobs.jobs import (
    ClaimedJob,
    Job,
    JobOwner,
    JobQuery,
    JobResult,
    JobState,
    NewJob,
)
from modelgate.storage.memory.jobs import active_limit_error
from modelgate.storage.sql.engine import advisory_xact_lock, reading, writing
from modelgate.storage.sql.job_sealing import JobItemSealer
from modelgate.storage.sql.schema import ID_LENGTH, UtcDateTime, job_items, jobs
from modelgate.storage.sql.values import checked_text, checked_time, storable

__all__ = ["SqlJobQueue"]

_J = jobs.c
_I = job_items.c
_ACTIVE = (JobState.QUEUED.value, JobState.RUNNING.value)
_REQUEUABLE = (JobState.DEAD.value, JobState.FAILED.value, JobState.CANCELLED.value)
_ENDED = (JobState.SUCCEEDED.value, *_REQUEUABLE)
_CHUNK = 500
_ERROR_LENGTH = 2000

# The statements a claim runs, and the idle worker's look for work, are built once with
# bind parameters: executing one then costs a lookup in SQLAlchemy's compiled cache, not
# building and hashing a statement (a worker looks every second, idle or not).
_NOW = bindparam("now", type_=UtcDateTime())
_HOLDER = bindparam("holder", type_=_J.worker.type)
_LEASE_UNTIL = bindparam("lease_until", type_=UtcDateTime())
_JOB = bindparam("job_id", type_=_J.id.type)
_EXPIRED = and_(_J.state == JobState.RUNNING.value, _J.lease_expires_at <= _NOW)
_DUE = and_(_J.state == JobState.QUEUED.value, _J.available_at <= _NOW)
#: is there a job a claim would take, or dead-letter, at ``now``? (one row at most)
_CLAIMABLE = select(_J.id).where(or_(_DUE, _EXPIRED)).limit(1)
_JOB_ROW = select(jobs).where(_J.id == _JOB)
_PENDING_ITEMS = (
    select(_I.item, _I.request).where(_I.job_id == _JOB, _I.ok.is_(None)).order_by(_I.item)
)


class _ClaimStatements:
    """A claim's statements, for claims with and without ``resume``."""

    def __init__(self, resume: bool) -> None:
        # resume: a job this worker holds and does not run (its claim's answer was lost,
        # or it gave the run up when a write failed): first, and the same attempt
        mine: ColumnElement[bool] = (
            and_(_J.state == JobState.RUNNING.value, _J.worker == _HOLDER) if resume else false()
        )
        #: dead letter: jobs whose worker died on their last allowed attempt
        self.dead_letter: Update = (
            update(jobs)
            .where(_EXPIRED, _J.attempts >= _J.max_attempts, ~mine)
            .values(
                state=JobState.DEAD.value,
                finished_at=_NOW,
                worker=None,
                lease_expires_at=None,
                error=func.coalesce(_J.error, "the worker's lease expired on every attempt"),
            )
        )
        self.candidate: Select[Any] = (
            select(_J.id)
            .where(or_(_DUE, _EXPIRED, mine))
            .order_by(case((mine, 0), else_=1), _J.priority.desc(), _J.id.asc())
            .limit(1)
        )
        self.locked_candidate = self.candidate.with_for_update(skip_locked=True)
        self.take: Update = (
            update(jobs)
            .where(_J.id == _JOB)
            .values(
                state=JobState.RUNNING.value,
                # taken back by its own worker: the same attempt goes on
                attempts=case((mine, _J.attempts), else_=_J.attempts + 1),
                worker=_HOLDER,
                lease_expires_at=_LEASE_UNTIL,
                started_at=func.coalesce(_J.started_at, _NOW),
            )
        )


_CLAIM = {resume: _ClaimStatements(resume) for resume in (False, True)}


def _tenant_lock_key(tenant_id: str) -> int:
    digest = hashlib.sha256(b"modelgate-jobs:" + tenant_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class SqlJobQueue:
    """:class:`~modelgate.core.jobs.ports.JobQueue` on ``jobs`` and ``job_items``."""

    def __init__(self, engine: AsyncEngine, cipher: PayloadCipher | None = None) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"
        self._sealer = JobItemSealer(cipher)

    async def submit(self, job: NewJob, max_active: int | None) -> tuple[Job, bool]:
        owner = job.owner
        row = {
            "id": checked_text(job.id, "job id", 64),
            "tenant_id": checked_text(owner.tenant_id, "tenant id", ID_LENGTH),
            "owner_subject": checked_text(owner.subject, "subject", 256),
            "owner_kind": checked_text(owner.kind, "credential kind", 16),
            "owner_scopes": list(owner.scopes),
            "model": checked_text(job.model, "model", 256),
            "version": checked_text(job.version, "version", ID_LENGTH) if job.version else None,
            "state": JobState.QUEUED.value,
            "priority": job.priority,
            "total": len(job.items),
            "completed": 0,
            "failed": 0,
            "attempts": 0,
            "max_attempts": job.max_attempts,
            "created_at": checked_time(job.created_at, "created_at"),
            "available_at": job.created_at,
            "webhook_url": (
                checked_text(job.webhook_url, "webhook_url", 2048) if job.webhook_url else None
            ),
            "idempotency_key": (
                checked_text(job.idempotency_key, "Idempotency-Key", 255)
                if job.idempotency_key
                else None
            ),
            "request_hash": job.request_hash,
        }
        async with writing(self._engine) as connection:
            await advisory_xact_lock(connection, _tenant_lock_key(owner.tenant_id))
            if job.idempotency_key is not None:
                found = await connection.execute(
                    select(jobs).where(
                        _J.tenant_id == owner.tenant_id, _J.idempotency_key == job.idempotency_key
                    )
                )
                existing = found.first()
                if existing is not None:
                    return _job(dict(existing._mapping)), False
            if max_active is not None:
                active = await connection.scalar(
                    select(func.count())
                    .select_from(jobs)
                    .where(_J.tenant_id == owner.tenant_id, _J.state.in_(_ACTIVE))
                )
                if (active or 0) >= max_active:
                    raise active_limit_error(max_active)
            await connection.execute(jobs.insert(), row)
            items = [
                {"job_id": job.id, "item": i, "request": self._sealer.seal(r, job.id, i, "request")}
                for i, r in enumerate(job.items)
            ]
            for start in range(0, len(items), _CHUNK):
                await connection.execute(job_items.insert(), items[start : start + _CHUNK])
            return await self._read(connection, job.id), True

    async def get(self, job_id: str, tenant_id: str | None = None) -> Job | None:
        if not storable(job_id, 64):
            return None
        async with reading(self._engine) as connection:
            found = (await connection.execute(select(jobs).where(_J.id == job_id))).first()
        if found is None:
            return None
        job = _job(dict(found._mapping))
        if tenant_id is not None and job.tenant_id != tenant_id:
            return None
        return job

    async def list_jobs(self, query: JobQuery) -> list[Job]:
        if not storable(query.tenant_id, ID_LENGTH):
            return []
        statement = select(jobs).where(_J.tenant_id == query.tenant_id)
        if query.state is not None:
            statement = statement.where(_J.state == query.state.value)
        if query.model is not None:
            if not storable(query.model, 256):
                return []
            statement = statement.where(_J.model == query.model)
        if query.after is not None:
            if not storable(query.after, 64):
                return []
            statement = statement.where(_J.id < query.after)
        statement = statement.order_by(_J.id.desc()).limit(query.limit)
        async with reading(self._engine) as connection:
            return [_job(dict(row._mapping)) for row in await connection.execute(statement)]

    async def claimable(self, now: datetime) -> bool:
        async with reading(self._engine) as connection:
            return await connection.scalar(_CLAIMABLE, {"now": now}) is not None

    async def claim(
        self, worker: str, now: datetime, lease_s: float, *, resume: bool = False
    ) -> ClaimedJob | None:
        worker = checked_text(worker, "worker id", ID_LENGTH)
        statements = _CLAIM[resume]
        values = {
            "now": now,
            "holder": worker,
            "lease_until": now + timedelta(seconds=lease_s),
        }
        async with writing(self._engine) as connection:
            await connection.execute(statements.dead_letter, values)
            candidate = statements.locked_candidate if self._postgres else statements.candidate
            job_id: str | None = await connection.scalar(candidate, values)
            if job_id is None:
                return None
            await connection.execute(statements.take, {**values, "job_id": job_id})
            job = await self._read(connection, job_id)
            pending = await connection.execute(_PENDING_ITEMS, {"job_id": job_id})
            requests = [(row[0], row[1]) for row in pending]
        opened = ((i, self._sealer.open(r, job_id, i, "request")) for i, r in requests)
        return ClaimedJob(job, tuple(opened))

    async def heartbeat(self, job_id: str, worker: str, now: datetime, lease_s: float) -> bool:
        async with writing(self._engine) as connection:
            result = await connection.execute(
                update(jobs)
                .where(*_held(job_id, worker))
                .values(lease_expires_at=now + timedelta(seconds=lease_s))
            )
            return bool(result.rowcount)

    async def complete_item(self, job_id: str, result: JobResult) -> bool:
        values = {
            "ok": result.ok,
            "response": self._sealer.seal(result.response, job_id, result.index, "response"),
            "error": self._sealer.seal(result.error, job_id, result.index, "error"),
            "completed_at": result.completed_at,
        }
        async with writing(self._engine) as connection:
            written = await connection.execute(
                update(job_items)
                .where(_I.job_id == job_id, _I.item == result.index, _I.ok.is_(None))
                .values(**values)
            )
            if not written.rowcount:
                return False  # already has a result: the first one stays
            counter = _J.completed if result.ok else _J.failed
            await connection.execute(
                update(jobs).where(_J.id == job_id).values({counter: counter + 1})
            )
            return True

    async def finish(
        self, job_id: str, worker: str, state: JobState, error: str | None, now: datetime
    ) -> Job | None:
        async with writing(self._engine) as connection:
            result = await connection.execute(
                update(jobs)
                .where(*_held(job_id, worker))
                .values(
                    state=state.value,
                    error=_error(error),
                    finished_at=now,
                    worker=None,
                    lease_expires_at=None,
                )
            )
            return await self._read(connection, job_id) if result.rowcount else None

    async def retry(
        self, job_id: str, worker: str, error: str, now: datetime, available_at: datetime
    ) -> Job | None:
        async with writing(self._engine) as connection:
            found = await connection.execute(
                select(_J.attempts, _J.max_attempts).where(*_held(job_id, worker))
            )
            row = found.first()
            if row is None:
                return None
            values: dict[str, Any] = {"error": _error(error), "worker": None}
            values["lease_expires_at"] = None
            if row[0] >= row[1]:
                values.update(state=JobState.DEAD.value, finished_at=now)
            else:
                values.update(state=JobState.QUEUED.value, available_at=available_at)
            await connection.execute(update(jobs).where(_J.id == job_id).values(**values))
            return await self._read(connection, job_id)

    async def release(self, job_id: str, worker: str, now: datetime) -> bool:
        async with writing(self._engine) as connection:
            result = await connection.execute(
                update(jobs)
                .where(*_held(job_id, worker))
                .values(
                    state=JobState.QUEUED.value,
                    attempts=case((_J.attempts > 0, _J.attempts - 1), else_=0),
                    worker=None,
                    lease_expires_at=None,
                    available_at=now,
                )
            )
            return bool(result.rowcount)

    async def cancel(self, job_id: str, tenant_id: str | None, now: datetime) -> Job | None:
        return await self._move(
            job_id,
            tenant_id,
            _ACTIVE,
            {
                "state": JobState.CANCELLED.value,
                "finished_at": now,
                "worker": None,
                "lease_expires_at": None,
            },
        )

    async def requeue(self, job_id: str, tenant_id: str | None, now: datetime) -> Job | None:
        return await self._move(
            job_id,
            tenant_id,
            _REQUEUABLE,
            {
                "state": JobState.QUEUED.value,
                "attempts": 0,
                "error": None,
                "finished_at": None,
                "available_at": now,
            },
        )

    async def results(self, job_id: str, after: int = -1, limit: int = 1000) -> list[JobResult]:
        if not storable(job_id, 64):
            return []
        statement = (
            select(_I.item, _I.ok, _I.response, _I.error, _I.completed_at)
            .where(_I.job_id == job_id, _I.ok.is_not(None), _I.item > after)
            .order_by(_I.item)
            .limit(limit)
        )
        async with reading(self._engine) as connection:
            rows = list(await connection.execute(statement))
        return [
            JobResult(
                row.item,
                bool(row.ok),
                self._sealer.open(row.response, job_id, row.item, "response"),
                self._sealer.open(row.error, job_id, row.item, "error"),
                row.completed_at,
            )
            for row in rows
        ]

    async def purge(self, before: datetime, limit: int = 1000) -> int:
        cutoff = checked_time(before, "before")
        async with writing(self._engine) as connection:
            found = await connection.execute(
                select(_J.id)
                .where(_J.finished_at < cutoff, _J.state.in_(_ENDED))
                .order_by(_J.finished_at)
                .limit(limit)
                # PostgreSQL: locked until commit, so a requeue waits and then finds none;
                # a second purger skips them (SQLite: the write lock already excludes)
                .with_for_update(skip_locked=True)
            )
            ids = [row[0] for row in found]
            for start in range(0, len(ids), _CHUNK):
                chunk = ids[start : start + _CHUNK]
                await connection.execute(delete(job_items).where(_I.job_id.in_(chunk)))
                await connection.execute(delete(jobs).where(_J.id.in_(chunk)))
        return len(ids)

    async def _move(
        self, job_id: str, tenant_id: str | None, states: tuple[str, ...], values: dict[str, Any]
    ) -> Job | None:
        if not storable(job_id, 64):
            return None
        async with writing(self._engine) as connection:
            where = [_J.id == job_id]
            if tenant_id is not None:
                if not storable(tenant_id, ID_LENGTH):
                    return None
                where.append(_J.tenant_id == tenant_id)
            found = (await connection.execute(select(_J.state).where(*where))).first()
            if found is None:
                return None
            if found[0] in states:
                await connection.execute(update(jobs).where(*where).values(**values))
            return await self._read(connection, job_id)

    async def _read(self, connection: AsyncConnection, job_id: str) -> Job:
        found = await connection.execute(_JOB_ROW, {"job_id": job_id})
        return _job(dict(found.one()._mapping))


def _held(job_id: str, worker: str) -> list[Any]:
    return [_J.id == job_id, _J.state == JobState.RUNNING.value, _J.worker == worker]


def _error(error: str | None) -> str | None:
    if error is None:
        return None
    error = error.replace("\x00", "")
    return error if len(error) <= _ERROR_LENGTH else error[: _ERROR_LENGTH - 1] + "…"


def _job(row: Mapping[str, Any]) -> Job:
    return Job(
        id=row["id"],
        owner=JobOwner(
            row["tenant_id"],
            row["owner_subject"],
            row["owner_kind"],
            tuple(row["owner_scopes"] or ()),
        ),
        model=row["model"],
        version=row["version"],
        state=JobState(row["state"]),
        priority=row["priority"],
        total=row["total"],
        completed=row["completed"],
        failed=row["failed"],
        attempts=row["attempts"],
        max_attempts=row["max_attempts"],
        created_at=row["created_at"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        error=row["error"],
        webhook_url=row["webhook_url"],
        idempotency_key=row["idempotency_key"],
        request_hash=row["request_hash"],
        worker=row["worker"],
        lease_expires_at=row["lease_expires_at"],
    )
