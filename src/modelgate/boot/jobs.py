"""Wiring of asynchronous jobs: the use case, the worker and its webhooks, from settings
(called by :mod:`modelgate.boot.components`; ``modelgate serve`` and ``modelgate worker``
both use it). The worker reads and writes job items in :mod:`modelgate.api.job_codec`'s
format, never through the REST adapter (an import-linter contract holds this)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from modelgate.api.job_codec import decode_job_item, encode_job_response
from modelgate.core.access.ports import IdentityStore
from modelgate.core.jobs.jobs import JobPolicy
from modelgate.core.jobs.ports import JobQueue
from modelgate.core.jobs.service import JobService
from modelgate.core.jobs.worker import JobPrincipals, JobWorker
from modelgate.core.pipeline.inference import InferenceService
from modelgate.notify.jobs import JobNotifier
from modelgate.settings import Settings

__all__ = ["Jobs", "build_jobs", "job_policy"]


@dataclass
class Jobs:
    service: JobService
    worker: JobWorker
    notifier: JobNotifier
    running: bool = False
    #: on shutdown, how long the items running get to finish before their jobs go back
    handback_s: float = 10.0

    def start_worker(self) -> None:
        if not self.running:
            self.worker.start()
            self.running = True

    async def hand_back(self) -> None:
        """Stop the worker: the items running finish, its jobs go back to the queue."""
        if self.running:
            await self.worker.hand_back(self.handback_s)
            self.running = False

    async def close(self) -> None:
        """Stop the worker (its jobs go back to the queue), then send the last webhooks."""
        await self.hand_back()
        await self.notifier.close()


def job_policy(settings: Settings) -> JobPolicy:
    return JobPolicy(
        lease_s=settings.jobs_lease_seconds,
        max_attempts=settings.jobs_max_attempts,
        max_active_per_tenant=settings.jobs_max_active_per_tenant,
        max_items=settings.jobs_max_items,
        retry_backoff_s=settings.jobs_retry_backoff_seconds,
        item_concurrency=settings.jobs_item_concurrency,
        webhook_allow_private=settings.jobs_webhook_allow_private,
        retention_s=settings.jobs_retention_days * 86_400.0,
        purge_interval_s=settings.jobs_purge_interval_seconds,
    )


def build_jobs(
    settings: Settings,
    queue: JobQueue,
    inference: InferenceService,
    identity: IdentityStore | None,
    *,
    worker_id: str | None = None,
) -> Jobs:
    policy = job_policy(settings)
    secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
    notifier = JobNotifier(
        secret=secret,
        timeout_s=settings.webhook_timeout_seconds,
        allow_private=settings.jobs_webhook_allow_private,
    )
    principals = JobPrincipals(identity, lambda: datetime.now(UTC))
    max_elements = settings.max_elements
    worker = JobWorker(
        queue,
        inference,
        principals,
        lambda model, version, body: decode_job_item(model, version, body, max_elements),
        encode_job_response,
        policy,
        worker_id=worker_id,
        slots=settings.jobs_worker_slots,
        poll_s=settings.jobs_poll_seconds,
        notify=notifier,
    )
    # a job submitted here wakes this process's worker (a no-op when it does not run)
    service = JobService(queue, inference, policy, queued=worker.wake)
    return Jobs(service, worker, notifier, handback_s=settings.jobs_handback_seconds)
