"""``WebhookSender``: POST signed JSON events to one URL, off the request path, with retries.

Each delivery is a JSON body with headers::

    X-Modelgate-Event: quota.threshold
    X-Modelgate-Delivery: 5f0c...        (the same on every retry: receivers de-duplicate)
    X-Modelgate-Signature: t=1764300000,v1=<hex HMAC-SHA256(secret, "<t>.<body>")>

The signature covers a timestamp, so a receiver can refuse replays older than a few
minutes. Failures (connection errors, timeouts, 429 and 5xx answers) are retried with capped
exponential backoff and full jitter, ``attempts`` times in all; other 4xx answers are final.
Every call has connect and read timeouts. Deliveries run as background tasks (at most
``max_pending`` at once; more are dropped and logged), and ``close`` waits for them briefly.

One sender may deliver to per-event URLs (``url=``, job webhooks). With ``pin``, each
attempt first resolves and checks the URL's host (SSRF defence, ``core/jobs/ssrf.py``) and
connects to the address it checked, sending the name as ``Host`` and TLS server name; a
refused address is final.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import httpx
import orjson

from modelgate.core.jobs.ssrf import PinnedUrl
from modelgate.errors import ModelgateError

__all__ = ["WebhookSender", "signature"]

log = logging.getLogger("modelgate.webhook")


def signature(secret: str, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={mac.hexdigest()}"


class WebhookSender:
    def __init__(
        self,
        url: str,
        *,
        secret: str | None = None,
        timeout_s: float = 2.0,
        attempts: int = 4,
        backoff_s: float = 0.5,
        max_backoff_s: float = 8.0,
        max_pending: int = 1000,
        transport: httpx.AsyncBaseTransport | None = None,
        pin: Callable[[str], Awaitable[PinnedUrl]] | None = None,
    ) -> None:
        self.url = url
        self._pin = pin
        self._secret = secret
        self._attempts = attempts
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._max_pending = max_pending
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s), follow_redirects=False, transport=transport
        )
        self._pending: set[asyncio.Task[bool]] = set()

    def send(self, event: str, payload: Mapping[str, Any], *, url: str | None = None) -> None:
        """Deliver ``payload`` in the background (needs a running event loop)."""
        if len(self._pending) >= self._max_pending:
            log.warning("webhook backlog full: dropped a %s event", event)
            return
        task = asyncio.get_running_loop().create_task(self.deliver(event, payload, url=url))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def deliver(
        self, event: str, payload: Mapping[str, Any], *, url: str | None = None
    ) -> bool:
        """Deliver now (to ``url``, default the sender's), retrying; True once the receiver
        answered 2xx."""
        target = url or self.url
        body = orjson.dumps(payload)
        delivery = uuid.uuid4().hex
        for attempt in range(1, self._attempts + 1):
            headers = {
                "content-type": "application/json",
                "x-modelgate-event": event,
                "x-modelgate-delivery": delivery,
            }
            if self._secret:
                headers["x-modelgate-signature"] = signature(self._secret, int(time.time()), body)
            request_url, extensions = target, {}
            if self._pin is not None:
                try:
                    pinned = await self._pin(target)
                except ModelgateError as exc:
                    log.warning("webhook %s not sent: %s", event, exc.message)
                    return False
                request_url, headers["host"] = pinned.url, pinned.host
                if target.startswith("https:"):
                    extensions["sni_hostname"] = pinned.server_name
            try:
                response = await self._client.post(
                    request_url, content=body, headers=headers, extensions=extensions
                )
            except httpx.HTTPError as exc:
                outcome = f"{type(exc).__name__}"
            else:
                if response.is_success:
                    return True
                outcome = f"HTTP {response.status_code}"
                if response.status_code != 429 and response.status_code < 500:
                    log.warning("webhook %s refused (%s); not retried", event, outcome)
                    return False
            if attempt < self._attempts:
                cap = min(self._max_backoff_s, self._backoff_s * 2 ** (attempt - 1))
                await asyncio.sleep(random.uniform(0, cap))
        log.warning("webhook %s failed after %d attempts (%s)", event, self._attempts, outcome)
        return False

    async def close(self, timeout_s: float = 5.0) -> None:
        if self._pending:
            _, late = await asyncio.wait(self._pending, timeout=timeout_s)
            for task in late:
                task.cancel()
        await self._client.aclose()
