"""The audit trail: who changed what, when, from where; kept as a hash chain.

Each record carries the hash of the one before it, so an edited, removed or reordered
record breaks the chain at that point::

    hash(n) = sha256(hash(n-1) + canonical_json(entry(n)))      hash(0) = GENESIS

The chain proves the trail was not edited in place. It cannot tell a trail whose newest
records were cut off from a shorter one: keep an external copy of the latest hash (the
admin API shows it) to notice truncation.

:func:`chain_hash` and :class:`ChainCheck` live here so that every backend of
:class:`~modelgate.core.access.ports.AuditLog` hashes and verifies the same way.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from modelgate.errors import ModelgateError, invalid

if TYPE_CHECKING:
    from modelgate.core.access.identity import Principal

__all__ = [
    "GENESIS",
    "AuditEntry",
    "AuditRecord",
    "ChainCheck",
    "VerifyResult",
    "actor_of",
    "canonical_entry",
    "chain_hash",
    "verify_chain",
]

#: the ``prev_hash`` of the first record
GENESIS = "0" * 64


def actor_of(principal: Principal) -> str:
    """Who an entry says acted: ``key:<id>``, ``jwt:<subject>``, ``admin:...``."""
    return f"{principal.kind}:{principal.subject}"


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One change, as the caller describes it.

    ``before`` and ``after`` are JSON objects (str keys; str, int, float, bool, None, lists
    and objects as values); ``at`` must be timezone-aware. ``tenant_id`` is the tenant the
    change concerns, ``None`` for platform-wide changes; it lets a tenant read its own trail.
    """

    actor: str
    action: str
    target: str
    at: datetime
    source_ip: str | None = None
    before: Mapping[str, Any] | None = None
    after: Mapping[str, Any] | None = None
    tenant_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """A stored entry with its place in the chain: ``seq`` counts from 1 without gaps."""

    seq: int
    actor: str
    action: str
    target: str
    at: datetime
    source_ip: str | None
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    tenant_id: str | None
    prev_hash: str
    hash: str

    @property
    def entry(self) -> AuditEntry:
        return AuditEntry(
            actor=self.actor,
            action=self.action,
            target=self.target,
            at=self.at,
            source_ip=self.source_ip,
            before=self.before,
            after=self.after,
            tenant_id=self.tenant_id,
        )


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    #: records read, up to and including the first bad one
    checked: int
    first_bad_seq: int | None = None
    reason: str = ""


def canonical_entry(entry: AuditEntry) -> str:
    """The entry as canonical JSON: sorted keys, no whitespace, UTC ISO-8601 timestamps.

    Raises INVALID_ARGUMENT for a naive ``at`` or values that are not plain JSON (NaN,
    infinities, sets, datetimes inside ``before``/``after``).
    """
    if entry.at.tzinfo is None or entry.at.utcoffset() is None:
        raise invalid("audit entry 'at' must be timezone-aware")
    document = {
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "at": entry.at.astimezone(UTC).isoformat(timespec="microseconds"),
        "source_ip": entry.source_ip,
        "before": None if entry.before is None else dict(entry.before),
        "after": None if entry.after is None else dict(entry.after),
        "tenant_id": entry.tenant_id,
    }
    try:
        return json.dumps(document, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise invalid(f"audit entry is not plain JSON: {exc}") from exc


def chain_hash(prev_hash: str, entry: AuditEntry) -> str:
    """SHA-256 (hex) over ``prev_hash`` followed by the entry's canonical JSON."""
    payload = prev_hash + canonical_entry(entry)
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class ChainCheck:
    """Checks records fed one at a time in ``seq`` order; stops at the first bad one.

    A backend pages through its records and feeds them here, so the whole trail never has
    to fit in memory.
    """

    def __init__(self) -> None:
        self._expected_seq = 1
        self._prev_hash = GENESIS
        self._checked = 0
        self._bad: VerifyResult | None = None

    def feed(self, record: AuditRecord) -> bool:
        """Check one more record; False once the chain is broken (feed no more)."""
        if self._bad is not None:
            return False
        self._checked += 1
        if record.seq != self._expected_seq:
            if record.seq > self._expected_seq:
                missing = self._expected_seq
                reason = f"record {missing} is missing (next stored record is {record.seq})"
            else:
                missing = record.seq
                reason = f"record {record.seq} is out of order"
            return self._fail(missing, reason)
        if record.prev_hash != self._prev_hash:
            return self._fail(record.seq, "prev_hash does not match the previous record's hash")
        try:
            expected = chain_hash(record.prev_hash, record.entry)
        except ModelgateError as exc:
            return self._fail(record.seq, f"record cannot be hashed: {exc.message}")
        if record.hash != expected:
            return self._fail(record.seq, "hash does not match the record's contents")
        self._expected_seq += 1
        self._prev_hash = record.hash
        return True

    def result(self) -> VerifyResult:
        if self._bad is not None:
            return self._bad
        return VerifyResult(ok=True, checked=self._checked)

    def _fail(self, seq: int, reason: str) -> bool:
        self._bad = VerifyResult(ok=False, checked=self._checked, first_bad_seq=seq, reason=reason)
        return False


def verify_chain(records: Iterable[AuditRecord]) -> VerifyResult:
    """Verify records given in ``seq`` order, starting from the first."""
    check = ChainCheck()
    for record in records:
        if not check.feed(record):
            break
    return check.result()
