"""``SqlIdentityStore``: tenants, plans and API keys in SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import fields
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, case, literal, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from modelgate.core.access.identity import ApiKeyRecord, Plan, Tenant
from modelgate.errors import ErrorKind, ModelgateError
from modelgate.storage.sql.engine import reading, writing
from modelgate.storage.sql.schema import (
    ID_LENGTH,
    NAME_LENGTH,
    UtcDateTime,
    api_keys,
    plans,
    tenants,
)
from modelgate.storage.sql.values import checked_text, checked_time, storable

__all__ = ["SqlIdentityStore"]

_PLAN_FIELDS = tuple(f.name for f in fields(Plan))


class SqlIdentityStore:
    """:class:`~modelgate.core.access.ports.IdentityStore` on the SQL tables.

    Beyond the port's contract, every SQL backend also:

    - refuses, with FAILED_PRECONDITION, a tenant whose plan does not exist and a key whose
      tenant does not exist (the tables hold foreign keys);
    - refuses, with INVALID_ARGUMENT, text it cannot store the same way on every backend: a
      NUL character, lone surrogates, or more characters than the column holds (ids and
      plan names 128, names 256); lookups by such text find nothing;
    - only moves ``revoked_at`` earlier: revoking a key that is already revoked, or due to
      be (a rotated key's overlap), keeps the earlier time, so no call can postpone a
      revocation; and only moves ``last_used_at`` later, so racing touches cannot set it
      back.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    # plans

    async def create_plan(self, plan: Plan) -> None:
        row = {name: getattr(plan, name) for name in _PLAN_FIELDS}
        row["name"] = checked_text(plan.name, "plan name", ID_LENGTH)
        row["models"] = None if plan.models is None else _texts(plan.models, "plan models")
        async with writing(self._engine) as connection:
            try:
                await connection.execute(plans.insert().values(row))
            except IntegrityError as exc:
                raise _conflict(f"plan {plan.name!r} already exists") from exc

    async def get_plan(self, name: str) -> Plan | None:
        if not storable(name, ID_LENGTH):
            return None
        rows = await self._select(select(plans).where(plans.c.name == name))
        return _plan(rows[0]) if rows else None

    async def list_plans(self) -> Sequence[Plan]:
        return [_plan(row) for row in await self._select(select(plans).order_by(plans.c.name))]

    # tenants

    async def create_tenant(self, tenant: Tenant) -> None:
        row = {
            "id": checked_text(tenant.id, "tenant id", ID_LENGTH),
            "name": checked_text(tenant.name, "tenant name", NAME_LENGTH),
            "plan": checked_text(tenant.plan, "tenant plan", ID_LENGTH),
            "created_at": checked_time(tenant.created_at, "created_at"),
            "disabled": tenant.disabled,
        }
        async with writing(self._engine) as connection:
            query = select(plans.c.name).where(plans.c.name == tenant.plan)
            if (await connection.execute(query)).first() is None:
                raise _conflict(f"plan {tenant.plan!r} does not exist")
            try:
                await connection.execute(tenants.insert().values(row))
            except IntegrityError as exc:
                message = f"tenant {tenant.id!r} or a tenant named {tenant.name!r} already exists"
                raise _conflict(message) from exc

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        if not storable(tenant_id, ID_LENGTH):
            return None
        rows = await self._select(select(tenants).where(tenants.c.id == tenant_id))
        return _tenant(rows[0]) if rows else None

    async def list_tenants(self) -> Sequence[Tenant]:
        query = select(tenants).order_by(tenants.c.created_at, tenants.c.id)
        return [_tenant(row) for row in await self._select(query)]

    # keys

    async def create_key(self, key: ApiKeyRecord) -> None:
        row = {
            "id": checked_text(key.id, "key id", ID_LENGTH),
            "tenant_id": checked_text(key.tenant_id, "key tenant_id", ID_LENGTH),
            "name": checked_text(key.name, "key name", NAME_LENGTH),
            "prefix": checked_text(key.prefix, "key prefix", ID_LENGTH),
            "key_hash": checked_text(key.key_hash, "key hash", ID_LENGTH),
            "scopes": _texts(key.scopes, "key scopes"),
            "created_at": checked_time(key.created_at, "created_at"),
            "expires_at": _optional_time(key.expires_at, "expires_at"),
            "revoked_at": _optional_time(key.revoked_at, "revoked_at"),
            "last_used_at": _optional_time(key.last_used_at, "last_used_at"),
            "requests_per_second": key.requests_per_second,
            "burst": key.burst,
        }
        async with writing(self._engine) as connection:
            query = select(tenants.c.id).where(tenants.c.id == key.tenant_id)
            if (await connection.execute(query)).first() is None:
                raise _conflict(f"tenant {key.tenant_id!r} does not exist")
            try:
                await connection.execute(api_keys.insert().values(row))
            except IntegrityError as exc:
                message = f"key {key.id!r} or a key with prefix {key.prefix!r} already exists"
                raise _conflict(message) from exc

    async def find_key(self, prefix: str) -> ApiKeyRecord | None:
        if not storable(prefix, ID_LENGTH):
            return None
        rows = await self._select(select(api_keys).where(api_keys.c.prefix == prefix))
        return _key(rows[0]) if rows else None

    async def get_key(self, key_id: str) -> ApiKeyRecord | None:
        if not storable(key_id, ID_LENGTH):
            return None
        rows = await self._select(select(api_keys).where(api_keys.c.id == key_id))
        return _key(rows[0]) if rows else None

    async def list_keys(self, tenant_id: str) -> Sequence[ApiKeyRecord]:
        if not storable(tenant_id, ID_LENGTH):
            return []
        query = (
            select(api_keys)
            .where(api_keys.c.tenant_id == tenant_id)
            .order_by(api_keys.c.created_at, api_keys.c.id)
        )
        return [_key(row) for row in await self._select(query)]

    async def revoke_key(self, key_id: str, at: datetime) -> bool:
        checked_time(at, "at")
        if not storable(key_id, ID_LENGTH):
            return False
        when = literal(at, UtcDateTime())
        revoked = api_keys.c.revoked_at
        update = (
            api_keys.update()
            .where(api_keys.c.id == key_id)
            .values(revoked_at=case((or_(revoked.is_(None), revoked > when), when), else_=revoked))
        )
        async with writing(self._engine) as connection:
            result = await connection.execute(update)
        return result.rowcount > 0

    async def touch_key(self, key_id: str, at: datetime) -> bool:
        checked_time(at, "at")
        if not storable(key_id, ID_LENGTH):
            return False
        when = literal(at, UtcDateTime())
        last = api_keys.c.last_used_at
        update = (
            api_keys.update()
            .where(api_keys.c.id == key_id)
            .values(last_used_at=case((or_(last.is_(None), last < when), when), else_=last))
        )
        async with writing(self._engine) as connection:
            result = await connection.execute(update)
        return result.rowcount > 0

    async def _select(self, query: Any) -> list[RowMapping]:
        """Rows of a read; UNAVAILABLE when the database cannot be reached (down, cut off,
        timed out), so that callers answer 503 rather than fail."""
        async with reading(self._engine) as connection:
            result = await connection.execute(query)
            return [row._mapping for row in result]


def _conflict(message: str) -> ModelgateError:
    return ModelgateError(ErrorKind.FAILED_PRECONDITION, message)


def _texts(values: Iterable[str], field: str) -> list[str]:
    return [checked_text(value, field, NAME_LENGTH) for value in values]


def _optional_time(value: datetime | None, field: str) -> datetime | None:
    return None if value is None else checked_time(value, field)


def _plan(row: RowMapping) -> Plan:
    values = {name: row[name] for name in _PLAN_FIELDS}
    values["models"] = None if row["models"] is None else tuple(row["models"])
    return Plan(**values)


def _tenant(row: RowMapping) -> Tenant:
    return Tenant(
        id=row["id"],
        name=row["name"],
        plan=row["plan"],
        created_at=row["created_at"],
        disabled=bool(row["disabled"]),
    )


def _key(row: RowMapping) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row["id"],
        tenant_id=row["tenant_id"],
        name=row["name"],
        prefix=row["prefix"],
        key_hash=row["key_hash"],
        scopes=tuple(row["scopes"]),
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        revoked_at=row["revoked_at"],
        last_used_at=row["last_used_at"],
        requests_per_second=row["requests_per_second"],
        burst=row["burst"],
    )
