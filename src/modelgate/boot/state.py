"""The database from settings: the engine and the SQL stores behind tenants, keys, the
audit trail, usage and prices, payload logs and feedback, with the services over them; and
the cipher and pseudonymizer that seal what is logged."""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from modelgate.core.access.tenancy import TenancyService
from modelgate.core.admission.usage import UsageService
from modelgate.core.governance.privacy import PrivacyService
from modelgate.core.governance.redaction import pseudonym
from modelgate.core.monitoring.feedback import FeedbackService
from modelgate.core.monitoring.feedback_subjects import FeedbackSubjects
from modelgate.settings import Settings
from modelgate.storage.crypto import AesGcmCipher
from modelgate.storage.sql.audit import SqlAuditLog
from modelgate.storage.sql.engine import create_engine, database_url_for
from modelgate.storage.sql.feedback import SqlFeedbackStore
from modelgate.storage.sql.identity import SqlIdentityStore
from modelgate.storage.sql.payloads import SqlPayloadStore
from modelgate.storage.sql.usage import SqlUsageStore

__all__ = ["State", "build_payload_crypto", "build_state"]


@dataclass
class State:
    """The database behind tenants, keys, the audit trail, usage and prices."""

    url: str
    engine: AsyncEngine
    identity: SqlIdentityStore
    audit: SqlAuditLog
    tenancy: TenancyService
    usage: SqlUsageStore
    usage_service: UsageService
    payloads: SqlPayloadStore
    payload_service: PrivacyService
    feedback: SqlFeedbackStore
    feedback_service: FeedbackService
    feedback_subjects: FeedbackSubjects


def build_state(settings: Settings) -> State:
    url = database_url_for(
        settings.data_dir,
        settings.database_url.get_secret_value() if settings.database_url else None,
    )
    engine = create_engine(url)
    identity, audit, usage = SqlIdentityStore(engine), SqlAuditLog(engine), SqlUsageStore(engine)
    tenancy = TenancyService(identity, audit)
    payloads = SqlPayloadStore(engine)
    cipher, pseudonymize = build_payload_crypto(settings)
    feedback = SqlFeedbackStore(engine)
    subjects = FeedbackSubjects(feedback)  # erased and exported with the payload logs
    payload_service = PrivacyService(
        payloads, audit, identity, cipher=cipher, pseudonymize=pseudonymize, holders=[subjects]
    )
    return State(
        url, engine, identity, audit, tenancy, usage, UsageService(usage, audit),
        payloads, payload_service, feedback, FeedbackService(feedback), subjects,
    )  # fmt: skip


def build_payload_crypto(
    settings: Settings,
) -> tuple[AesGcmCipher | None, Callable[[str], str] | None]:
    """The cipher that seals logged payloads and the subject pseudonymizer (None: not
    configured, so nothing is logged)."""
    key = settings.payload_pseudonym_key
    if settings.payload_keys and key is None:
        raise ValueError("MODELGATE_PAYLOAD_KEYS needs MODELGATE_PAYLOAD_PSEUDONYM_KEY")
    pseudonymize = None
    if key is not None:
        secret = key.get_secret_value().encode()
        if len(secret) < 16:
            raise ValueError("MODELGATE_PAYLOAD_PSEUDONYM_KEY must be at least 16 bytes")
        pseudonymize = functools.partial(pseudonym, secret)
    if not settings.payload_keys:
        return None, pseudonymize
    encoded = {k: v.get_secret_value() for k, v in settings.payload_keys.items()}
    return AesGcmCipher.from_settings(encoded, settings.payload_active_key), pseudonymize
