"""The SQL tables, as SQLAlchemy Core metadata.

The Alembic scripts under ``migrations/versions`` create exactly these tables; a contract
test compares the two. Change both together: a new revision per change, never an edit of
a released one.

Timestamps are stored in UTC (``timestamptz`` on PostgreSQL; naive UTC text on SQLite,
which has no time-zone type) and come back timezone-aware through :class:`UtcDateTime`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

__all__ = [
    "ID_LENGTH",
    "NAME_LENGTH",
    "UtcDateTime",
    "api_keys",
    "audit_log",
    "deployments",
    "idempotency_keys",
    "job_items",
    "jobs",
    "metadata",
    "payload_consents",
    "payload_logs",
    "plans",
    "prediction_feedback",
    "predictions",
    "prices",
    "tenants",
    "usage_records",
]

#: longest id (tenant, key, plan name) the tables hold
ID_LENGTH = 128
#: longest human-readable name (tenant, key)
NAME_LENGTH = 256

# Constraint names are fixed so that later migrations can address them on every backend.
metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime, stored in UTC; a naive value is refused."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: modelgate stores aware UTC times")
        value = value.astimezone(UTC)
        # SQLite's DATETIME storage drops the offset rather than converting; hand it UTC.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _json() -> JSON:
    # None is SQL NULL, not the JSON text 'null', so "no value" is one thing on every backend.
    return JSON(none_as_null=True)


# A BIGINT primary key that autoincrements on SQLite too (only INTEGER aliases its rowid).
_BigId = BigInteger().with_variant(Integer(), "sqlite")

plans = Table(
    "plans",
    metadata,
    Column("name", String(ID_LENGTH), primary_key=True),
    Column("requests_per_second", Float, nullable=True),
    Column("burst", Integer, nullable=True),
    Column("requests_per_day", BigInteger, nullable=True),
    Column("requests_per_month", BigInteger, nullable=True),
    Column("rows_per_day", BigInteger, nullable=True),
    Column("rows_per_month", BigInteger, nullable=True),
    Column("tokens_per_day", BigInteger, nullable=True),
    Column("tokens_per_month", BigInteger, nullable=True),
    Column("max_concurrency", Integer, nullable=True),
    Column("max_batch_size", Integer, nullable=True),
    # rows explained per minute (docs/explanations.md; 0010)
    Column("explanations_per_minute", Integer, nullable=True),
    Column("priority", Integer, nullable=False),
    Column("models", _json(), nullable=True),
)

tenants = Table(
    "tenants",
    metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("name", String(NAME_LENGTH), nullable=False, unique=True),
    Column("plan", String(ID_LENGTH), ForeignKey("plans.name"), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("disabled", Boolean, nullable=False),
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(ID_LENGTH), primary_key=True),
    Column("tenant_id", String(ID_LENGTH), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("name", String(NAME_LENGTH), nullable=False),
    Column("prefix", String(ID_LENGTH), nullable=False, unique=True),
    Column("key_hash", String(ID_LENGTH), nullable=False),
    Column("scopes", _json(), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=True),
    Column("revoked_at", UtcDateTime(), nullable=True),
    Column("last_used_at", UtcDateTime(), nullable=True),
    # a key's own rate limit, on top of its tenant's plan (0002)
    Column("requests_per_second", Float, nullable=True),
    Column("burst", Integer, nullable=True),
)

audit_log = Table(
    "audit_log",
    metadata,
    # assigned by the appender under a lock, never by the database: seq has no gaps
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    Column("at", UtcDateTime(), nullable=False),
    Column("tenant_id", String(ID_LENGTH), nullable=True, index=True),
    Column("actor", String(NAME_LENGTH), nullable=False),
    Column("action", String(NAME_LENGTH), nullable=False),
    Column("target", String(NAME_LENGTH), nullable=False, index=True),
    Column("source_ip", String(64), nullable=True),
    Column("before", _json(), nullable=True),
    Column("after", _json(), nullable=True),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False, unique=True),
)

# One row per (flush, minute, tenant, key, model, version, hardware, status, cache hit):
# the usage recorder aggregates in memory and writes these in batches (0002), so a busy
# server writes a few rows a second, not one per request. Sums, not averages, so rows add up.
usage_records = Table(
    "usage_records",
    metadata,
    Column("id", _BigId, primary_key=True, autoincrement=True),
    # the start of the UTC minute the requests finished in
    Column("period_start", UtcDateTime(), nullable=False),
    Column("tenant_id", String(ID_LENGTH), nullable=False),
    Column("key_id", String(ID_LENGTH), nullable=True),
    Column("model", String(NAME_LENGTH), nullable=False),
    Column("version", String(ID_LENGTH), nullable=True),
    Column("hardware", String(32), nullable=False),
    Column("status", String(32), nullable=False),
    Column("cache_hit", Boolean, nullable=False),
    Column("requests", BigInteger, nullable=False),
    Column("rows", BigInteger, nullable=False),
    Column("tokens", BigInteger, nullable=False),
    # rows explained (parameters.explain, docs/explanations.md; 0010)
    Column("explanations", BigInteger, nullable=False, server_default="0"),
    Column("latency_ms_sum", Float, nullable=False),
    Column("latency_ms_max", Float, nullable=False),
    Column("compute_ms_sum", Float, nullable=False),
    # priced when written, at the price table of that moment
    Column("cost", Float, nullable=False),
    # usage queries are "one tenant over a time range", or "everyone over a time range"
    Index("ix_usage_records_tenant_id_period_start", "tenant_id", "period_start"),
    Index("ix_usage_records_period_start", "period_start"),
)

# The price table: "model:<name>", "hardware:<class>" or "default" -> rates (0002).
prices = Table(
    "prices",
    metadata,
    Column("target", String(NAME_LENGTH), primary_key=True),
    Column("per_1k_units", Float, nullable=False),
    Column("per_compute_second", Float, nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
)

# Logged inference payloads (0003): who and what in clear, inputs and outputs sealed with
# AES-GCM (the key id and nonce beside them). ``subject`` is the data subject's keyed
# pseudonym (HMAC-SHA256 hex), never the id itself.
payload_logs = Table(
    "payload_logs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(ID_LENGTH), nullable=False),
    Column("key_id", String(ID_LENGTH), nullable=True),
    Column("model", String(NAME_LENGTH), nullable=False),
    Column("version", String(ID_LENGTH), nullable=False),
    Column("subject", String(64), nullable=True, index=True),
    Column("purpose", String(NAME_LENGTH), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    # retention: a purge deletes the rows whose time has come
    Column("expires_at", UtcDateTime(), nullable=False, index=True),
    # what redaction took out, kind -> count ({"email": 2})
    Column("redactions", _json(), nullable=False),
    Column("cipher_key", String(64), nullable=False),
    Column("nonce", LargeBinary(), nullable=False),
    Column("ciphertext", LargeBinary(), nullable=False),
    Index("ix_payload_logs_tenant_id_created_at", "tenant_id", "created_at"),
    Index("ix_payload_logs_created_at", "created_at"),
)

# A tenant's opt-in to payload logging (0003); no row: not opted in.
payload_consents = Table(
    "payload_consents",
    metadata,
    Column("tenant_id", String(ID_LENGTH), primary_key=True),
    Column("enabled", Boolean, nullable=False),
    Column("purpose", String(NAME_LENGTH), nullable=True),
    Column("retention_days", Integer, nullable=True),
    Column("updated_at", UtcDateTime(), nullable=False),
)


# Predictions recorded for feedback (0004): one row per request row of a model with
# ``feedback`` enabled. ``request_id`` is the transport request id, ``inference_id`` the
# request's OIP id; ``subject`` a keyed pseudonym, never the id itself.
predictions = Table(
    "predictions",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("row", Integer, primary_key=True),
    Column("tenant_id", String(ID_LENGTH), nullable=False),
    Column("request_id", String(ID_LENGTH), nullable=False),
    Column("inference_id", String(ID_LENGTH), nullable=True),
    Column("model", String(NAME_LENGTH), nullable=False),
    Column("version", String(ID_LENGTH), nullable=False),
    Column("subject", String(64), nullable=True, index=True),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("expires_at", UtcDateTime(), nullable=False, index=True),
    Column("predicted", BigInteger, nullable=True),
    Column("score", Float, nullable=True),
    # 0009: the row's protected attribute values, JSON {attribute: value} (docs/fairness.md)
    Column("protected_groups", Text, nullable=True),
    Index("ix_predictions_tenant_id_request_id", "tenant_id", "request_id"),
    Index("ix_predictions_tenant_id_inference_id", "tenant_id", "inference_id"),
    Index("ix_predictions_model_version_created_at", "model", "version", "created_at"),
)

# Ground truth for one prediction row (0004); deleted with its prediction.
prediction_feedback = Table(
    "prediction_feedback",
    metadata,
    Column("prediction_id", String(64), primary_key=True),
    Column("row", Integer, primary_key=True),
    Column("label", BigInteger, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
)

# Each model's deployment (0005): ``spec`` is the document of
# ``core.deployments.deployment_to_document``; a write names the revision it replaces.
deployments = Table(
    "deployments",
    metadata,
    Column("model", String(NAME_LENGTH), primary_key=True),
    Column("revision", Integer, nullable=False),
    Column("spec", _json(), nullable=False),
    Column("updated_at", UtcDateTime(), nullable=False),
    Column("updated_by", String(NAME_LENGTH), nullable=False),
)


# Asynchronous jobs (0006): one row per job; ``state`` and ``lease_expires_at`` are what
# workers claim by (see storage/sql/jobs.py), ``worker`` holds the lease. The owner's
# scopes are kept so that a worker runs the job with the rights it was submitted with.
jobs = Table(
    "jobs",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(ID_LENGTH), nullable=False),
    Column("owner_subject", String(NAME_LENGTH), nullable=False),
    Column("owner_kind", String(16), nullable=False),
    Column("owner_scopes", _json(), nullable=False),
    Column("model", String(NAME_LENGTH), nullable=False),
    Column("version", String(ID_LENGTH), nullable=True),
    Column("state", String(16), nullable=False),
    Column("priority", Integer, nullable=False),
    Column("total", Integer, nullable=False),
    Column("completed", Integer, nullable=False),
    Column("failed", Integer, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("max_attempts", Integer, nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    # a queued job is not claimed before this (backoff after a failed attempt)
    Column("available_at", UtcDateTime(), nullable=False),
    Column("started_at", UtcDateTime(), nullable=True),
    Column("finished_at", UtcDateTime(), nullable=True),
    Column("worker", String(ID_LENGTH), nullable=True),
    Column("lease_expires_at", UtcDateTime(), nullable=True),
    Column("error", String(2000), nullable=True),
    Column("webhook_url", String(2048), nullable=True),
    Column("idempotency_key", String(255), nullable=True),
    Column("request_hash", String(64), nullable=False),
    Index("ix_jobs_state_priority_id", "state", "priority", "id"),
    Index("ix_jobs_tenant_id_id", "tenant_id", "id"),
    Index("ix_jobs_tenant_id_idempotency_key", "tenant_id", "idempotency_key", unique=True),
    Index("ix_jobs_finished_at", "finished_at"),  # 0008: the retention purge
)

# One item of a job (0006): its OIP request, and its result once one was written
# (``ok`` NULL: none yet). A result is written once: the update requires ``ok IS NULL``.
job_items = Table(
    "job_items",
    metadata,
    Column("job_id", String(64), primary_key=True),
    Column("item", Integer, primary_key=True),
    Column("request", _json(), nullable=False),
    Column("ok", Boolean, nullable=True),
    Column("response", _json(), nullable=True),
    Column("error", _json(), nullable=True),
    Column("completed_at", UtcDateTime(), nullable=True),
)

# Idempotency keys of side-effecting admin requests (0007): one row per (caller, key);
# ``status`` NULL while the first request runs. ``body`` is the answer, sealed with the
# payload cipher (``body_key``, ``body_nonce``) when it held a secret; ``withheld``: the
# answer less its secret (no cipher). Rows older than a day are purged
# (core/admission/idempotency.py).
idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("owner", String(512), primary_key=True),
    Column("key", String(255), primary_key=True),
    Column("method", String(16), nullable=False),
    Column("path", String(2048), nullable=False),
    Column("request_hash", String(64), nullable=False),
    Column("created_at", UtcDateTime(), nullable=False),
    Column("status", Integer, nullable=True),
    Column("content_type", String(128), nullable=True),
    Column("body", LargeBinary, nullable=True),
    Column("body_key", String(64), nullable=True),
    Column("body_nonce", LargeBinary, nullable=True),
    Column("withheld", Boolean, nullable=False),
    Index("ix_idempotency_keys_created_at", "created_at"),
)
