"""operations rollup: each day's p50 and p95 response time, so the report reads no raw events

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 15:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "operations_daily",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("responses", sa.Integer(), nullable=False),
        sa.Column("p50_response_ms", sa.BigInteger(), nullable=False),
        sa.Column("p95_response_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "day", name=op.f("pk_operations_daily")),
    )
    # Days stored before this revision: mark every day with events dirty, so the next
    # refresh (beat's, or the first report's) fills the rollup from the raw events.
    op.execute(
        """
        INSERT INTO rollup_dirty_days (tenant_id, day, generation)
        SELECT DISTINCT tenant_id, date(occurred_at), 1 FROM events
        WHERE response_time_ms IS NOT NULL
        ON CONFLICT (tenant_id, day) DO UPDATE
        SET generation = rollup_dirty_days.generation + 1
        """
    )


def downgrade() -> None:
    op.drop_table("operations_daily")
