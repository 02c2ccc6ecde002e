"""Explanations (docs/explanations.md): ``usage_records.explanations``, the rows explained,
a usage unit of their own; ``plans.explanations_per_minute``, a plan's limit on them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "usage_records",
        sa.Column("explanations", sa.BigInteger(), nullable=False, server_default="0"),
    )
    op.add_column("plans", sa.Column("explanations_per_minute", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("plans") as batch:
        batch.drop_column("explanations_per_minute")
    with op.batch_alter_table("usage_records") as batch:
        batch.drop_column("explanations")
