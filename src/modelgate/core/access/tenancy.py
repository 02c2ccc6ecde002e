"""Managing tenants, plans and API keys: the use cases behind the admin API and the CLI.

Every change is written to the audit trail (who, what, when, from where, before/after).
Tenant-scoped operations answer NOT_FOUND for another tenant's ids, so ids do not leak;
``tenants:admin`` (operators, the bootstrap key) may act on every tenant.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from modelgate.core.access.audit import AuditEntry, actor_of
from modelgate.core.access.authorization import is_operator, require_scope
from modelgate.core.access.identity import ApiKeyRecord, Plan, Principal, Scope, Tenant
from modelgate.core.access.keys import issue_key
from modelgate.core.access.ports import AuditLog, IdentityStore
from modelgate.errors import ErrorKind, ModelgateError, invalid

__all__ = [
    "DEFAULT_ROWS_PER_DAY",
    "DEFAULT_TOKENS_PER_DAY",
    "CreatedKey",
    "TenancyService",
    "validate_scopes",
]

#: the rows and tokens quotas of a plan that ``modelgate plans create`` is given no quota
#: for, so that the work a tenant causes is bounded from its first plan (0 there: none)
DEFAULT_ROWS_PER_DAY = 1_000_000
DEFAULT_TOKENS_PER_DAY = 10_000_000

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._-]{0,62}$")
_INFER_SCOPE = re.compile(r"^infer:[A-Za-z0-9][A-Za-z0-9._-]{0,127}(@[1-9][0-9]{0,8})?$")
_KNOWN = frozenset(scope.value for scope in Scope)


@dataclass(frozen=True, slots=True)
class CreatedKey:
    """A new key: ``secret`` is shown to its owner once and never stored."""

    record: ApiKeyRecord
    secret: str


def validate_scopes(scopes: Sequence[str]) -> tuple[str, ...]:
    if not scopes:
        raise invalid("a key needs at least one scope")
    for scope in scopes:
        if scope not in _KNOWN and not _INFER_SCOPE.fullmatch(scope):
            raise invalid(f"unknown scope '{scope}'")
    if Scope.MODELS_CONFIGURE.value in scopes and Scope.TENANTS_ADMIN.value not in scopes:
        # what runs is the operators' decision: a tenant's key never overrides a manifest
        raise invalid(
            f"'{Scope.MODELS_CONFIGURE.value}' is an operator scope: a key holds it only "
            f"with '{Scope.TENANTS_ADMIN.value}'"
        )
    return tuple(dict.fromkeys(scopes))


def _name(value: str, what: str) -> str:
    if not _NAME.fullmatch(value):
        raise invalid(f"{what} must be 1-63 letters, digits, spaces, '.', '_' or '-'")
    return value


def _public(record: ApiKeyRecord) -> dict[str, Any]:
    data = asdict(record)
    data.pop("key_hash")
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in data.items()}


class TenancyService:
    def __init__(
        self,
        store: IdentityStore,
        audit: AuditLog,
        *,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ):
        self.store = store
        self.audit = audit
        self._now = now

    async def _record(
        self,
        principal: Principal,
        action: str,
        target: str,
        *,
        tenant_id: str | None,
        source_ip: str | None,
        before: dict[str, Any] | None = None,
        after: dict[str, Any] | None = None,
    ) -> None:
        await self.audit.append(
            AuditEntry(
                actor=actor_of(principal),
                action=action,
                target=target,
                at=self._now(),
                source_ip=source_ip,
                before=before,
                after=after,
                tenant_id=tenant_id,
            )
        )

    @staticmethod
    def _may_act_for(principal: Principal, tenant_id: str) -> bool:
        return principal.tenant_id == tenant_id or is_operator(principal)

    def _own_tenant(self, principal: Principal, tenant_id: str) -> None:
        if not self._may_act_for(principal, tenant_id):
            raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown tenant '{tenant_id}'")

    # -- plans and tenants (operators) -------------------------------------------------
    async def create_plan(
        self, principal: Principal, plan: Plan, source_ip: str | None = None
    ) -> Plan:
        require_scope(principal, Scope.TENANTS_ADMIN)
        _name(plan.name, "a plan name")
        await self.store.create_plan(plan)
        await self._record(
            principal,
            "plan.create",
            f"plan:{plan.name}",
            tenant_id=None,
            source_ip=source_ip,
            after=asdict(plan),
        )
        return plan

    async def create_tenant(
        self, principal: Principal, name: str, plan: str, source_ip: str | None = None
    ) -> Tenant:
        require_scope(principal, Scope.TENANTS_ADMIN)
        if await self.store.get_plan(plan) is None:
            raise invalid(f"unknown plan '{plan}'")
        tenant = Tenant(
            id="ten_" + secrets.token_hex(8),
            name=_name(name, "a tenant name"),
            plan=plan,
            created_at=self._now(),
        )
        await self.store.create_tenant(tenant)
        after = {"id": tenant.id, "name": tenant.name, "plan": plan}
        await self._record(
            principal,
            "tenant.create",
            f"tenant:{tenant.id}",
            tenant_id=tenant.id,
            source_ip=source_ip,
            after=after,
        )
        return tenant

    async def list_tenants(self, principal: Principal) -> Sequence[Tenant]:
        if Scope.TENANTS_ADMIN.value in principal.scopes:
            return await self.store.list_tenants()
        own = await self.store.get_tenant(principal.tenant_id)
        return [own] if own else []

    # -- keys --------------------------------------------------------------------------
    async def create_key(
        self,
        principal: Principal,
        tenant_id: str,
        name: str,
        scopes: Sequence[str],
        *,
        expires_at: datetime | None = None,
        source_ip: str | None = None,
        requests_per_second: float | None = None,
        burst: int | None = None,
    ) -> CreatedKey:
        """A new key; ``requests_per_second`` (and ``burst``) limit it below its tenant's plan."""
        require_scope(principal, Scope.KEYS_ADMIN)
        self._own_tenant(principal, tenant_id)
        if await self.store.get_tenant(tenant_id) is None:
            raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown tenant '{tenant_id}'")
        wanted = validate_scopes(scopes)
        if principal.kind != "admin" and Scope.TENANTS_ADMIN.value not in principal.scopes:
            extra = [
                s
                for s in wanted
                if s not in principal.scopes
                and not (s.startswith("infer:") and "infer" in principal.scopes)
            ]
            if extra:  # a key may not mint a key with more rights than it has
                raise ModelgateError(
                    ErrorKind.PERMISSION_DENIED,
                    f"cannot grant scopes this credential lacks: {extra}",
                )
        if expires_at is not None and expires_at <= self._now():
            raise invalid("'expires_at' must be in the future")
        if requests_per_second is not None and not requests_per_second > 0:
            raise invalid("'requests_per_second' must be positive")
        if burst is not None and (requests_per_second is None or burst < 1):
            raise invalid("'burst' needs 'requests_per_second' and must be at least 1")
        issued = issue_key()
        record = ApiKeyRecord(
            id="key_" + secrets.token_hex(8),
            tenant_id=tenant_id,
            name=_name(name, "a key name"),
            prefix=issued.prefix,
            key_hash=issued.key_hash,
            scopes=wanted,
            created_at=self._now(),
            expires_at=expires_at,
            requests_per_second=requests_per_second,
            burst=burst,
        )
        await self.store.create_key(record)
        await self._record(
            principal,
            "key.create",
            f"key:{record.id}",
            tenant_id=tenant_id,
            source_ip=source_ip,
            after=_public(record),
        )
        return CreatedKey(record, issued.secret)

    async def list_keys(self, principal: Principal, tenant_id: str) -> Sequence[ApiKeyRecord]:
        require_scope(principal, Scope.KEYS_ADMIN)
        self._own_tenant(principal, tenant_id)
        return await self.store.list_keys(tenant_id)

    async def _key(self, principal: Principal, key_id: str) -> ApiKeyRecord:
        require_scope(principal, Scope.KEYS_ADMIN)
        key = await self.store.get_key(key_id)
        # Another tenant's key answers exactly like a missing one (and names no tenant).
        if key is None or not self._may_act_for(principal, key.tenant_id):
            raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown key '{key_id}'")
        return key

    async def revoke_key(
        self, principal: Principal, key_id: str, source_ip: str | None = None
    ) -> ApiKeyRecord:
        key = await self._key(principal, key_id)
        at = self._now()
        await self.store.revoke_key(key_id, at)
        await self._record(
            principal,
            "key.revoke",
            f"key:{key_id}",
            tenant_id=key.tenant_id,
            source_ip=source_ip,
            before=_public(key),
            after={"revoked_at": at.isoformat()},
        )
        return key

    async def rotate_key(
        self,
        principal: Principal,
        key_id: str,
        overlap: timedelta = timedelta(hours=24),
        source_ip: str | None = None,
    ) -> CreatedKey:
        """A new key with the same scopes; the old one keeps working for ``overlap``."""
        old = await self._key(principal, key_id)
        if old.revoked_at is not None and old.revoked_at <= self._now():
            raise ModelgateError(ErrorKind.FAILED_PRECONDITION, "a revoked key cannot rotate")
        created = await self.create_key(
            principal,
            old.tenant_id,
            old.name,
            old.scopes,
            expires_at=old.expires_at,
            source_ip=source_ip,
            requests_per_second=old.requests_per_second,
            burst=old.burst,
        )
        ends = self._now() + overlap
        await self.store.revoke_key(old.id, ends)
        await self._record(
            principal,
            "key.rotate",
            f"key:{old.id}",
            tenant_id=old.tenant_id,
            source_ip=source_ip,
            before=_public(old),
            after={"replaced_by": created.record.id, "valid_until": ends.isoformat()},
        )
        return created
