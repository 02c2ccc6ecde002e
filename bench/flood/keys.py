"""Plans, tenants and keys for the flood run, created through a server's admin API with the
bootstrap key, as an operator would."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from bench import tenant
from bench.workloads import AUTHORIZATION

__all__ = ["FAIR", "REFUSING", "ROOMY", "key_for"]

#: issue 15's plan for tenants A, B and C: 50 requests/s each (a burst of one second's worth)
FAIR: dict[str, Any] = {
    "name": "flood-fair",
    "requests_per_second": 50,
    "burst": 50,
    "requests_per_day": 10**12,
    "rows_per_day": 10**12,
    "tokens_per_day": 10**12,
}
#: one request in 1000 s: every request after a tenant's first is refused (429)
REFUSING: dict[str, Any] = {"name": "flood-refused", "requests_per_second": 0.001, "burst": 1}
#: limits and quotas no run reaches (bench/tenant.py's plan): admission does all its work
#: and never refuses
ROOMY: dict[str, Any] = {**tenant.PLAN, "name": "flood-roomy"}


def _post(base_url: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        base_url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"content-type": "application/json", "authorization": AUTHORIZATION},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.loads(response.read())
        return answer


def key_for(base_url: str, plan: dict[str, Any], tenant_name: str) -> str:
    """A new tenant ``tenant_name`` on ``plan`` (created unless it exists) and a key of its
    own; returns the ``Authorization`` header value."""
    try:
        _post(base_url, "/admin/plans", plan)
    except urllib.error.HTTPError as exc:
        if exc.code != 409:  # 409: the plan is there already
            raise
    created = _post(base_url, "/admin/tenants", {"name": tenant_name, "plan": plan["name"]})
    key = _post(base_url, f"/admin/tenants/{created['id']}/keys", {"name": tenant_name})
    return f"Bearer {key['secret']}"
