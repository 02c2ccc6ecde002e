"""An :class:`~modelgate.core.access.ports.AuditLog` in a list (tests; nothing persists)."""

from __future__ import annotations

from collections.abc import Sequence

from modelgate.core.access.audit import (
    GENESIS,
    AuditEntry,
    AuditRecord,
    VerifyResult,
    canonical_entry,
    chain_hash,
    verify_chain,
)

__all__ = ["MemoryAuditLog"]


class MemoryAuditLog:
    def __init__(self) -> None:
        self._records: list[AuditRecord] = []

    async def append(self, entry: AuditEntry) -> AuditRecord:
        canonical_entry(entry)  # refuses what cannot be hashed, before storing anything
        prev = self._records[-1].hash if self._records else GENESIS
        record = AuditRecord(
            seq=len(self._records) + 1,
            actor=entry.actor,
            action=entry.action,
            target=entry.target,
            at=entry.at,
            source_ip=entry.source_ip,
            before=entry.before,
            after=entry.after,
            tenant_id=entry.tenant_id,
            prev_hash=prev,
            hash=chain_hash(prev, entry),
        )
        self._records.append(record)  # no await since reading prev: atomic on one loop
        return record

    async def list(
        self,
        after_seq: int = 0,
        limit: int = 100,
        *,
        tenant_id: str | None = None,
        target: str | None = None,
    ) -> Sequence[AuditRecord]:
        rows = [
            r
            for r in self._records
            if r.seq > after_seq
            and (tenant_id is None or r.tenant_id == tenant_id)
            and (target is None or r.target == target)
        ]
        return rows[:limit]

    async def verify(self) -> VerifyResult:
        return verify_chain(self._records)
