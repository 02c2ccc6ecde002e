"""A node's reading of the tenant its gateway names in a call's metadata.

Believed only from a call authenticated with the node's admin key, which is how a node
authenticates its cluster's gateways (docs/scale-out.md): any other caller's
``modelgate-tenant`` is ignored, so a tenant's key cannot take another tenant's turns.
What the entries mean and how they are checked: :mod:`modelgate.core.gateway.tenant_metadata`.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from modelgate.core.access.authentication import ADMIN_TENANT
from modelgate.core.access.identity import Principal
from modelgate.core.gateway.tenant_metadata import (
    PRIORITY_KEY,
    TENANT_KEY,
    WEIGHT_KEY,
    on_behalf,
)

__all__ = ["gateway_principal"]


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
    return replace(principal, on_behalf=on_behalf(tenant, weight, priority))
