"""report rollups: retention cohorts, conversion and logins per day

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06 17:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _day_table(name: str, *columns: sa.Column) -> None:
    op.create_table(
        name,
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *columns,
        sa.PrimaryKeyConstraint("tenant_id", "day", name=op.f(f"pk_{name}")),
    )


def upgrade() -> None:
    _day_table("cohort_sizes", sa.Column("users", sa.Integer(), nullable=False))
    op.create_table(
        "cohort_weeks",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("cohort_day", sa.Date(), nullable=False),
        sa.Column("active_week", sa.Date(), nullable=False),
        sa.Column("users", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "cohort_day", "active_week", name=op.f("pk_cohort_weeks")
        ),
    )
    _day_table(
        "daily_conversion",
        sa.Column("orders", sa.Integer(), nullable=False),
        sa.Column("paid_orders", sa.Integer(), nullable=False),
        sa.Column("abandoned", sa.Integer(), nullable=False),
    )
    _day_table(
        "daily_logins",
        sa.Column("logins", sa.BigInteger(), nullable=False),
        sa.Column("users", sa.Integer(), nullable=False),
    )
    # Days stored before this revision: mark every registration, order and login day
    # dirty, so the next refresh (beat's, or the first report's) fills the rollups. A
    # registration day recomputes every week its users were active in.
    op.execute(
        """
        INSERT INTO rollup_dirty_days (tenant_id, day, generation)
        SELECT tenant_id, day, 1 FROM (
            SELECT DISTINCT tenant_id, date(registered_at) AS day FROM user_cohorts
            UNION
            SELECT DISTINCT tenant_id, date(created_at) AS day FROM orders
            WHERE created_at IS NOT NULL
            UNION
            SELECT DISTINCT tenant_id, day FROM login_locations
        ) AS counted
        WHERE true
        ON CONFLICT (tenant_id, day) DO UPDATE
        SET generation = rollup_dirty_days.generation + 1
        """
    )


def downgrade() -> None:
    for name in ("daily_logins", "daily_conversion", "cohort_weeks", "cohort_sizes"):
        op.drop_table(name)
