"""Idempotency keys for side-effecting requests (the admin API's POST, PUT and DELETE).

A client that retries a request with the same ``Idempotency-Key`` gets the first answer again,
and the side effect happens once, on every replica: the keys live in the
:class:`~modelgate.core.admission.ports.IdempotencyStore` (the shared database), per caller
(tenant and credential) and key.

What :meth:`IdempotencyService.begin` decides for a request that carries a key:

- ``run``: the key is new (or its record expired, or an unfinished record is stale): the
  request runs; its answer is then :meth:`~IdempotencyService.complete`\\ d (2xx: kept and
  replayed to retries for ``ttl_s``) or :meth:`~IdempotencyService.release`\\ d (any other
  answer: nothing was done, the key is free again);
- ``replay``: a request with the same method, path and body finished: its status and body;
- ``withheld``: it finished, but its answer held a secret (a new API key) and no cipher was
  configured to keep it sealed: only the answer without the secret is known;
- ``mismatch``: the key was used for another request (method, path or body differ);
- ``in_progress``: the first request is still running after ``wait_s`` of waiting.

The caller (owner) and key are the record's identity; the request is compared by one hash
of its method, path and body. Records are purged ``ttl_s`` after they were made, at most
every ``purge_every_s`` by a request that begins one.

A record outlives its request by ``ttl_s``, so a path naming a data subject (its erasure)
must not be kept as sent: the adapter passes such a path with the subject replaced by
:meth:`IdempotencyService.concealed` (its pseudonym, as the audit trail has it), both in the
record and in the hash.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from modelgate.core.access.audit import actor_of
from modelgate.core.access.identity import Principal
from modelgate.core.admission.ports import Cipher, IdempotencyRecord, IdempotencyStore, StoredAnswer
from modelgate.errors import ErrorKind, ModelgateError, invalid

__all__ = [
    "MAX_KEY_LENGTH",
    "Decision",
    "IdempotencyService",
    "check_key",
    "owner_of",
    "request_hash",
]

log = logging.getLogger("modelgate.idempotency")

MAX_KEY_LENGTH = 255


def check_key(value: str) -> str:
    """The key itself, or INVALID_ARGUMENT: 1 to 255 visible ASCII characters (the rule of
    ``/v1/jobs`` too)."""
    if not 1 <= len(value) <= MAX_KEY_LENGTH or not all("!" <= c <= "~" for c in value):
        raise invalid(f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} visible ASCII characters")
    return value


def owner_of(principal: Principal) -> str:
    """Whose keys these are: the tenant and the credential (``key:<id>``, ``jwt:<sub>``)."""
    return f"{principal.tenant_id}|{actor_of(principal)}"


def request_hash(method: str, path: str, body: bytes) -> str:
    """One hash of what was asked; a retry must send the same method, path and body."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode("utf-8", "surrogateescape"), body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Literal["run", "replay", "withheld", "mismatch", "in_progress"]
    record: IdempotencyRecord
    #: the answer to send again (``replay``), or what is known of it (``withheld``)
    answer: StoredAnswer | None = None


class IdempotencyService:
    def __init__(
        self,
        store: IdempotencyStore,
        cipher: Cipher | None = None,
        *,
        ttl_s: float = 24 * 3600,
        wait_s: float = 5.0,
        stale_s: float = 60.0,
        purge_every_s: float = 300.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        pseudonymize: Callable[[str], str] | None = None,
    ) -> None:
        """``pseudonymize``: the payload pseudonym key's HMAC, for :meth:`concealed`."""
        self.store = store
        self.cipher = cipher
        self._pseudonymize = pseudonymize
        self.ttl_s = ttl_s
        self.wait_s = wait_s
        self.stale_s = stale_s
        self._purge_every_s = purge_every_s
        self._now = now
        self._sleep = sleep
        self._purged_at = float("-inf")

    def concealed(self, subject: str) -> str:
        """What a record keeps in place of a data subject's id: its pseudonym (the HMAC of
        the payload pseudonym key, as in the audit trail); without that key, its SHA-256
        (such a server keeps nothing of subjects, and their erasure fails: nothing kept)."""
        if self._pseudonymize is not None:
            return "subject:" + self._pseudonymize(subject)
        return (
            "subject-sha256:"
            + hashlib.sha256(subject.encode("utf-8", "surrogateescape")).hexdigest()
        )

    async def begin(self, owner: str, key: str, method: str, path: str, body: bytes) -> Decision:
        check_key(key)
        record = IdempotencyRecord(
            owner, key, method.upper(), path, request_hash(method, path, body), self._now()
        )
        await self._purge_now_and_then()
        waited = 0.0
        pause = 0.02
        while True:
            now = self._now()
            found = await self.store.begin(
                _at(record, now),
                expired_before=now - timedelta(seconds=self.ttl_s),
                stale_before=now - timedelta(seconds=self.stale_s),
            )
            if found is None:
                return Decision("run", _at(record, now))
            if found.request_hash != record.request_hash:
                return Decision("mismatch", found)
            if found.answer is not None:
                return self._answer(found)
            if waited >= self.wait_s:
                return Decision("in_progress", found)
            await self._sleep(pause)
            waited += pause
            pause = min(pause * 2, 0.25)

    async def complete(
        self, run: Decision, answer: StoredAnswer, *, without_secret: bytes | None = None
    ) -> None:
        """Keep the answer of a request that ran. ``without_secret``: the answer holds a
        secret, and this is the body without it. With a cipher the whole answer is kept
        sealed (AES-GCM, bound to the caller and key); without one, only this."""
        record = run.record
        if without_secret is not None:
            if self.cipher is not None:
                sealed_with, nonce, body = self.cipher.encrypt(answer.body, _bound(record))
                answer = StoredAnswer(
                    answer.status, body, answer.content_type, sealed_with=sealed_with, nonce=nonce
                )
            else:
                answer = StoredAnswer(
                    answer.status, without_secret, answer.content_type, withheld=True
                )
        if not await self.store.complete(record.owner, record.key, record.created_at, answer):
            log.warning(
                "idempotency key %r of %s: its record went stale and was taken over before "
                "its request finished; the answer is not kept",
                record.key,
                record.owner,
            )

    async def release(self, run: Decision) -> None:
        record = run.record
        await self.store.release(record.owner, record.key, record.created_at)

    def _answer(self, found: IdempotencyRecord) -> Decision:
        answer = found.answer
        assert answer is not None
        if answer.withheld:
            return Decision("withheld", found, answer)
        if answer.sealed_with is not None:
            if self.cipher is None or answer.nonce is None:
                raise ModelgateError(
                    ErrorKind.FAILED_PRECONDITION,
                    "the answer of this request was kept sealed and no payload key is "
                    "configured to open it; use a new Idempotency-Key",
                )
            body = self.cipher.decrypt(answer.sealed_with, answer.nonce, answer.body, _bound(found))
            answer = StoredAnswer(answer.status, body, answer.content_type)
        return Decision("replay", found, answer)

    async def _purge_now_and_then(self) -> None:
        clock = time.monotonic()
        if clock - self._purged_at < self._purge_every_s:
            return
        self._purged_at = clock  # a failing purge is not tried again at every request
        purged = await self.store.purge(self._now() - timedelta(seconds=self.ttl_s))
        if purged:
            log.info("purged %d expired idempotency keys", purged)


def _at(record: IdempotencyRecord, now: datetime) -> IdempotencyRecord:
    return IdempotencyRecord(
        record.owner, record.key, record.method, record.path, record.request_hash, now
    )


def _bound(record: IdempotencyRecord) -> bytes:
    # a sealed answer opens only as the answer of this caller's key (not moved to another)
    return b"modelgate-idempotency\x00" + record.owner.encode() + b"\x00" + record.key.encode()
