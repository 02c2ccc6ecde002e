"""Payload logging: :class:`PayloadLogger`, the listener that keeps an inference's inputs
and outputs off the request path, when the model, the tenant and the request agree
(:mod:`~modelgate.core.governance.consent`).

:meth:`PayloadLogger.completed` (the request path) is a few attribute and dictionary
lookups and, when the payload is kept, a size estimate (each tensor's ``nbytes``, or its
element count for text) and an append to a list: no I/O, no copy, no redaction. What
waits is bounded in rows (``max_pending``) and in bytes (``max_pending_bytes``); a payload
over ``max_bytes`` is not kept; each reason is counted (:meth:`PayloadLogger.not_kept`).
A background task redacts, pseudonymizes and seals in a worker thread and writes in
batches every ``flush_interval_s``; a failed write keeps the sealed rows for the next
flush; :meth:`PayloadLogger.close` writes what is left. The same task re-reads the
tenants' settings every ``consent_refresh_s`` (a change made on another replica takes that
long to apply here) and deletes expired rows every ``purge_interval_s``.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from modelgate.core.governance.consent import LoggingTerms, logging_terms, subject_of
from modelgate.core.governance.payloads import payload_document, payload_size, seal_document
from modelgate.core.governance.ports import (
    PayloadCipher,
    PayloadConsent,
    PayloadRecord,
    PayloadStore,
)
from modelgate.core.serving.recording import BackgroundRecorder, Chore
from modelgate.core.serving.request_context import current_request_id
from modelgate.core.serving.requests import CompletedInference
from modelgate.core.serving.row_writer import RowWriter
from modelgate.core.serving.tensors import Tensor

__all__ = ["PayloadLogger"]

log = logging.getLogger("modelgate.payloads")

#: sealed rows written per statement (the event loop is free between statements)
_WRITE_STEP = 100


@dataclass(slots=True)
class _Pending:
    """An inference to keep, as the request path left it (nothing copied)."""

    at: float
    tenant_id: str
    key_id: str | None
    model: str
    version: str
    request_id: str | None
    subject: str | None
    terms: LoggingTerms
    inputs: list[Tensor]
    outputs: list[Tensor]


def _new_id() -> str:
    return "pl_" + secrets.token_hex(12)


def _least_size(tensors: Sequence[Tensor]) -> int:
    """At least the bytes these tensors hold, in constant time per tensor: numbers their
    array's bytes, text one byte per element (its exact size is read in the background)."""
    size = 0
    for tensor in tensors:
        data = tensor.data
        size += data.size if tensor.datatype == "BYTES" else data.nbytes
    return size


class PayloadLogger(BackgroundRecorder):
    """The :class:`~modelgate.core.serving.requests.InferenceListener` that logs consented
    payloads (see the module docstring; the task, flush lock, drop log, purge and drain:
    :class:`BackgroundRecorder`)."""

    def __init__(
        self,
        store: PayloadStore,
        cipher: PayloadCipher,
        pseudonymize: Callable[[str], str],
        *,
        flush_interval_s: float = 1.0,
        max_pending: int = 10_000,
        max_bytes: int = 1024 * 1024,
        max_pending_bytes: int = 64 * 1024 * 1024,
        consent_refresh_s: float = 5.0,
        purge_interval_s: float = 3600.0,
        clock: Callable[[], float] = time.time,
        new_id: Callable[[], str] = _new_id,
    ) -> None:
        """``clock`` is the wall clock in seconds since the epoch: rows are dated by it and
        the purge deletes what expired by it. ``max_bytes`` bounds one payload (inputs and
        outputs, before redaction); a larger one is not kept."""
        super().__init__(
            what="payloads",
            log=log,
            task_name="payload-log",
            flush_interval_s=flush_interval_s,
            dropped_text=f"payloads dropped (more than {max_pending} waiting, or refused)",
            lost_text="rows could not be written at shutdown and are lost",
            clock=clock,
        )
        self._store = store
        self._cipher = cipher
        self._pseudonymize = pseudonymize
        self._max_pending = max_pending
        self._max_bytes = max_bytes
        self._max_pending_bytes = max_pending_bytes
        self._pending_bytes = 0  # the estimated size of what waits in _pending
        self._refresh_s = consent_refresh_s
        self._purge_s = purge_interval_s
        self._new_id = new_id
        #: tenants that opted in (enabled settings only): the request path's one lookup
        self._consents: dict[str, PayloadConsent] = {}
        self._changes = 0
        self._pending: list[_Pending] = []
        #: sealed rows, not written yet (a failed write keeps them here)
        self._writer: RowWriter[PayloadRecord] = RowWriter(
            store.append,
            what="payloads",
            max_waiting=max_pending,
            name_of=lambda r: f"row {r.id}",
            log=log,
            step=_WRITE_STEP,
        )
        self._skipped = 0
        self._not_kept: Counter[str] = Counter()

    @property
    def pending(self) -> int:
        """Payloads waiting to be written."""
        return len(self._pending) + len(self._writer)

    @property
    def dropped(self) -> int:
        """Payloads lost because ``max_pending`` were waiting, or the store refused them."""
        return self._dropped + self._writer.dropped

    @property
    def skipped(self) -> int:
        """Payloads not kept because they were larger than ``max_bytes`` or unreadable."""
        return self._skipped

    def not_kept(self) -> dict[str, int]:
        """Consented payloads not kept, by reason: ``too_large`` (over ``max_bytes``),
        ``backlog_full`` (``max_pending`` rows or ``max_pending_bytes`` waiting),
        ``unreadable`` (could not be sealed), ``refused`` (by the store)."""
        return {**self._not_kept, "refused": self._writer.dropped}

    # -- the request path --------------------------------------------------------------
    def completed(self, inference: CompletedInference) -> None:
        policy = inference.manifest.payload_logging
        if policy is None or not policy.enabled:
            return
        principal = inference.principal
        if principal is None:
            return
        consent = self._consents.get(principal.tenant_id)
        if consent is None:
            return
        request = inference.request
        terms = logging_terms(policy, consent, request.parameters)
        if terms is None:
            return
        response = inference.response
        size = _least_size(request.inputs) + _least_size(response.outputs)
        if size > self._max_bytes:  # not held until the flush only to be skipped there
            self._skipped += 1
            self._not_kept["too_large"] += 1
            return
        if (
            len(self._pending) + len(self._writer) >= self._max_pending
            or self._pending_bytes + size > self._max_pending_bytes
        ):
            self._dropped += 1
            self._not_kept["backlog_full"] += 1
            return
        self._pending_bytes += size
        self._pending.append(
            _Pending(
                self._clock(),
                principal.tenant_id,
                # an API key id; a JWT subject may be a person, so only the kind of credential
                principal.subject if principal.kind == "key" else principal.kind,
                request.model,
                response.model_version,
                # the OIP id, else the transport one: what feedback and datasets join on
                request.id or current_request_id.get(),
                subject_of(request.parameters),
                terms,
                request.inputs,
                response.outputs,
            )
        )

    # -- consent settings --------------------------------------------------------------
    def apply(self, consent: PayloadConsent) -> None:
        """Take a tenant's new setting at once (made on this replica)."""
        self._changes += 1
        consents = dict(self._consents)
        if consent.enabled:
            consents[consent.tenant_id] = consent
        else:
            consents.pop(consent.tenant_id, None)
        self._consents = consents

    async def refresh_consents(self) -> None:
        """Re-read every tenant's setting (those made on other replicas)."""
        changes = self._changes
        found = await self._store.list_consents()
        if changes == self._changes:  # else a local change raced the read: next time
            self._consents = {c.tenant_id: c for c in found if c.enabled}

    # -- the background task -----------------------------------------------------------
    async def start(self) -> None:
        if self._task is None:
            try:
                await self.refresh_consents()
            except Exception as exc:  # nothing is logged until the settings are read
                log.warning("payloads: consent settings not read yet: %r", exc)
        await super().start()

    def _chores(self) -> Sequence[Chore]:
        return [
            Chore(
                self._refresh_s,
                self.refresh_consents,
                "consent settings not re-read",
                first_s=self._refresh_s,
            ),
            Chore(self._purge_s, self.purge, "expired rows not purged"),
        ]

    async def purge(self) -> int:
        """Delete the rows whose retention has passed; answers how many."""
        return await self._purge_expired(self._store.purge, "expired rows")

    async def _write(self) -> int:
        """Seal and write everything pending now."""
        batch, self._pending = self._pending, []
        self._pending_bytes = 0
        if batch:
            try:
                self._writer.add(await asyncio.to_thread(self._seal_all, batch))
            except asyncio.CancelledError:
                self._pending[:0] = batch
                self._pending_bytes += sum(
                    _least_size(p.inputs) + _least_size(p.outputs) for p in batch
                )
                raise
        return await self._writer.write()

    # -- sealing, in a worker thread -----------------------------------------------------
    def _seal_all(self, batch: Sequence[_Pending]) -> list[PayloadRecord]:
        records = []
        for item in batch:
            try:
                record = self._seal(item)
            except Exception:  # one bad payload must not lose the batch; it is counted
                log.exception("payloads: a payload of model %s could not be sealed", item.model)
                self._not_kept["unreadable"] += 1
                record = None
            else:
                if record is None:
                    self._not_kept["too_large"] += 1
            if record is None:
                self._skipped += 1
            else:
                records.append(record)
        return records

    def _seal(self, item: _Pending) -> PayloadRecord | None:
        if payload_size(item.inputs) + payload_size(item.outputs) > self._max_bytes:
            return None
        document, found = payload_document(item.request_id, item.inputs, item.outputs)
        record_id = self._new_id()
        key, nonce, sealed = seal_document(self._cipher, record_id, item.tenant_id, document)
        created = datetime.fromtimestamp(item.at, UTC)
        return PayloadRecord(
            id=record_id,
            tenant_id=item.tenant_id,
            key_id=item.key_id,
            model=item.model,
            version=item.version,
            subject=None if item.subject is None else self._pseudonymize(item.subject),
            purpose=item.terms.purpose,
            created_at=created,
            expires_at=created + timedelta(days=item.terms.retention_days),
            redactions=dict(found),
            cipher_key=key,
            nonce=nonce,
            ciphertext=sealed,
        )
