"""warehouse: how far each warehouse sink has received events, and the rows it refused

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06 14:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "warehouse_sinks",
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("delivered_id", sa.BigInteger(), nullable=False),
        sa.Column("safe_id", sa.BigInteger(), nullable=False),
        sa.Column("fence_id", sa.BigInteger(), nullable=True),
        sa.Column("fence_writers", sa.JSON(), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(), nullable=True),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("retry_at", sa.DateTime(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("delivered_at", sa.DateTime(), nullable=True),
        sa.Column("rows_delivered", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_warehouse_sinks")),
    )
    op.create_table(
        "warehouse_rejects",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sink", sa.String(length=255), nullable=False),
        sa.Column("event_row_id", sa.BigInteger(), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("reason", sa.String(length=64), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("rejected_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_warehouse_rejects")),
    )
    op.create_index(
        op.f("ix_warehouse_rejects_sink_event_row_id"),
        "warehouse_rejects",
        ["sink", "event_row_id"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_warehouse_rejects_sink_event_row_id"), table_name="warehouse_rejects")
    op.drop_table("warehouse_rejects")
    op.drop_table("warehouse_sinks")
