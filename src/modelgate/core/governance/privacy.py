"""``PrivacyService``: the use cases around logged payloads, for the admin API and the
CLI: tenants' consent settings, a data subject's export (access) and erasure, training
datasets, retention and key rotation (docs/privacy.md)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from modelgate.core.access.audit import AuditEntry, actor_of
from modelgate.core.access.authorization import is_operator, require_scope
from modelgate.core.access.identity import Principal, Scope
from modelgate.core.access.ports import AuditLog, IdentityStore
from modelgate.core.governance.payloads import (
    MAX_PURPOSE_LENGTH,
    MAX_SUBJECT_LENGTH,
    associated_data,
    exported,
    open_payload,
)
from modelgate.core.governance.ports import (
    PayloadCipher,
    PayloadConsent,
    PayloadQuery,
    PayloadRecord,
    PayloadStore,
    SubjectData,
)
from modelgate.errors import ErrorKind, ModelgateError, invalid

__all__ = ["PrivacyService"]


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _not_configured() -> ModelgateError:
    return ModelgateError(
        ErrorKind.FAILED_PRECONDITION,
        "payload logging is not configured on this server "
        "(MODELGATE_PAYLOAD_KEYS and MODELGATE_PAYLOAD_PSEUDONYM_KEY)",
    )


class PrivacyService:
    """Consent settings, subject access and erasure, datasets and key rotation.

    Who may do what (docs/privacy.md):

    - a tenant's setting: ``keys:admin`` of that tenant, or an operator (``tenants:admin``);
      another tenant's id answers NOT_FOUND, like a missing one;
    - a subject's export and erasure: an operator, across tenants or in one
      (``tenant_id``); a tenant's ``keys:admin`` credential, in its own tenant only;
    - datasets, purge and key rotation: operators (the CLI).

    Every change, every export and every erasure is in the audit trail; subjects appear
    there by pseudonym only.
    """

    def __init__(
        self,
        store: PayloadStore,
        audit: AuditLog,
        identity: IdentityStore,
        *,
        cipher: PayloadCipher | None = None,
        pseudonymize: Callable[[str], str] | None = None,
        holders: Sequence[SubjectData] = (),
        now: Callable[[], datetime] = _utc_now,
    ) -> None:
        self.store = store
        self.audit = audit
        self.identity = identity
        self.cipher = cipher
        self.pseudonymize = pseudonymize
        self._holders = tuple(holders)
        self._now = now
        self._on_consent: Callable[[PayloadConsent], None] | None = None
        self._flush: Callable[[], Awaitable[object]] | None = None

    def attach(
        self,
        on_consent: Callable[[PayloadConsent], None],
        flush: Callable[[], Awaitable[object]],
    ) -> None:
        """Wire this process's payload logger: ``on_consent`` is told of each setting
        changed here (applied at once, not at the next refresh); ``flush`` writes what
        waits in memory, so that a subject's export and erasure find it."""
        self._on_consent = on_consent
        self._flush = flush

    @property
    def configured(self) -> bool:
        return self.cipher is not None and self.pseudonymize is not None

    # -- a tenant's setting ------------------------------------------------------------
    async def consent(self, principal: Principal, tenant_id: str) -> PayloadConsent:
        await self._tenant(principal, tenant_id)
        found = await self.store.get_consent(tenant_id)
        return found if found is not None else PayloadConsent(tenant_id, False)

    async def set_consent(
        self,
        principal: Principal,
        tenant_id: str,
        *,
        enabled: bool,
        purpose: str | None = None,
        retention_days: int | None = None,
        source_ip: str | None = None,
    ) -> PayloadConsent:
        await self._tenant(principal, tenant_id)
        if enabled and not self.configured:
            raise _not_configured()
        if purpose is not None and not 1 <= len(purpose) <= MAX_PURPOSE_LENGTH:
            raise invalid(f"'purpose' must be 1 to {MAX_PURPOSE_LENGTH} characters")
        if retention_days is not None and not 1 <= retention_days <= 3650:
            raise invalid("'retention_days' must be between 1 and 3650")
        before = await self.store.get_consent(tenant_id)
        consent = PayloadConsent(tenant_id, enabled, purpose, retention_days, self._now())
        await self.store.set_consent(consent)
        await self._audit(
            principal,
            "payload_logging.set",
            f"tenant:{tenant_id}",
            tenant_id,
            source_ip,
            None if before is None else _plain(before),
            _plain(consent),
        )
        if self._on_consent is not None:
            self._on_consent(consent)
        return consent

    # -- one data subject --------------------------------------------------------------
    async def export_subject(
        self,
        principal: Principal,
        subject: str,
        tenant_id: str | None = None,
        source_ip: str | None = None,
    ) -> dict[str, Any]:
        """Everything held about ``subject``, decrypted (a GDPR access request)."""
        tenant = self._subject_tenant(principal, tenant_id)
        if self.cipher is None or self.pseudonymize is None:
            raise _not_configured()
        cipher = self.cipher
        pseudonym = self._pseudonym(subject)
        if self._flush is not None:
            await self._flush()
        records: list[dict[str, Any]] = []
        query = PayloadQuery(tenant_id=tenant, subjects=(pseudonym,))
        async for record in self._pages(query):
            records.append(exported(record, open_payload(cipher, record)))
        document: dict[str, Any] = {
            "subject": subject,
            "pseudonym": pseudonym,
            "payload_logs": records,
        }
        counts = {"payload_logs": len(records)}
        for holder in self._holders:
            held = await holder.export((pseudonym,), tenant)
            document[holder.name] = held
            counts[holder.name] = len(held)
        await self._audit(
            principal,
            "subject.export",
            f"subject:{pseudonym}",
            tenant,
            source_ip,
            None,
            {"tenant": tenant or "*", **counts},
        )
        return document

    async def erase_subject(
        self,
        principal: Principal,
        subject: str,
        tenant_id: str | None = None,
        source_ip: str | None = None,
    ) -> dict[str, int]:
        """Delete everything tied to ``subject``; answers how much, per kind of data."""
        tenant = self._subject_tenant(principal, tenant_id)
        pseudonym = self._pseudonym(subject)
        if self._flush is not None:
            await self._flush()
        erased = {"payload_logs": await self.store.delete_subject((pseudonym,), tenant)}
        for holder in self._holders:
            erased[holder.name] = await holder.erase((pseudonym,), tenant)
        await self._audit(
            principal,
            "subject.erase",
            f"subject:{pseudonym}",
            tenant,
            source_ip,
            None,
            {"tenant": tenant or "*", **erased},
        )
        return erased

    # -- operators: datasets, retention, key rotation ----------------------------------
    async def export_dataset(
        self,
        principal: Principal,
        write: Callable[[dict[str, Any]], object],
        *,
        tenant_id: str | None = None,
        model: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
    ) -> int:
        """Hand each live row of tenants that consent now to ``write``, decrypted; answers
        how many. Rows of a tenant that withdrew its consent stay until they expire or are
        erased, but are not exported."""
        require_scope(principal, Scope.TENANTS_ADMIN)
        if self.cipher is None:
            raise _not_configured()
        consenting = {c.tenant_id for c in await self.store.list_consents() if c.enabled}
        query = PayloadQuery(
            tenant_id=tenant_id, model=model, since=since, until=until, live_at=self._now()
        )
        count = 0
        async for record in self._pages(query):
            if record.tenant_id in consenting:
                write(exported(record, open_payload(self.cipher, record)))
                count += 1
        after = {
            "model": model,
            "since": None if since is None else since.isoformat(),
            "until": None if until is None else until.isoformat(),
            "rows": count,
        }
        await self._audit(
            principal, "payloads.export", f"payloads:{tenant_id or '*'}", tenant_id, None, None,
            after,
        )  # fmt: skip
        return count

    async def purge(self, principal: Principal) -> int:
        """Delete the expired rows now (the logger also does it on its own, periodically)."""
        require_scope(principal, Scope.TENANTS_ADMIN)
        return await self.store.purge(self._now())

    async def rekey(self, principal: Principal) -> int:
        """Re-seal every row sealed with another key than the active one, so that old keys
        can be removed from the settings; answers how many rows were re-sealed."""
        require_scope(principal, Scope.TENANTS_ADMIN)
        if self.cipher is None:
            raise _not_configured()
        cipher = self.cipher
        active = cipher.active_key
        count = 0
        while True:  # each page is re-read: re-sealed rows no longer match
            page = await self.store.find(PayloadQuery(not_sealed_with=active))
            if not page:
                break
            for record in page:
                plaintext = cipher.decrypt(
                    record.cipher_key,
                    record.nonce,
                    record.ciphertext,
                    associated_data(record.id, record.tenant_id),
                )
                key, nonce, sealed = cipher.encrypt(
                    plaintext, associated_data(record.id, record.tenant_id)
                )
                if await self.store.reseal(record.id, key, nonce, sealed):
                    count += 1
        await self._audit(
            principal, "payloads.rekey", "payloads:*", None, None, None,
            {"key": active, "rows": count},
        )  # fmt: skip
        return count

    # -- helpers -----------------------------------------------------------------------
    async def _pages(self, query: PayloadQuery) -> AsyncIterator[PayloadRecord]:
        while True:
            page = await self.store.find(query)
            for record in page:
                yield record
            if len(page) < query.limit:
                return
            last = page[-1]
            query = replace(query, after=(last.created_at, last.id))

    def _pseudonym(self, subject: str) -> str:
        if not 1 <= len(subject) <= MAX_SUBJECT_LENGTH:
            raise invalid(f"a subject id is 1 to {MAX_SUBJECT_LENGTH} characters")
        if self.pseudonymize is None:
            raise _not_configured()
        return self.pseudonymize(subject)

    async def _tenant(self, principal: Principal, tenant_id: str) -> None:
        require_scope(principal, Scope.KEYS_ADMIN)
        if (not is_operator(principal) and principal.tenant_id != tenant_id) or (
            await self.identity.get_tenant(tenant_id) is None
        ):
            raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown tenant '{tenant_id}'")

    @staticmethod
    def _subject_tenant(principal: Principal, tenant_id: str | None) -> str | None:
        """The tenant a subject request acts in; None: every tenant (operators only)."""
        require_scope(principal, Scope.KEYS_ADMIN)
        if is_operator(principal):
            return tenant_id
        if tenant_id is not None and tenant_id != principal.tenant_id:
            raise ModelgateError(ErrorKind.NOT_FOUND, f"unknown tenant '{tenant_id}'")
        return principal.tenant_id

    async def _audit(
        self,
        principal: Principal,
        action: str,
        target: str,
        tenant_id: str | None,
        source_ip: str | None,
        before: dict[str, Any] | None,
        after: dict[str, Any] | None,
    ) -> None:
        await self.audit.append(
            AuditEntry(
                actor=actor_of(principal),
                action=action,
                target=target,
                at=self._now(),
                source_ip=source_ip,
                before=before,
                after=after,
                tenant_id=tenant_id,
            )
        )


def _plain(consent: PayloadConsent) -> dict[str, Any]:
    return {
        "enabled": consent.enabled,
        "purpose": consent.purpose,
        "retention_days": consent.retention_days,
        "updated_at": None if consent.updated_at is None else consent.updated_at.isoformat(),
    }
