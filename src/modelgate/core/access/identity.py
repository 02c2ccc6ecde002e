"""Who is calling: tenants, plans, API keys, scopes and the principal a request runs as.

The records here are plain frozen dataclasses; the stores that keep them are ports
(:class:`~modelgate.core.access.ports.IdentityStore`), implemented per backend under
``modelgate.storage``.

Scopes::

    infer                 run inference on every model the tenant may see
    infer:<model>         ... on one model only
    infer:<model>@<v>     ... on one version of one model only
    models:read           metadata, readiness, statistics, repository index
    models:write          load and unload (a model as its manifest says; no overrides)
    models:configure      load with a configuration override (operators only: a key
                          holds it only together with tenants:admin; see core/serving/overrides.py)
    keys:admin            create, list, rotate and revoke the tenant's keys
    usage:read            the tenant's usage and cost
    tenants:admin         every tenant (operators only)
    audit:read            the audit trail
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "ApiKeyRecord",
    "OnBehalf",
    "Plan",
    "Principal",
    "Scope",
    "Tenant",
    "allows_model",
    "has_scope",
]


class Scope(enum.StrEnum):
    INFER = "infer"
    MODELS_READ = "models:read"
    MODELS_WRITE = "models:write"
    MODELS_CONFIGURE = "models:configure"
    KEYS_ADMIN = "keys:admin"
    USAGE_READ = "usage:read"
    TENANTS_ADMIN = "tenants:admin"
    AUDIT_READ = "audit:read"


@dataclass(frozen=True, slots=True)
class Plan:
    """A tier of service. ``None`` means unlimited for that limit (but for
    ``explanations_per_minute``: the server's default)."""

    name: str
    requests_per_second: float | None = None
    burst: int | None = None
    requests_per_day: int | None = None
    requests_per_month: int | None = None
    rows_per_day: int | None = None
    rows_per_month: int | None = None
    tokens_per_day: int | None = None
    tokens_per_month: int | None = None
    max_concurrency: int | None = None
    max_batch_size: int | None = None
    #: rows explained (``parameters.explain``, docs/explanations.md) per minute, per tenant;
    #: ``None`` is not unlimited here: the server's ``MODELGATE_EXPLAIN_DEFAULT_PER_MINUTE``
    #: applies (0 there: no explanations)
    explanations_per_minute: int | None = None
    #: higher is more important; under overload the lowest priorities are shed first
    priority: int = 0
    #: models this plan may use; ``None`` is every model the tenant can see
    models: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class Tenant:
    id: str
    name: str
    plan: str
    created_at: datetime
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class ApiKeyRecord:
    """A stored API key: never the key itself, only its public prefix and its hash."""

    id: str
    tenant_id: str
    name: str
    prefix: str
    key_hash: str
    scopes: tuple[str, ...]
    created_at: datetime
    expires_at: datetime | None = None
    revoked_at: datetime | None = None
    last_used_at: datetime | None = None
    #: the key's own rate limit, on top of its tenant's plan; ``None``: only the plan's
    requests_per_second: float | None = None
    burst: int | None = None


@dataclass(frozen=True, slots=True)
class OnBehalf:
    """The tenant a cluster's gateway sends a call for: on a node, whose turn the call
    takes in the batcher and whose share it counts towards in fair shedding. Nothing else:
    the gateway has charged the tenant's rate limits and quotas already."""

    tenant: str
    #: the tenant's fair-share weight (its plan's rate)
    weight: float = 1.0
    #: its plan's priority (0-9): the shedding tier
    priority: int = 0


@dataclass(frozen=True, slots=True)
class Principal:
    """The identity a request runs as, after authentication."""

    tenant_id: str
    subject: str  # key id, JWT subject, or "bootstrap-admin"
    scopes: frozenset[str]
    plan: Plan
    kind: str = "key"  # key | jwt | admin
    extra: dict[str, str] = field(default_factory=dict)
    #: the key's own rate limit (API keys only), as (requests per second, burst)
    key_rate: tuple[float, int | None] | None = None
    #: a cluster's gateway calling a node for a tenant (None: the principal's own call)
    on_behalf: OnBehalf | None = None


def has_scope(principal: Principal, scope: Scope) -> bool:
    if scope is Scope.INFER:
        return any(s == "infer" or s.startswith("infer:") for s in principal.scopes)
    return scope.value in principal.scopes or Scope.TENANTS_ADMIN.value in principal.scopes


def allows_model(principal: Principal, model: str, version: str | None) -> bool:
    """May this principal run inference on ``model`` (and ``version``)?"""
    if principal.plan.models is not None and model not in principal.plan.models:
        return False
    scopes = principal.scopes
    if "infer" in scopes or "tenants:admin" in scopes:  # every model: one set lookup each
        return True
    for scope in scopes:
        if scope.startswith("infer:"):
            target = scope[len("infer:") :]
            name, _, pinned = target.partition("@")
            if name == model and (not pinned or pinned == (version or "")):
                return True
    return False
