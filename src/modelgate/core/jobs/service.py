"""The jobs use case: submit, read, list, cancel and retry asynchronous jobs, each scoped to
the caller's tenant (another tenant's job answers NOT_FOUND, like a missing one).

Submission checks what can be checked at once, so a job that cannot run is refused rather
than queued: the model exists and the caller may use it (INFER), the item count (413 over
``max_items``), each item's rows and texts against the model's ``limits`` (413), the
priority, the webhook URL (syntax, and that it resolves to a public address: SSRF), and
the tenant's limit of active jobs (RATE_LIMITED). Inputs are checked against the model's
signature when each item runs; an item that fails that check gets an error result.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from modelgate.core.access.authorization import require_scope
from modelgate.core.access.identity import Principal, Scope
from modelgate.core.governance.consent import SUBJECT_PARAMETER
from modelgate.core.jobs.jobs import (
    Job,
    JobOwner,
    JobPolicy,
    JobQuery,
    JobResult,
    JobState,
    NewJob,
    new_job_id,
)
from modelgate.core.jobs.ports import JobQueue
from modelgate.core.jobs.ssrf import PinnedUrl, resolve_public
from modelgate.core.pipeline.inference import InferenceService
from modelgate.core.serving.request_size import check_size
from modelgate.core.serving.requests import ANONYMOUS, InferenceRequest
from modelgate.errors import ErrorKind, ModelgateError, invalid

__all__ = ["MAX_PRIORITY", "JobService", "JobSpec", "owner_of"]

#: priorities run from 0 (default) to this; higher runs first
MAX_PRIORITY = 9
#: the most jobs or results one page may hold
MAX_PAGE = 1000


@dataclass(frozen=True, slots=True)
class JobSpec:
    """What a caller asks for: ``items`` are OIP request bodies, already decoded once."""

    model: str
    version: str | None
    items: Sequence[dict[str, Any]]
    priority: int = 0
    webhook_url: str | None = None
    idempotency_key: str | None = None
    #: a digest of the request, to tell a reused idempotency key with another body
    request_hash: str = ""
    #: ``items`` decoded, when the adapter decoded them: their rows and texts are held to
    #: the model's ``limits`` at submission (the rest of the signature when they run)
    requests: Sequence[InferenceRequest] = ()


def owner_of(principal: Principal | None) -> JobOwner:
    if principal is None:
        return JobOwner(ANONYMOUS, ANONYMOUS, "anonymous")
    return JobOwner(
        principal.tenant_id, principal.subject, principal.kind, tuple(sorted(principal.scopes))
    )


def _not_found(job_id: str) -> ModelgateError:
    return ModelgateError(
        ErrorKind.NOT_FOUND, f"No job found with id '{job_id}'", details={"resource": "job"}
    )


class JobService:
    def __init__(
        self,
        queue: JobQueue,
        inference: InferenceService,
        policy: JobPolicy | None = None,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        resolve: Callable[..., Awaitable[PinnedUrl]] = resolve_public,
        queued: Callable[[], None] | None = None,
    ) -> None:
        self.queue = queue
        self.inference = inference
        self.policy = policy or JobPolicy()
        self._now = now
        self._resolve = resolve
        #: told when a job was queued (submitted, or retried): this process's worker
        #: (:meth:`~modelgate.core.jobs.worker.JobWorker.wake`) claims it without a poll
        self._queued = queued

    async def submit(self, principal: Principal | None, spec: JobSpec) -> tuple[Job, bool]:
        """The job, and whether it is new (False: the idempotency key's earlier job)."""
        require_scope(principal, Scope.INFER)
        _check_items(len(spec.items), self.policy.max_items)
        if not 0 <= spec.priority <= MAX_PRIORITY:
            raise invalid(f"'priority' must be an integer from 0 to {MAX_PRIORITY}")
        _refuse_subjects(spec.items)
        owner = owner_of(principal)
        await self.inference.catalog.authorize(principal, spec.model, spec.version, Scope.INFER)
        if principal is None or spec.requests:  # the model must exist; its limits
            manifest = await self.inference.registry.manifest(spec.model)
            for i, request in enumerate(spec.requests):
                try:
                    check_size(manifest, request.inputs)
                except ModelgateError as exc:
                    raise ModelgateError(
                        exc.kind, f"requests[{i}]: {exc.message}", details=exc.details
                    ) from None
        if spec.webhook_url is not None:
            await self._resolve(spec.webhook_url, allow_private=self.policy.webhook_allow_private)
        job = NewJob(
            id=new_job_id(),
            owner=owner,
            model=spec.model,
            version=spec.version,
            items=tuple(spec.items),
            priority=spec.priority,
            max_attempts=self.policy.max_attempts,
            created_at=self._now(),
            webhook_url=spec.webhook_url,
            idempotency_key=spec.idempotency_key,
            request_hash=spec.request_hash,
        )
        stored, created = await self.queue.submit(job, self.policy.max_active_per_tenant)
        if not created:  # the key's earlier job: the same request, or a mistake
            _same_request(stored, spec)
        elif self._queued is not None:
            self._queued()
        return stored, created

    async def get(self, principal: Principal | None, job_id: str) -> Job:
        job = await self.queue.get(job_id, _tenant(principal))
        if job is None:
            raise _not_found(job_id)
        return job

    async def list_jobs(
        self,
        principal: Principal | None,
        *,
        state: JobState | None = None,
        model: str | None = None,
        after: str | None = None,
        limit: int = 20,
    ) -> list[Job]:
        if not 1 <= limit <= MAX_PAGE:
            raise invalid(f"'limit' must be from 1 to {MAX_PAGE}")
        tenant = owner_of(principal).tenant_id
        return await self.queue.list_jobs(JobQuery(tenant, state, model, after, limit))

    async def results(
        self, principal: Principal | None, job_id: str, *, after: int = -1, limit: int = 100
    ) -> tuple[Job, list[JobResult]]:
        if not 1 <= limit <= MAX_PAGE:
            raise invalid(f"'limit' must be from 1 to {MAX_PAGE}")
        job = await self.get(principal, job_id)
        return job, await self.queue.results(job.id, after, limit)

    async def cancel(self, principal: Principal | None, job_id: str) -> Job:
        job = await self.queue.cancel(job_id, _tenant(principal), self._now())
        if job is None:
            raise _not_found(job_id)
        if job.state is not JobState.CANCELLED:
            raise ModelgateError(
                ErrorKind.FAILED_PRECONDITION,
                f"the job has already ended ({job.state.value}); only queued or running "
                "jobs can be cancelled",
            )
        return job

    async def retry(self, principal: Principal | None, job_id: str) -> Job:
        """Put a dead, failed or cancelled job back in the queue (attempts start again)."""
        job = await self.queue.requeue(job_id, _tenant(principal), self._now())
        if job is None:
            raise _not_found(job_id)
        if job.state is not JobState.QUEUED:
            raise ModelgateError(
                ErrorKind.FAILED_PRECONDITION,
                f"only dead, failed or cancelled jobs can be retried (this one is "
                f"{job.state.value})",
            )
        if self._queued is not None:
            self._queued()
        return job


def _refuse_subjects(items: Sequence[dict[str, Any]]) -> None:
    """Job items are kept with their inputs until the job's retention ends, and a subject's
    erasure does not reach them: an item naming a data subject is refused (privacy.md)."""
    for index, item in enumerate(items):
        parameters = item.get("parameters") if isinstance(item, dict) else None
        if isinstance(parameters, dict) and SUBJECT_PARAMETER in parameters:
            raise invalid(
                f"items[{index}] names a data subject (parameters.{SUBJECT_PARAMETER}): job "
                "items are stored until the job's retention ends and a subject's erasure "
                "cannot reach them, so jobs take no subject; send that request to the "
                "synchronous endpoint instead"
            )


def _check_items(count: int, limit: int) -> None:
    """A job holds 1 to ``limit`` requests; more is PAYLOAD_TOO_LARGE (413)."""
    if count < 1:
        raise invalid("a job holds at least one request")
    if count > limit:
        raise ModelgateError(
            ErrorKind.PAYLOAD_TOO_LARGE,
            f"a job holds at most {limit} requests, not {count} (jobs_max_items)",
            details={"size_limit": "jobs_max_items", "allowed": limit},
        )


def _tenant(principal: Principal | None) -> str:
    return owner_of(principal).tenant_id


def _same_request(job: Job, spec: JobSpec) -> None:
    if job.request_hash != spec.request_hash:
        raise ModelgateError(
            ErrorKind.FAILED_PRECONDITION,
            "this Idempotency-Key was used with a different request; use a new key",
        )
