"""``SqlAuditLog``: the hash-chained audit trail in SQLite or PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import UTC
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from modelgate.core.access.audit import (
    GENESIS,
    AuditEntry,
    AuditRecord,
    ChainCheck,
    VerifyResult,
    canonical_entry,
    chain_hash,
)
from modelgate.errors import invalid
from modelgate.storage.sql.engine import advisory_xact_lock, reading, writing
from modelgate.storage.sql.schema import ID_LENGTH, NAME_LENGTH, audit_log
from modelgate.storage.sql.values import checked_text, storable

__all__ = ["SqlAuditLog"]

# pg_advisory_xact_lock key that serializes appends across every process ("mgaudit\0").
_APPEND_LOCK_KEY = 0x6D67_6175_6469_7400
#: the most records one ``list`` call returns, whatever ``limit`` asks for
MAX_PAGE = 1000
_MAX_SEQ = 2**63 - 1  # a BigInteger column


class SqlAuditLog:
    """:class:`~modelgate.core.access.ports.AuditLog` on the ``audit_log`` table.

    ``append`` reads the newest record and inserts the next one in one write transaction
    that excludes every other appender: on PostgreSQL it holds a transaction-level advisory
    lock, on SQLite the database write lock (``BEGIN IMMEDIATE``). Text the columns cannot
    hold on every backend (NUL, over-long) is INVALID_ARGUMENT, as in the identity store.
    ``list`` returns at most :data:`MAX_PAGE` records per call.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def append(self, entry: AuditEntry) -> AuditRecord:
        canonical_entry(entry)  # refuses a naive time or non-JSON values before the lock
        row = _entry_row(entry)
        async with writing(self._engine) as connection:
            await advisory_xact_lock(connection, _APPEND_LOCK_KEY)
            newest = await connection.execute(
                select(audit_log.c.seq, audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)
            )
            last = newest.first()
            seq, prev_hash = (1, GENESIS) if last is None else (last.seq + 1, last.hash)
            digest = chain_hash(prev_hash, entry)
            values = {**row, "seq": seq, "prev_hash": prev_hash, "hash": digest}
            await connection.execute(audit_log.insert().values(values))
        return _record(values)

    async def list(
        self,
        after_seq: int = 0,
        limit: int = 100,
        *,
        tenant_id: str | None = None,
        target: str | None = None,
    ) -> Sequence[AuditRecord]:
        if limit < 1:
            raise invalid("limit must be at least 1")
        if after_seq >= _MAX_SEQ:  # nothing comes after; the driver could not bind it (int64)
            return []
        query = select(audit_log).where(audit_log.c.seq > max(after_seq, -1))
        if tenant_id is not None:
            if not storable(tenant_id, ID_LENGTH):
                return []
            query = query.where(audit_log.c.tenant_id == tenant_id)
        if target is not None:
            if not storable(target, NAME_LENGTH):
                return []
            query = query.where(audit_log.c.target == target)
        query = query.order_by(audit_log.c.seq).limit(min(limit, MAX_PAGE))
        async with reading(self._engine) as connection:
            result = await connection.execute(query)
            return [_record(row._mapping) for row in result]

    async def verify(self) -> VerifyResult:
        check = ChainCheck()
        after = 0
        while True:
            page = await self.list(after_seq=after, limit=MAX_PAGE)
            for record in page:
                if not check.feed(record):
                    return check.result()
            if len(page) < MAX_PAGE:
                return check.result()
            after = page[-1].seq


def _entry_row(entry: AuditEntry) -> dict[str, Any]:
    def optional(value: str | None, field: str, max_length: int) -> str | None:
        return None if value is None else checked_text(value, field, max_length)

    return {
        "at": entry.at,
        "tenant_id": optional(entry.tenant_id, "audit tenant_id", ID_LENGTH),
        "actor": checked_text(entry.actor, "audit actor", NAME_LENGTH),
        "action": checked_text(entry.action, "audit action", NAME_LENGTH),
        "target": checked_text(entry.target, "audit target", NAME_LENGTH),
        "source_ip": optional(entry.source_ip, "audit source_ip", 64),
        # stored as JSON: keep the JSON form, so the record returned equals the one read back
        "before": _plain(entry.before),
        "after": _plain(entry.after),
    }


def _plain(value: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if value is None else dict(json.loads(json.dumps(dict(value))))


def _record(row: Mapping[Any, Any]) -> AuditRecord:
    return AuditRecord(
        seq=row["seq"],
        at=row["at"].astimezone(UTC),
        tenant_id=row["tenant_id"],
        actor=row["actor"],
        action=row["action"],
        target=row["target"],
        source_ip=row["source_ip"],
        before=row["before"],
        after=row["after"],
        prev_hash=row["prev_hash"],
        hash=row["hash"],
    )
