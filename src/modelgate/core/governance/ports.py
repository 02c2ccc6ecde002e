"""The ports of governance, as Protocols, with the values that cross them: where logged
payloads and tenants' consent settings live (:class:`PayloadStore`, holding
:class:`PayloadRecord` and :class:`PayloadConsent`, read by :class:`PayloadQuery`), how a
payload is sealed (:class:`PayloadCipher`), and what else keeps a data subject's data
(:class:`SubjectData`).

Contracts are stated on each port; the implementations live outside ``core/``
(``modelgate.storage``, ``storage/crypto.py``) or in monitoring (feedback).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

__all__ = [
    "_PAGE",
    "PayloadCipher",
    "PayloadConsent",
    "PayloadQuery",
    "PayloadRecord",
    "PayloadStore",
    "SubjectData",
]


#: rows per page of a query
_PAGE = 500


@dataclass(frozen=True, slots=True)
class PayloadConsent:
    """A tenant's payload-logging setting. ``purpose`` is what the tenant consents to
    (recorded instead of the model's); ``retention_days`` can only shorten a model's;
    ``None`` leaves the model's."""

    tenant_id: str
    enabled: bool
    purpose: str | None = None
    retention_days: int | None = None
    updated_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PayloadRecord:
    """One logged inference. ``subject`` is the data subject's pseudonym (HMAC-SHA256,
    hex), never the id itself; ``cipher_key`` names the key that sealed ``ciphertext``."""

    id: str
    tenant_id: str
    key_id: str | None
    model: str
    version: str
    subject: str | None
    purpose: str
    created_at: datetime
    expires_at: datetime
    redactions: Mapping[str, int]
    cipher_key: str
    nonce: bytes
    ciphertext: bytes


@dataclass(frozen=True, slots=True)
class PayloadQuery:
    """Rows matching every filter given, ordered by ``(created_at, id)``, at most ``limit``.

    ``since`` is inclusive and ``until`` exclusive on ``created_at``; ``live_at`` keeps
    rows that expire after it; ``after`` is the ``(created_at, id)`` of the last row of
    the previous page; ``not_sealed_with`` keeps rows sealed with another key."""

    tenant_id: str | None = None
    model: str | None = None
    subjects: tuple[str, ...] | None = None
    since: datetime | None = None
    until: datetime | None = None
    live_at: datetime | None = None
    after: tuple[datetime, str] | None = None
    not_sealed_with: str | None = None
    limit: int = _PAGE


class PayloadStore(Protocol):
    """Where logged payloads and tenants' consent settings live.

    Contract:

    - ``append`` writes every record in one transaction (all or none); text a column
      cannot hold is INVALID_ARGUMENT and nothing is written;
    - ``find`` returns the records of a :class:`PayloadQuery`, bytes exactly as written;
      filters a column cannot hold match nothing;
    - ``delete_subject`` deletes every record of these pseudonyms (of one tenant, or of
      all when ``tenant_id`` is None) and answers how many; ``purge`` deletes the records
      with ``expires_at <= now``; both are idempotent;
    - ``reseal`` replaces the sealed payload of one record (key rotation) and answers
      whether the record exists;
    - ``set_consent`` inserts or replaces a tenant's setting; ``get_consent`` answers
      None for a tenant without one; ``list_consents`` returns all, ordered by tenant.
    """

    async def append(self, records: Sequence[PayloadRecord]) -> None: ...

    async def find(self, query: PayloadQuery) -> list[PayloadRecord]: ...

    async def delete_subject(self, subjects: Sequence[str], tenant_id: str | None) -> int: ...

    async def purge(self, now: datetime) -> int: ...

    async def reseal(
        self, record_id: str, cipher_key: str, nonce: bytes, sealed: bytes
    ) -> bool: ...

    async def set_consent(self, consent: PayloadConsent) -> None: ...

    async def get_consent(self, tenant_id: str) -> PayloadConsent | None: ...

    async def list_consents(self) -> list[PayloadConsent]: ...


class PayloadCipher(Protocol):
    """Authenticated encryption with named keys (AES-GCM in ``storage/crypto.py``).

    ``encrypt`` seals with the active key and answers ``(key id, nonce, ciphertext)``;
    ``decrypt`` opens with the key the row names, so rows sealed before a rotation stay
    readable while their key is configured. A wrong key, nonce, associated data or a
    changed byte is INTERNAL (never returns wrong plaintext); an unknown key id is
    FAILED_PRECONDITION."""

    @property
    def active_key(self) -> str: ...

    def encrypt(self, plaintext: bytes, associated: bytes) -> tuple[str, bytes, bytes]: ...

    def decrypt(self, key_id: str, nonce: bytes, ciphertext: bytes, associated: bytes) -> bytes: ...


class SubjectData(Protocol):
    """Anything else that keeps data tied to a data subject (feedback, cached results,
    when they exist): erased and exported together with the payload logs."""

    name: str

    async def erase(self, subjects: Sequence[str], tenant_id: str | None) -> int: ...

    async def export(self, subjects: Sequence[str], tenant_id: str | None) -> list[Any]: ...
