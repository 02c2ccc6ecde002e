"""A tenant key for ``--auth tenant``: a plan with a rate limit, a concurrency cap and
quotas far above anything a run sends, so that admission does all of its work on every
request (the tenant's and the key's GCRA steps, the tenant's in-flight counter, one quota
call charging requests and rows per day) and never refuses; the key is looked up through
the authenticator's cache (SHA-256 of the key, one dictionary lookup) instead of the
bootstrap key's constant-time compare. Created through the admin API with the bootstrap
key, as an operator would, before any measured round."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

from bench.workloads import AUTHORIZATION

__all__ = ["AUTH_MODES", "KEY", "PLAN", "create_key", "create_key_over_http"]

#: ``admin``: the bootstrap key (MODELGATE_ADMIN_KEY, no plan); ``tenant``: a tenant's key
AUTH_MODES = ("admin", "tenant")

#: 1e6 requests per second with a burst of 1e6: a one-second GCRA window no run fills
PLAN: dict[str, Any] = {
    "name": "bench",
    "requests_per_second": 1e6,
    "burst": 1_000_000,
    "requests_per_day": 10**12,
    "rows_per_day": 10**12,
    "tokens_per_day": 10**12,
    "max_concurrency": 100_000,
    "priority": 9,
}
#: the key's own limit, checked after the tenant's
KEY: dict[str, Any] = {
    "name": "bench",
    "scopes": ["infer"],
    "requests_per_second": 1e6,
    "burst": 1_000_000,
}


async def create_key(post: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]]) -> str:
    """Create the plan, a tenant on it and its key with ``await post(path, body)`` (the
    JSON answer); returns the key's secret."""
    await post("/admin/plans", PLAN)
    tenant = await post("/admin/tenants", {"name": "bench", "plan": PLAN["name"]})
    created = await post(f"/admin/tenants/{tenant['id']}/keys", KEY)
    return str(created["secret"])


def create_key_over_http(base_url: str) -> str:
    """:func:`create_key` against a running server (``http://127.0.0.1:PORT``)."""

    def post_now(path: str, body: dict[str, Any]) -> dict[str, Any]:
        request = urllib.request.Request(
            base_url + path,
            data=json.dumps(body).encode(),
            method="POST",
            headers={"content-type": "application/json", "authorization": AUTHORIZATION},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            answer: dict[str, Any] = json.loads(response.read())
            return answer

    async def post(path: str, body: dict[str, Any]) -> dict[str, Any]:
        return await asyncio.to_thread(post_now, path, body)

    return asyncio.run(create_key(post))
