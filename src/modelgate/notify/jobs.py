"""``JobNotifier``: a job's webhook, POSTed when a worker ends the job (``job.succeeded``,
``job.failed``, ``job.dead``), signed and retried by :class:`WebhookSender`, to the URL the
job was submitted with. The URL is resolved and checked again at each delivery attempt
(SSRF; a name that now resolves to a private address is refused: DNS rebinding) and the
connection goes to the address that was checked."""

from __future__ import annotations

import functools

from modelgate.core.jobs.jobs import Job, job_document
from modelgate.core.jobs.ssrf import resolve_public
from modelgate.notify.webhook import WebhookSender

__all__ = ["JobNotifier"]


class JobNotifier:
    def __init__(
        self,
        *,
        secret: str | None,
        timeout_s: float,
        allow_private: bool,
        attempts: int = 4,
        backoff_s: float = 0.5,
    ) -> None:
        self.sender = WebhookSender(
            "",
            secret=secret,
            timeout_s=timeout_s,
            attempts=attempts,
            backoff_s=backoff_s,
            pin=functools.partial(resolve_public, allow_private=allow_private, timeout_s=timeout_s),
        )

    def __call__(self, job: Job) -> None:
        if not job.webhook_url:
            return
        event = f"job.{job.state.value}"
        self.sender.send(event, {"type": event, "job": job_document(job)}, url=job.webhook_url)

    async def close(self, timeout_s: float = 5.0) -> None:
        await self.sender.close(timeout_s)
