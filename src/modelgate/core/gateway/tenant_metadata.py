"""The tenant a gateway forwards each call for, as call metadata, and its checks on a node.

A node authenticates its gateways by the cluster's key (the node's admin key), so without
more it sees every tenant's call as the gateway's own: its batcher serves them first in,
first out, and its fair shedding sees one tenant. The gateway therefore names the caller's
tenant, fair-share weight and priority in three metadata entries; a node believes them only
from a call made with its admin key (``modelgate.api.grpc.on_behalf``), and only for the
batcher's turns and fair shedding (:class:`~modelgate.core.access.identity.OnBehalf`): rate
limits and quotas were charged on the gateway, shared through Redis, and are not charged
again. Any other caller's entries are ignored, so a tenant's key cannot pose as another
tenant.
"""

from __future__ import annotations

import math

from modelgate.core.access.authentication import ADMIN_TENANT
from modelgate.core.access.identity import OnBehalf
from modelgate.core.serving.ports import Timing
from modelgate.errors import invalid

__all__ = [
    "MAX_TENANT_CHARS",
    "MAX_WEIGHT",
    "PRIORITY_KEY",
    "TENANT_KEY",
    "WEIGHT_KEY",
    "on_behalf",
    "tenant_metadata",
]

TENANT_KEY = "modelgate-tenant"
WEIGHT_KEY = "modelgate-weight"
PRIORITY_KEY = "modelgate-priority"

#: a weight is a plan's rate in requests a second; bounded so that one tenant's weight
#: cannot swamp the sum of the others' (a larger rate is sent as this)
MAX_WEIGHT = 1e6
MIN_WEIGHT = 1e-6
MAX_TENANT_CHARS = 128
_MAX_PRIORITY = 9


def tenant_metadata(timing: Timing | None) -> dict[str, str]:
    """The metadata naming the tenant of the request that ``timing`` belongs to (set by
    admission on the gateway); none for a request of no tenant or of the admin key (the
    node sees the gateway's admin key then, as before)."""
    if timing is None:
        return {}
    tenant = timing.tenant
    if tenant is None or tenant == ADMIN_TENANT:
        return {}
    weight = min(max(timing.weight, MIN_WEIGHT), MAX_WEIGHT)
    return {
        TENANT_KEY: tenant,
        WEIGHT_KEY: repr(weight),
        PRIORITY_KEY: str(timing.priority),
    }


def on_behalf(tenant: str, weight: str | None, priority: str | None) -> OnBehalf:
    """The tenant a gateway's call is for, from its metadata; INVALID_ARGUMENT (naming the
    entry) when an entry is malformed or out of range. A missing weight is 1, a missing
    priority 0."""
    if not 0 < len(tenant) <= MAX_TENANT_CHARS or not tenant.isprintable() or tenant.isspace():
        raise invalid(f"{TENANT_KEY} must be 1 to {MAX_TENANT_CHARS} printable characters")
    if tenant == ADMIN_TENANT:
        raise invalid(f"{TENANT_KEY} cannot name the admin tenant")
    value = 1.0
    if weight is not None:
        try:
            value = float(weight)
        except ValueError:
            value = math.nan
        if not MIN_WEIGHT <= value <= MAX_WEIGHT:  # NaN fails both
            raise invalid(f"{WEIGHT_KEY} must be a number from {MIN_WEIGHT:g} to {MAX_WEIGHT:g}")
    tier = 0
    if priority is not None:
        if len(priority) != 1 or priority not in "0123456789":
            raise invalid(f"{PRIORITY_KEY} must be an integer from 0 to {_MAX_PRIORITY}")
        tier = int(priority)
    return OnBehalf(tenant, value, tier)
