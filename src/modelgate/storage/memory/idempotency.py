"""``MemoryIdempotencyStore``: idempotency records in one process's memory (tests, one
process without a database). Every method runs without an ``await`` between its read and
its write, so each is atomic on the event loop."""

from __future__ import annotations

import dataclasses
from datetime import datetime

from modelgate.core.admission.ports import IdempotencyRecord, StoredAnswer

__all__ = ["MemoryIdempotencyStore"]


class MemoryIdempotencyStore:
    """:class:`~modelgate.core.admission.ports.IdempotencyStore` in a dictionary."""

    def __init__(self) -> None:
        self._records: dict[tuple[str, str], IdempotencyRecord] = {}

    async def begin(
        self, record: IdempotencyRecord, *, expired_before: datetime, stale_before: datetime
    ) -> IdempotencyRecord | None:
        found = self._records.get((record.owner, record.key))
        if found is not None and not _replaceable(found, expired_before, stale_before):
            return found
        self._records[(record.owner, record.key)] = dataclasses.replace(record, answer=None)
        return None

    async def complete(
        self, owner: str, key: str, created_at: datetime, answer: StoredAnswer
    ) -> bool:
        found = self._records.get((owner, key))
        if found is None or found.answer is not None or found.created_at != created_at:
            return False
        self._records[(owner, key)] = dataclasses.replace(found, answer=answer)
        return True

    async def release(self, owner: str, key: str, created_at: datetime) -> bool:
        found = self._records.get((owner, key))
        if found is None or found.answer is not None or found.created_at != created_at:
            return False
        del self._records[(owner, key)]
        return True

    async def purge(self, before: datetime) -> int:
        old = [k for k, r in self._records.items() if r.created_at < before]
        for k in old:
            del self._records[k]
        return len(old)


def _replaceable(found: IdempotencyRecord, expired_before: datetime, stale: datetime) -> bool:
    return found.created_at < expired_before or (found.answer is None and found.created_at < stale)
