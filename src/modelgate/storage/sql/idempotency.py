"""``SqlIdempotencyStore``: idempotency records in SQLite or PostgreSQL.

:meth:`~SqlIdempotencyStore.begin` reads and writes the ``(owner, key)`` row in one write
transaction, serialized per key: a PostgreSQL advisory lock on a hash of the pair (two
replicas receiving the same retry at once: one inserts, the other then reads that row),
SQLite's write lock otherwise. The primary key is the last line of defence. A database
that cannot be reached is UNAVAILABLE (503: the client retries with the same key).
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import RowMapping, delete, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from modelgate.core.admission.idempotency import MAX_KEY_LENGTH
from modelgate.core.admission.ports import IdempotencyRecord, StoredAnswer
from modelgate.storage.sql.engine import advisory_xact_lock, writing
from modelgate.storage.sql.schema import idempotency_keys
from modelgate.storage.sql.values import checked_text, checked_time

__all__ = ["SqlIdempotencyStore"]

_K = idempotency_keys.c
_OWNER_LENGTH = 512
_PATH_LENGTH = 2048


def _lock_key(owner: str, key: str) -> int:
    digest = hashlib.sha256(f"modelgate-idempotency:{owner}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


class SqlIdempotencyStore:
    """:class:`~modelgate.core.admission.ports.IdempotencyStore` on ``idempotency_keys``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def begin(
        self, record: IdempotencyRecord, *, expired_before: datetime, stale_before: datetime
    ) -> IdempotencyRecord | None:
        row = {
            "owner": checked_text(record.owner, "caller", _OWNER_LENGTH),
            "key": checked_text(record.key, "Idempotency-Key", MAX_KEY_LENGTH),
            "method": checked_text(record.method, "method", 16),
            # informative only: the request is compared by its hash
            "path": record.path[:_PATH_LENGTH].replace("\x00", ""),
            "request_hash": record.request_hash,
            "created_at": checked_time(record.created_at, "created_at"),
            "withheld": False,
        }
        async with writing(self._engine) as connection:
            await advisory_xact_lock(connection, _lock_key(record.owner, record.key))
            found = (await connection.execute(select(idempotency_keys).where(*_of(record)))).first()
            if found is not None:
                existing = _record(found._mapping)
                unfinished = existing.answer is None
                if existing.created_at >= expired_before and not (
                    unfinished and existing.created_at < stale_before
                ):
                    return existing
                await connection.execute(delete(idempotency_keys).where(*_of(record)))
            await connection.execute(idempotency_keys.insert().values(row))
            return None

    async def complete(
        self, owner: str, key: str, created_at: datetime, answer: StoredAnswer
    ) -> bool:
        values = {
            "status": answer.status,
            "content_type": answer.content_type[:128],
            "body": answer.body,
            "body_key": answer.sealed_with,
            "body_nonce": answer.nonce,
            "withheld": answer.withheld,
        }
        async with writing(self._engine) as connection:
            result = await connection.execute(
                update(idempotency_keys).where(*_unfinished(owner, key, created_at)).values(values)
            )
            return bool(result.rowcount)

    async def release(self, owner: str, key: str, created_at: datetime) -> bool:
        async with writing(self._engine) as connection:
            result = await connection.execute(
                delete(idempotency_keys).where(*_unfinished(owner, key, created_at))
            )
            return bool(result.rowcount)

    async def purge(self, before: datetime) -> int:
        async with writing(self._engine) as connection:
            result = await connection.execute(
                delete(idempotency_keys).where(_K.created_at < checked_time(before, "before"))
            )
            return int(result.rowcount or 0)


def _of(record: IdempotencyRecord) -> list[Any]:
    return [_K.owner == record.owner, _K.key == record.key]


def _unfinished(owner: str, key: str, created_at: datetime) -> list[Any]:
    return [_K.owner == owner, _K.key == key, _K.created_at == created_at, _K.status.is_(None)]


def _record(row: RowMapping) -> IdempotencyRecord:
    answer = None
    if row["status"] is not None:
        answer = StoredAnswer(
            status=row["status"],
            body=bytes(row["body"] or b""),
            content_type=row["content_type"] or "application/json",
            sealed_with=row["body_key"],
            nonce=bytes(row["body_nonce"]) if row["body_nonce"] is not None else None,
            withheld=bool(row["withheld"]),
        )
    return IdempotencyRecord(
        owner=row["owner"],
        key=row["key"],
        method=row["method"],
        path=row["path"],
        request_hash=row["request_hash"],
        created_at=row["created_at"],
        answer=answer,
    )
