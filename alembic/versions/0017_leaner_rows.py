"""leaner rows: counts and an sku no report read dropped; wider columns first

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-07 00:00:00.000000

- ``product_sales``: ``sku`` dropped (no report read it; the stock levels keep theirs).
- ``user_activity.events`` and ``login_locations.logins`` dropped: no report read how
  many events a user had in an hour (``metric_counters`` counts the hour's events), and
  a day's logins are summed from ``city_logins`` (which every login counts too); a row
  of either table now says only that the user was there, and is never rewritten.

These tables, and ``user_hours``, are rebuilt (copied into a new table that takes the
name) without the dropped columns' null bits, and with their 8-byte columns first,
then the 4- and 2-byte ones, then the text: PostgreSQL pads a column to its alignment
after a text column, and a row is stored in multiples of 8 bytes (8 bytes a row less
for ``product_sales``, ``user_activity`` and ``user_hours``). Their keys and indexes
are unchanged. Entity state (``orders``, ``payments``, stock levels) keeps every column.

On PostgreSQL, ``orders`` and ``product_sales`` (their rows are updated by later
batches) fill their pages to 80% (``fillfactor``), leaving room for HOT updates; it
applies to the pages written from now on.

The downgrade brings the dropped columns back: ``product_sales.sku`` empty (the raw
events hold it; ``analytics rebuild`` at the older revision recomputes it),
``user_activity.events`` 1 a row, and ``login_locations.logins`` 1 a row with the rest
of each day and place's ``city_logins`` on its first user's row: every sum 0015's
reports read (a day's logins) is exact again. The columns' order stays.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ID = sa.String(length=128)

#: The tables whose rows are updated across batches, and the share of a page new rows
#: fill: the rest is room for an update's new version on the row's own page (a HOT
#: update: no new index entries, the old version pruned in place). PostgreSQL only.
_ROOM_FOR_UPDATES = ("orders", "product_sales")
FILLFACTOR = 80


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
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
    if postgresql:
        for table in _ROOM_FOR_UPDATES:
            op.execute(f"ALTER TABLE {table} SET (fillfactor = {FILLFACTOR})")


def _set_aside(table: str, postgresql: bool) -> None:
    op.rename_table(table, f"{table}_0015")
    if postgresql:
        # The primary key's index is named after the table: the new table's takes the name.
        op.execute(f"ALTER INDEX pk_{table} RENAME TO pk_{table}_0015")


def _copy(table: str, columns: str) -> None:
    op.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {table}_0015")
    op.drop_table(f"{table}_0015")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table in _ROOM_FOR_UPDATES:
            op.execute(f"ALTER TABLE {table} RESET (fillfactor)")
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
