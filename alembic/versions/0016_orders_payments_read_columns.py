"""orders, payments and product sales keep only what reports read; wider columns first

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-07 00:00:00.000000

- ``orders``: ``status``, ``status_at``, ``total_amount``, ``items_count``,
  ``cancelled_at`` and ``fulfilled_at`` dropped: no report read them (the counters and
  ``daily_revenue`` hold what reports read of orders), and every later event of an
  order rewrote its row for them (a dead row version and new index entries each).
  What is left: ``created_at``, ``paid_at`` (conversion), ``currency`` (a refund's).
- ``payments``: ``status``, ``status_at``, ``amount``, ``payment_method``,
  ``failure_reason`` and ``refunded_amount`` dropped: reports read only a payment's
  ``currency``, by key, for a refund whose order is unknown.

- ``product_sales``: ``sku`` dropped (no report read it; the stock levels keep theirs).
- ``user_activity.events`` and ``login_locations.logins`` dropped: no report read how
  many events a user had in an hour (``metric_counters`` counts the hour's events), and
  a day's logins are summed from ``city_logins`` (which every login counts too); a row
  of either table now says only that the user was there, and is never rewritten.

These tables, and ``user_activity`` and ``user_hours``, are rebuilt (copied into a
new table that takes the name) with their 8-byte columns first, then the 4- and
2-byte ones, then the text (PostgreSQL pads a column to its alignment after a text
column: 8 bytes a row less for ``product_sales``, ``user_activity`` and
``user_hours``), and without the dropped columns' null bits. Their keys and indexes
are unchanged.

The downgrade brings the dropped columns back, empty (``refunded_amount`` 0): the
values are gone from these tables, and the raw events still hold them (``analytics
rebuild`` at the older revision recomputes them). ``user_activity.events`` comes back
1 a row, and ``login_locations.logins`` 1 a row with the rest of each day and place's
``city_logins`` on its first user's row: every sum 0015's reports read (a day's
logins) is exact again. The columns' order stays.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(length=128)

#: The columns the downgrade brings back, as they were at 0015 (all may be null but
#: ``refunded_amount``, which comes back 0).
_ORDER_COLUMNS = (
    ("status", sa.String(length=64)),
    ("status_at", sa.DateTime()),
    ("total_amount", sa.BigInteger()),
    ("items_count", sa.Integer()),
    ("cancelled_at", sa.DateTime()),
    ("fulfilled_at", sa.DateTime()),
)
_PAYMENT_COLUMNS = (
    ("status", sa.String(length=32)),
    ("status_at", sa.DateTime()),
    ("amount", sa.BigInteger()),
    ("payment_method", sa.String(length=64)),
    ("failure_reason", sa.String(length=255)),
)


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    _set_aside("orders", postgresql)
    op.drop_index("ix_orders_tenant_id_created_at", table_name="orders_0015")
    op.create_table(
        "orders",
        sa.Column("created_at", sa.DateTime(), nullable=True),
        sa.Column("paid_at", sa.DateTime(), nullable=True),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("order_id", ID, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "order_id", name=op.f("pk_orders")),
    )
    _copy("orders", "created_at, paid_at, tenant_id, order_id, currency")
    op.create_index(
        op.f("ix_orders_tenant_id_created_at"), "orders", ["tenant_id", "created_at"], unique=False
    )
    _set_aside("payments", postgresql)
    op.create_table(
        "payments",
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("payment_id", ID, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=True),
        sa.PrimaryKeyConstraint("tenant_id", "payment_id", name=op.f("pk_payments")),
    )
    # A row without a currency answers a reader as no row does: the writer keeps none.
    _copy("payments", "tenant_id, payment_id, currency", "WHERE currency IS NOT NULL")
    _set_aside("product_sales", postgresql)
    op.create_table(
        "product_sales",
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.Column("revenue", sa.BigInteger(), nullable=False),
        sa.Column("last_sold_at", sa.DateTime(), nullable=False),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("product_id", ID, nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("location_id", ID, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.PrimaryKeyConstraint(
            "tenant_id",
            "day",
            "product_id",
            "currency",
            "location_id",
            name=op.f("pk_product_sales"),
        ),
    )
    _copy(
        "product_sales",
        "units, revenue, last_sold_at, tenant_id, day, product_id, currency, location_id, name",
    )
    _set_aside("user_activity", postgresql)
    op.drop_index("ix_user_activity_tenant_id_user_id", table_name="user_activity_0015")
    op.create_table(
        "user_activity",
        sa.Column("hour", sa.DateTime(), nullable=False),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "hour", "user_id", name=op.f("pk_user_activity")),
    )
    _copy("user_activity", "hour, tenant_id, user_id")
    op.create_index(
        op.f("ix_user_activity_tenant_id_user_id"),
        "user_activity",
        ["tenant_id", "user_id"],
        unique=False,
    )
    _set_aside("login_locations", postgresql)
    op.create_table(
        "login_locations",
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("country", sa.String(length=64), nullable=False),
        sa.Column("city", sa.String(length=128), nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "day", "country", "city", "user_id", name=op.f("pk_login_locations")
        ),
    )
    _copy("login_locations", "tenant_id, day, country, city, user_id")
    _set_aside("user_hours", postgresql)
    op.create_table(
        "user_hours",
        sa.Column("first_day", sa.Date(), nullable=False),
        sa.Column("last_day", sa.Date(), nullable=False),
        sa.Column("hour_of_day", sa.SmallInteger(), nullable=False),
        sa.Column("tenant_id", ID, nullable=False),
        sa.Column("user_id", ID, nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "hour_of_day", "user_id", name=op.f("pk_user_hours")),
    )
    _copy("user_hours", "first_day, last_day, hour_of_day, tenant_id, user_id")


def _set_aside(table: str, postgresql: bool) -> None:
    op.rename_table(table, f"{table}_0015")
    if postgresql:
        # The primary key's index is named after the table: the new table's takes the name.
        op.execute(f"ALTER INDEX pk_{table} RENAME TO pk_{table}_0015")


def _copy(table: str, columns: str, where: str = "") -> None:
    op.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table}_0015 {where}")
    op.drop_table(f"{table}_0015")


def downgrade() -> None:
    with op.batch_alter_table("user_activity") as batch:
        batch.add_column(sa.Column("events", sa.BigInteger(), nullable=False, server_default="1"))
    with op.batch_alter_table("login_locations") as batch:
        batch.add_column(sa.Column("logins", sa.BigInteger(), nullable=False, server_default="1"))
    place = (
        "{t}.tenant_id = login_locations.tenant_id AND {t}.day = login_locations.day "
        "AND {t}.country = login_locations.country AND {t}.city = login_locations.city"
    )
    op.execute(
        f"""
        UPDATE login_locations SET logins = 1
            + coalesce((SELECT c.logins FROM city_logins c WHERE {place.format(t="c")}), 0)
            - (SELECT count(*) FROM login_locations o WHERE {place.format(t="o")})
        WHERE user_id = (SELECT min(f.user_id) FROM login_locations f WHERE {place.format(t="f")})
        """
    )
    for table in ("user_activity", "login_locations"):
        column = "events" if table == "user_activity" else "logins"
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, server_default=None)
    with op.batch_alter_table("product_sales") as batch:
        batch.add_column(sa.Column("sku", ID, nullable=True))
    with op.batch_alter_table("orders") as batch:
        for name, type_ in _ORDER_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
    with op.batch_alter_table("payments") as batch:
        for name, type_ in _PAYMENT_COLUMNS:
            batch.add_column(sa.Column(name, type_, nullable=True))
        batch.add_column(
            sa.Column("refunded_amount", sa.BigInteger(), nullable=False, server_default="0")
        )
    with op.batch_alter_table("payments") as batch:
        batch.alter_column("refunded_amount", server_default=None)
