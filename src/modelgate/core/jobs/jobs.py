"""Asynchronous jobs: their states, records and policy (the queue is a port, the use case
is :mod:`modelgate.core.jobs.service`, execution is :mod:`modelgate.core.jobs.worker`).

A job is one inference, or a batch of many, on one model (version), run later by a worker
as the tenant that submitted it. States::

    queued ──claim──▶ running ──all items have a result──▶ succeeded
      ▲                 │  ├──a final error (key revoked, model gone)──▶ failed
      │                 │  └──cancel──▶ cancelled        (queued jobs too)
      └─attempt failed──┘  or lease expired (worker died): back to queued, or
                           dead (dead letter) once ``max_attempts`` attempts were made

Execution is at least once: a worker that dies mid-job leaves its lease to expire and
another worker runs the job again. Completion is idempotent: each item's result is written
once, keyed by (job, item); a second completion of the same item is a no-op, and a job
re-run only runs the items that have no result yet.
"""

from __future__ import annotations

import enum
import secrets
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "ACTIVE_STATES",
    "TERMINAL_STATES",
    "ClaimedJob",
    "Job",
    "JobOwner",
    "JobPolicy",
    "JobQuery",
    "JobResult",
    "JobState",
    "NewJob",
    "job_document",
    "new_job_id",
]


class JobState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    #: dead letter: every allowed attempt failed (or the lease of each expired)
    DEAD = "dead"


ACTIVE_STATES = frozenset({JobState.QUEUED, JobState.RUNNING})
TERMINAL_STATES = frozenset(set(JobState) - ACTIVE_STATES)


def new_job_id() -> str:
    """``job_`` + 12 hex digits of milliseconds + 12 random: ids sort by creation time,
    which is what list pagination (``after``) relies on."""
    return f"job_{int(time.time() * 1000):012x}{secrets.token_hex(6)}"


@dataclass(frozen=True, slots=True)
class JobOwner:
    """Who submitted the job, as a worker re-creates the principal it runs as: the tenant,
    the subject (key id, JWT subject, ``bootstrap-admin``), the credential kind and the
    scopes it held. ``kind`` ``"anonymous"``: access control was off."""

    tenant_id: str
    subject: str
    kind: str
    scopes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class NewJob:
    """A job to enqueue. ``items`` are OIP inference request bodies (JSON objects)."""

    id: str
    owner: JobOwner
    model: str
    version: str | None
    items: tuple[dict[str, Any], ...]
    priority: int
    max_attempts: int
    created_at: datetime
    webhook_url: str | None = None
    idempotency_key: str | None = None
    #: a digest of what was asked, so a reused idempotency key with another body is told
    request_hash: str = ""


@dataclass(frozen=True, slots=True)
class Job:
    id: str
    owner: JobOwner
    model: str
    version: str | None
    state: JobState
    priority: int
    total: int
    #: items with a result: ``completed`` succeeded, ``failed`` answered an error
    completed: int
    failed: int
    attempts: int
    max_attempts: int
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    error: str | None = None
    webhook_url: str | None = None
    idempotency_key: str | None = None
    request_hash: str = ""
    #: the worker holding the lease, and until when (running jobs)
    worker: str | None = None
    lease_expires_at: datetime | None = None

    @property
    def tenant_id(self) -> str:
        return self.owner.tenant_id


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job a worker holds the lease of, with the items that still need a result."""

    job: Job
    #: (index, OIP request body) of the items without a result, in index order
    pending: tuple[tuple[int, dict[str, Any]], ...]


@dataclass(frozen=True, slots=True)
class JobResult:
    """One item's outcome: ``response`` (an OIP response body) when ``ok``, else ``error``
    (``{"message", "type", "code"}``)."""

    index: int
    ok: bool
    response: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    completed_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class JobQuery:
    """A page of a tenant's jobs, newest first; ``after``: the last id of the page before."""

    tenant_id: str
    state: JobState | None = None
    model: str | None = None
    after: str | None = None
    limit: int = 20


@dataclass(frozen=True, slots=True)
class JobPolicy:
    """Limits and timings of jobs (from settings)."""

    #: a worker owns a job this long after its last heartbeat; then another may take it
    lease_s: float = 30.0
    #: attempts before a job is dead-lettered
    max_attempts: int = 3
    #: queued and running jobs a tenant may have at once (None: no limit)
    max_active_per_tenant: int | None = 1000
    #: items one job may carry
    max_items: int = 10_000
    #: first delay before a failed attempt is retried; doubles per attempt, capped
    retry_backoff_s: float = 2.0
    max_retry_backoff_s: float = 300.0
    #: items of one job run at once (the batcher merges them)
    item_concurrency: int = 8
    #: deliveries to receivers on private addresses (tests, private networks)
    webhook_allow_private: bool = False
    #: finished jobs are deleted this long after they ended (their requests and results)
    retention_s: float = 30 * 86_400.0
    #: how often a worker purges them
    purge_interval_s: float = 3600.0

    def retry_delay(self, attempts: int) -> float:
        delay: float = self.retry_backoff_s * 2 ** max(0, attempts - 1)
        return min(self.max_retry_backoff_s, delay)


def job_document(job: Job) -> dict[str, Any]:
    """A job as the API and webhooks show it (times in Unix seconds, OpenAI's habit)."""
    return {
        "id": job.id,
        "object": "job",
        "model": job.model,
        "version": job.version,
        "status": job.state.value,
        "priority": job.priority,
        "progress": {"total": job.total, "completed": job.completed, "failed": job.failed},
        "attempts": job.attempts,
        "max_attempts": job.max_attempts,
        "error": job.error,
        "created_at": _unix(job.created_at),
        "started_at": _unix(job.started_at),
        "finished_at": _unix(job.finished_at),
        "webhook_url": job.webhook_url,
        "idempotency_key": job.idempotency_key,
    }


def _unix(value: datetime | None) -> int | None:
    return None if value is None else int(value.timestamp())
