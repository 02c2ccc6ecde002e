"""``SqlPayloadStore``: logged payloads and tenants' consent in SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine

from modelgate.core.governance.ports import PayloadConsent, PayloadQuery, PayloadRecord
from modelgate.storage.sql.engine import reading, writing
from modelgate.storage.sql.schema import ID_LENGTH, NAME_LENGTH, payload_consents, payload_logs
from modelgate.storage.sql.values import checked_text, checked_time, storable

__all__ = ["SqlPayloadStore"]

_P = payload_logs.c
_C = payload_consents.c
_SHORT = 64  # id, subject pseudonym and cipher key id columns


class SqlPayloadStore:
    """:class:`~modelgate.core.governance.ports.PayloadStore` on ``payload_logs`` and
    ``payload_consents``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._postgres = engine.dialect.name == "postgresql"

    async def append(self, records: Sequence[PayloadRecord]) -> None:
        rows = [_row(r) for r in records]
        if not rows:
            return
        async with writing(self._engine) as connection:
            await connection.execute(payload_logs.insert(), rows)

    async def find(self, query: PayloadQuery) -> list[PayloadRecord]:
        filters = _filters(query)
        if filters is None:
            return []
        statement = (
            select(payload_logs)
            .where(*filters)
            .order_by(_P.created_at.asc(), _P.id.asc())
            .limit(query.limit)
        )
        async with reading(self._engine) as connection:
            result = await connection.execute(statement)
            return [_record(row._mapping) for row in result]

    async def delete_subject(self, subjects: Sequence[str], tenant_id: str | None) -> int:
        wanted = [s for s in subjects if storable(s, _SHORT)]
        if not wanted or (tenant_id is not None and not storable(tenant_id, ID_LENGTH)):
            return 0
        statement = payload_logs.delete().where(_P.subject.in_(wanted))
        if tenant_id is not None:
            statement = statement.where(_P.tenant_id == tenant_id)
        async with writing(self._engine) as connection:
            result = await connection.execute(statement)
        return int(result.rowcount)

    async def purge(self, now: datetime) -> int:
        statement = payload_logs.delete().where(_P.expires_at <= checked_time(now, "now"))
        async with writing(self._engine) as connection:
            result = await connection.execute(statement)
        return int(result.rowcount)

    async def reseal(self, record_id: str, cipher_key: str, nonce: bytes, sealed: bytes) -> bool:
        if not storable(record_id, _SHORT):
            return False
        statement = (
            payload_logs.update()
            .where(_P.id == record_id)
            .values(
                cipher_key=checked_text(cipher_key, "cipher key id", _SHORT),
                nonce=nonce,
                ciphertext=sealed,
            )
        )
        async with writing(self._engine) as connection:
            result = await connection.execute(statement)
        return bool(result.rowcount)

    async def set_consent(self, consent: PayloadConsent) -> None:
        if consent.updated_at is None:
            raise ValueError("a stored consent needs updated_at")
        row = {
            "tenant_id": checked_text(consent.tenant_id, "tenant_id", ID_LENGTH),
            "enabled": consent.enabled,
            "purpose": None
            if consent.purpose is None
            else checked_text(consent.purpose, "purpose", NAME_LENGTH),
            "retention_days": consent.retention_days,
            "updated_at": checked_time(consent.updated_at, "updated_at"),
        }
        insert = (postgresql.insert if self._postgres else sqlite.insert)(payload_consents)
        upsert = insert.values(row).on_conflict_do_update(
            index_elements=[_C.tenant_id],
            set_={name: insert.excluded[name] for name in row if name != "tenant_id"},
        )
        async with writing(self._engine) as connection:
            await connection.execute(upsert)

    async def get_consent(self, tenant_id: str) -> PayloadConsent | None:
        if not storable(tenant_id, ID_LENGTH):
            return None
        async with reading(self._engine) as connection:
            result = await connection.execute(
                select(payload_consents).where(_C.tenant_id == tenant_id)
            )
            row = result.first()
        return None if row is None else _consent(row._mapping)

    async def list_consents(self) -> list[PayloadConsent]:
        ordered = _C.tenant_id.collate("C") if self._postgres else _C.tenant_id
        async with reading(self._engine) as connection:
            result = await connection.execute(select(payload_consents).order_by(ordered))
            return [_consent(row._mapping) for row in result]


def _filters(query: PayloadQuery) -> list[ColumnElement[bool]] | None:
    filters: list[ColumnElement[bool]] = []
    for value, column, length in (
        (query.tenant_id, _P.tenant_id, ID_LENGTH),
        (query.model, _P.model, NAME_LENGTH),
    ):
        if value is not None:
            if not storable(value, length):
                return None  # no stored row can match it
            filters.append(column == value)
    if query.subjects is not None:
        subjects = [s for s in query.subjects if storable(s, _SHORT)]
        if not subjects:
            return None
        filters.append(_P.subject.in_(subjects))
    if query.since is not None:
        filters.append(_P.created_at >= checked_time(query.since, "since"))
    if query.until is not None:
        filters.append(_P.created_at < checked_time(query.until, "until"))
    if query.live_at is not None:
        filters.append(_P.expires_at > checked_time(query.live_at, "live_at"))
    if query.not_sealed_with is not None:
        filters.append(_P.cipher_key != query.not_sealed_with)
    if query.after is not None:
        at, last_id = query.after
        at = checked_time(at, "after")
        filters.append(or_(_P.created_at > at, and_(_P.created_at == at, _P.id > last_id)))
    return filters


def _row(record: PayloadRecord) -> dict[str, Any]:
    return {
        "id": checked_text(record.id, "payload id", _SHORT),
        "tenant_id": checked_text(record.tenant_id, "payload tenant_id", ID_LENGTH),
        "key_id": None
        if record.key_id is None
        else checked_text(record.key_id, "payload key_id", ID_LENGTH),
        "model": checked_text(record.model, "payload model", NAME_LENGTH),
        "version": checked_text(record.version, "payload version", ID_LENGTH),
        "subject": None
        if record.subject is None
        else checked_text(record.subject, "payload subject", _SHORT),
        "purpose": checked_text(record.purpose, "payload purpose", NAME_LENGTH),
        "created_at": checked_time(record.created_at, "created_at"),
        "expires_at": checked_time(record.expires_at, "expires_at"),
        "redactions": dict(record.redactions),
        "cipher_key": checked_text(record.cipher_key, "cipher key id", _SHORT),
        "nonce": record.nonce,
        "ciphertext": record.ciphertext,
    }


def _record(row: Any) -> PayloadRecord:
    return PayloadRecord(
        id=row["id"],
        tenant_id=row["tenant_id"],
        key_id=row["key_id"],
        model=row["model"],
        version=row["version"],
        subject=row["subject"],
        purpose=row["purpose"],
        created_at=row["created_at"],
        expires_at=row["expires_at"],
        redactions={str(k): int(v) for k, v in (row["redactions"] or {}).items()},
        cipher_key=row["cipher_key"],
        nonce=bytes(row["nonce"]),
        ciphertext=bytes(row["ciphertext"]),
    )


def _consent(row: Any) -> PayloadConsent:
    return PayloadConsent(
        tenant_id=row["tenant_id"],
        enabled=bool(row["enabled"]),
        purpose=row["purpose"],
        retention_days=row["retention_days"],
        updated_at=row["updated_at"],
    )
