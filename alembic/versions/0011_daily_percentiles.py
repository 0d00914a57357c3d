"""daily percentiles: each day's response times and session durations, computed once a day

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
        "daily_percentiles",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("measure", sa.String(length=32), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("p50", sa.BigInteger(), nullable=False),
        sa.Column("p90", sa.BigInteger(), nullable=False),
        sa.Column("p95", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "measure", "day", name=op.f("pk_daily_percentiles")),
    )
    # Days stored before this revision: mark every day with a measure dirty, so the next
    # refresh (beat's, or the first report's) fills the rollup from the source rows.
    op.execute(
        """
        INSERT INTO rollup_dirty_days (tenant_id, day, generation)
        SELECT tenant_id, day, 1 FROM (
            SELECT DISTINCT tenant_id, date(occurred_at) AS day FROM events
            WHERE response_time_ms IS NOT NULL
            UNION
            SELECT DISTINCT tenant_id, date(ended_at) AS day FROM user_sessions
        ) AS measured
        WHERE true
        ON CONFLICT (tenant_id, day) DO UPDATE
        SET generation = rollup_dirty_days.generation + 1
        """
    )


def downgrade() -> None:
    op.drop_table("daily_percentiles")
