"""Asynchronous jobs: the queue (``jobs``) and each job's items and results (``job_items``).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-20
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def _json() -> sa.JSON:
    return sa.JSON(none_as_null=True)


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("owner_subject", sa.String(256), nullable=False),
        sa.Column("owner_kind", sa.String(16), nullable=False),
        sa.Column("owner_scopes", _json(), nullable=False),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("version", sa.String(128), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("completed", sa.Integer(), nullable=False),
        sa.Column("failed", sa.Integer(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("available_at", _utc(), nullable=False),
        sa.Column("started_at", _utc(), nullable=True),
        sa.Column("finished_at", _utc(), nullable=True),
        sa.Column("worker", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", _utc(), nullable=True),
        sa.Column("error", sa.String(2000), nullable=True),
        sa.Column("webhook_url", sa.String(2048), nullable=True),
        sa.Column("idempotency_key", sa.String(255), nullable=True),
        sa.Column("request_hash", sa.String(64), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_jobs"),
    )
    op.create_index("ix_jobs_state_priority_id", "jobs", ["state", "priority", "id"])
    op.create_index("ix_jobs_tenant_id_id", "jobs", ["tenant_id", "id"])
    op.create_index(
        "ix_jobs_tenant_id_idempotency_key",
        "jobs",
        ["tenant_id", "idempotency_key"],
        unique=True,
    )
    op.create_table(
        "job_items",
        sa.Column("job_id", sa.String(64), nullable=False),
        sa.Column("item", sa.Integer(), nullable=False),
        sa.Column("request", _json(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=True),
        sa.Column("response", _json(), nullable=True),
        sa.Column("error", _json(), nullable=True),
        sa.Column("completed_at", _utc(), nullable=True),
        sa.PrimaryKeyConstraint("job_id", "item", name="pk_job_items"),
    )


def downgrade() -> None:
    op.drop_table("job_items")
    op.drop_index("ix_jobs_tenant_id_idempotency_key", table_name="jobs")
    op.drop_index("ix_jobs_tenant_id_id", table_name="jobs")
    op.drop_index("ix_jobs_state_priority_id", table_name="jobs")
    op.drop_table("jobs")
