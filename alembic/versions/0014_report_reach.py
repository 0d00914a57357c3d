"""report reach: distinct users as spans of days (heatmap, geo), logins per place, all events,
the restock cycle each stock month closes (inventory over all history)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-06 20:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _span_columns() -> tuple[sa.Column, sa.Column]:
    return (
        sa.Column("first_day", sa.Date(), nullable=False),
        sa.Column("last_day", sa.Date(), nullable=False),
    )


def upgrade() -> None:
    op.create_table(
        "user_hours",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("hour_of_day", sa.SmallInteger(), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        *_span_columns(),
        sa.PrimaryKeyConstraint("tenant_id", "hour_of_day", "user_id", name=op.f("pk_user_hours")),
    )
    op.create_table(
        "city_users",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("country", sa.String(length=64), nullable=False),
        sa.Column("city", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=False),
        *_span_columns(),
        sa.PrimaryKeyConstraint(
            "tenant_id", "country", "city", "user_id", name=op.f("pk_city_users")
        ),
    )
    op.create_table(
        "city_logins",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("country", sa.String(length=64), nullable=False),
        sa.Column("city", sa.String(length=128), nullable=False),
        sa.Column("logins", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "day", "country", "city", name=op.f("pk_city_logins")),
    )
    # What was stored before this revision, summarised as the writer does from now on, so
    # that an upgraded deployment's reports stay exact. The hour of a naive UTC timestamp:
    if op.get_bind().dialect.name == "sqlite":
        hour = "CAST(strftime('%H', hour) AS INTEGER)"
    else:
        hour = "CAST(EXTRACT(hour FROM hour) AS INTEGER)"
    op.execute(
        f"""
        INSERT INTO user_hours (tenant_id, hour_of_day, user_id, first_day, last_day)
        SELECT tenant_id, {hour}, user_id, min(date(hour)), max(date(hour))
        FROM user_activity
        GROUP BY tenant_id, {hour}, user_id
        """
    )
    op.execute(
        """
        INSERT INTO city_users (tenant_id, country, city, user_id, first_day, last_day)
        SELECT tenant_id, country, city, user_id, min(day), max(day)
        FROM login_locations WHERE user_id <> ''
        GROUP BY tenant_id, country, city, user_id
        """
    )
    op.execute(
        """
        INSERT INTO city_logins (tenant_id, day, country, city, logins)
        SELECT tenant_id, day, country, city, sum(logins)
        FROM login_locations
        GROUP BY tenant_id, day, country, city
        """
    )
    # The cycle each restock month closes, for the inventory report over all history: the
    # days with stock movements are marked dirty, so the next refresh (beat's, or the first
    # stock report's) recomputes their months and sets it.
    with op.batch_alter_table("stock_monthly") as batch:
        batch.add_column(sa.Column("closes_micros", sa.BigInteger(), nullable=True))
    op.execute(
        """
        INSERT INTO rollup_dirty_days (tenant_id, day, generation)
        SELECT DISTINCT tenant_id, date(occurred_at), 1 FROM inventory_movements
        WHERE true
        ON CONFLICT (tenant_id, day) DO UPDATE
        SET generation = rollup_dirty_days.generation + 1
        """
    )
    # Every event of an hour in one counter (analytics.ingest.changes.ALL_EVENTS, the
    # ``events`` counter with no type): revision 0015 makes it so, from these rows.


def downgrade() -> None:
    with op.batch_alter_table("stock_monthly") as batch:
        batch.drop_column("closes_micros")
    for name in ("city_logins", "city_users", "user_hours"):
        op.drop_table(name)
