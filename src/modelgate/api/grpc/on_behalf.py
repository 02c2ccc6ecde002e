"""A node's reading of the tenant its gateway names in a call's metadata.

Believed only from a call authenticated with the node's admin key, which is how a node
authenticates its cluster's gateways (docs/scale-out.md): any other caller's
``modelgate-tenant`` is ignored, so a tenant's key cannot take another tenant's turns.
What the entries mean and how they are checked: :mod:`modelgate.core.gateway.tenant_metadata`.
"""

from __future__ import annotations

from typing import Any

from modelgate.core.access.authentication import ADMIN_TENANT
from modelgate.core.access.identity import OnBehalf, Principal
from modelgate.core.gateway.tenant_metadata import (
    PRIORITY_KEY,
    TENANT_KEY,
    WEIGHT_KEY,
    on_behalf,
)

__all__ = ["gateway_principal"]

#: the checked entries of recent gateway calls (a gateway sends the same few for each
#: tenant): a call checks its entries once, not per call; emptied when full
_CHECKED: dict[tuple[str, str | None, str | None], OnBehalf] = {}
_MAX_CHECKED = 4096


def gateway_principal(principal: Principal, context: Any) -> Principal:
    """``principal``, made for the tenant the call's metadata names when it is the admin
    key's (a gateway's) call that names one; INVALID_ARGUMENT when that metadata is
    malformed. Other callers' calls read no more metadata: this costs them one comparison."""
    if principal.tenant_id != ADMIN_TENANT or principal.kind != "admin":
        return principal
    tenant = weight = priority = None
    for key, value in context.invocation_metadata() or ():
        if key == TENANT_KEY:
            tenant = value
        elif key == WEIGHT_KEY:
            weight = value
        elif key == PRIORITY_KEY:
            priority = value
    if tenant is None:
        return principal
    entries = (tenant, weight, priority)
    behalf = _CHECKED.get(entries)
    if behalf is None:
        behalf = on_behalf(tenant, weight, priority)  # raises when malformed: not kept
        if len(_CHECKED) >= _MAX_CHECKED:
            _CHECKED.clear()
        _CHECKED[entries] = behalf
    # every field, positionally: dataclasses.replace costs twice as much (about 2 us);
    # tests/unit/gateway/test_tenant_metadata.py checks that no field is left out
    return Principal(
        principal.tenant_id,
        principal.subject,
        principal.scopes,
        principal.plan,
        principal.kind,
        principal.extra,
        principal.key_rate,
        behalf,
    )
