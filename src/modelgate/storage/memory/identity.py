"""An :class:`~modelgate.core.access.ports.IdentityStore` in a few dictionaries."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from modelgate.core.access.identity import ApiKeyRecord, Plan, Tenant
from modelgate.errors import ErrorKind, ModelgateError

__all__ = ["MemoryIdentityStore"]


def _exists(what: str) -> ModelgateError:
    return ModelgateError(ErrorKind.FAILED_PRECONDITION, f"{what} already exists")


class MemoryIdentityStore:
    def __init__(self) -> None:
        self._plans: dict[str, Plan] = {}
        self._tenants: dict[str, Tenant] = {}
        self._keys: dict[str, ApiKeyRecord] = {}  # by id

    async def create_plan(self, plan: Plan) -> None:
        if plan.name in self._plans:
            raise _exists(f"plan '{plan.name}'")
        self._plans[plan.name] = plan

    async def get_plan(self, name: str) -> Plan | None:
        return self._plans.get(name)

    async def list_plans(self) -> Sequence[Plan]:
        return sorted(self._plans.values(), key=lambda p: p.name)

    async def create_tenant(self, tenant: Tenant) -> None:
        if tenant.id in self._tenants or any(t.name == tenant.name for t in self._tenants.values()):
            raise _exists(f"tenant '{tenant.name}'")
        self._tenants[tenant.id] = tenant

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        return self._tenants.get(tenant_id)

    async def list_tenants(self) -> Sequence[Tenant]:
        return sorted(self._tenants.values(), key=lambda t: t.created_at)

    async def create_key(self, key: ApiKeyRecord) -> None:
        if key.id in self._keys or any(k.prefix == key.prefix for k in self._keys.values()):
            raise _exists(f"key '{key.prefix}'")
        self._keys[key.id] = key

    async def find_key(self, prefix: str) -> ApiKeyRecord | None:
        return next((k for k in self._keys.values() if k.prefix == prefix), None)

    async def get_key(self, key_id: str) -> ApiKeyRecord | None:
        return self._keys.get(key_id)

    async def list_keys(self, tenant_id: str) -> Sequence[ApiKeyRecord]:
        keys = [k for k in self._keys.values() if k.tenant_id == tenant_id]
        return sorted(keys, key=lambda k: k.created_at)

    async def revoke_key(self, key_id: str, at: datetime) -> bool:
        key = self._keys.get(key_id)
        if key is None:
            return False
        if key.revoked_at is None or at < key.revoked_at:  # a revocation is never postponed
            self._keys[key_id] = dataclasses.replace(key, revoked_at=at)
        return True

    async def touch_key(self, key_id: str, at: datetime) -> bool:
        key = self._keys.get(key_id)
        if key is None:
            return False
        if key.last_used_at is None or at > key.last_used_at:
            self._keys[key_id] = dataclasses.replace(key, last_used_at=at)
        return True
