"""Feedback: recorded predictions, and the ground truth sent back for them.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-15
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc() -> sa.DateTime:
    return sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "predictions",
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.String(128), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("inference_id", sa.String(128), nullable=True),
        sa.Column("model", sa.String(256), nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("subject", sa.String(64), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("expires_at", _utc(), nullable=False),
        sa.Column("predicted", sa.BigInteger(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", "row", name="pk_predictions"),
    )
    op.create_index("ix_predictions_subject", "predictions", ["subject"])
    op.create_index("ix_predictions_expires_at", "predictions", ["expires_at"])
    op.create_index(
        "ix_predictions_tenant_id_request_id", "predictions", ["tenant_id", "request_id"]
    )
    op.create_index(
        "ix_predictions_tenant_id_inference_id", "predictions", ["tenant_id", "inference_id"]
    )
    op.create_index(
        "ix_predictions_model_version_created_at",
        "predictions",
        ["model", "version", "created_at"],
    )
    op.create_table(
        "prediction_feedback",
        sa.Column("prediction_id", sa.String(64), nullable=False),
        sa.Column("row", sa.Integer(), nullable=False),
        sa.Column("label", sa.BigInteger(), nullable=False),
        sa.Column("created_at", _utc(), nullable=False),
        sa.PrimaryKeyConstraint("prediction_id", "row", name="pk_prediction_feedback"),
    )


def downgrade() -> None:
    op.drop_table("prediction_feedback")
    op.drop_table("predictions")
