"""A :class:`~modelgate.core.governance.ports.PayloadStore` in a dictionary (tests; nothing
persists)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import datetime

from modelgate.core.governance.ports import PayloadConsent, PayloadQuery, PayloadRecord

__all__ = ["MemoryPayloadStore"]


class MemoryPayloadStore:
    def __init__(self) -> None:
        self._records: dict[str, PayloadRecord] = {}
        self._consents: dict[str, PayloadConsent] = {}

    async def append(self, records: Sequence[PayloadRecord]) -> None:
        if len({r.id for r in records}) != len(records) or any(
            r.id in self._records for r in records
        ):
            raise ValueError("duplicate payload id")  # as a primary key refuses it
        for record in records:
            self._records[record.id] = dataclasses.replace(
                record, redactions=dict(record.redactions)
            )

    async def find(self, query: PayloadQuery) -> list[PayloadRecord]:
        found = sorted(
            (r for r in self._records.values() if _matches(r, query)),
            key=lambda r: (r.created_at, r.id),
        )
        return found[: query.limit]

    async def delete_subject(self, subjects: Sequence[str], tenant_id: str | None) -> int:
        doomed = [
            r.id
            for r in self._records.values()
            if r.subject in subjects and (tenant_id is None or r.tenant_id == tenant_id)
        ]
        for record_id in doomed:
            del self._records[record_id]
        return len(doomed)

    async def purge(self, now: datetime) -> int:
        doomed = [r.id for r in self._records.values() if r.expires_at <= now]
        for record_id in doomed:
            del self._records[record_id]
        return len(doomed)

    async def reseal(self, record_id: str, cipher_key: str, nonce: bytes, sealed: bytes) -> bool:
        record = self._records.get(record_id)
        if record is None:
            return False
        self._records[record_id] = dataclasses.replace(
            record, cipher_key=cipher_key, nonce=nonce, ciphertext=sealed
        )
        return True

    async def set_consent(self, consent: PayloadConsent) -> None:
        self._consents[consent.tenant_id] = consent

    async def get_consent(self, tenant_id: str) -> PayloadConsent | None:
        return self._consents.get(tenant_id)

    async def list_consents(self) -> list[PayloadConsent]:
        return [self._consents[t] for t in sorted(self._consents)]


def _matches(r: PayloadRecord, q: PayloadQuery) -> bool:
    return (
        (q.tenant_id is None or r.tenant_id == q.tenant_id)
        and (q.model is None or r.model == q.model)
        and (q.subjects is None or r.subject in q.subjects)
        and (q.since is None or r.created_at >= q.since)
        and (q.until is None or r.created_at < q.until)
        and (q.live_at is None or r.expires_at > q.live_at)
        and (q.not_sealed_with is None or r.cipher_key != q.not_sealed_with)
        and (q.after is None or (r.created_at, r.id) > q.after)
    )
