"""Payload logging: sealed inference payloads, and tenants' consent to them.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "payload_logs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("key_id", sa.String(128), nullable=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("subject", sa.String(64), nullable=True),
        sa.Column("purpose", sa.String(256), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("expires_at", _utc(), nullable=False),
        sa.Column("redactions", sa.JSON(none_as_null=True), nullable=False),
        sa.Column("cipher_key", sa.String(64), nullable=False),
        sa.Column("nonce", sa.LargeBinary(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_payload_logs"),
    )
    op.create_index("ix_payload_logs_subject", "payload_logs", ["subject"])
    op.create_index("ix_payload_logs_expires_at", "payload_logs", ["expires_at"])
    op.create_index(
        "ix_payload_logs_tenant_id_created_at", "payload_logs", ["tenant_id", "created_at"]
    )
    op.create_index("ix_payload_logs_created_at", "payload_logs", ["created_at"])
    op.create_table(
        "payload_consents",
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("purpose", sa.String(256), nullable=True),
        sa.Column("retention_days", sa.Integer(), nullable=True),
        sa.Column("updated_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", name="pk_payload_consents"),
    )


def downgrade() -> None:
    op.drop_table("payload_consents")
    op.drop_table("payload_logs")
