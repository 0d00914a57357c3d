"""sales and stock summaries: product sales and stock by month, revenue by day, refund currencies

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 17:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa

from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Rows inserted per statement while filling the monthly table.
_CHUNK = 1000


def upgrade() -> None:
    op.create_table(
        "product_sales_monthly",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("product_id", sa.String(length=128), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("location_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("name_at", sa.DateTime(), nullable=True),
        sa.Column("units", sa.BigInteger(), nullable=False),
        sa.Column("revenue", sa.BigInteger(), nullable=False),
        sa.Column("last_sold_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id",
            "month",
            "product_id",
            "currency",
            "location_id",
            name=op.f("pk_product_sales_monthly"),
        ),
    )
    op.create_table(
        "daily_revenue",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("orders", sa.BigInteger(), nullable=False),
        sa.Column("revenue", sa.BigInteger(), nullable=False),
        sa.Column("refunds", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "day", "currency", name=op.f("pk_daily_revenue")),
    )
    with op.batch_alter_table("refunds") as batch:
        batch.add_column(sa.Column("currency", sa.String(length=3), nullable=True))
    # Refunds stored before this revision: their order's currency where the order is known
    # (the writer does the same from now on); the rest stay null and are resolved when read.
    op.execute(
        """
        UPDATE refunds SET currency = (
            SELECT orders.currency FROM orders
            WHERE orders.tenant_id = refunds.tenant_id AND orders.order_id = refunds.order_id
        )
        WHERE order_id IS NOT NULL
        """
    )
    # Only the unresolved ones are read by time now (after the update: the index stays small).
    op.drop_index("ix_refunds_tenant_id_refunded_at", table_name="refunds")
    op.create_index(
        "ix_refunds_unresolved",
        "refunds",
        ["tenant_id", "refunded_at"],
        postgresql_where=sa.text("currency IS NULL"),
        sqlite_where=sa.text("currency IS NULL"),
    )
    # Revenue by day from the hourly revenue counters, then the resolved refunds.
    op.execute(
        """
        INSERT INTO daily_revenue (tenant_id, day, currency, orders, revenue, refunds)
        SELECT tenant_id, date(hour), dimension, sum(count), sum(total), 0
        FROM metric_counters WHERE metric = 'revenue'
        GROUP BY tenant_id, date(hour), dimension
        """
    )
    op.execute(
        """
        INSERT INTO daily_revenue (tenant_id, day, currency, orders, revenue, refunds)
        SELECT tenant_id, date(refunded_at), currency, 0, 0, sum(amount)
        FROM refunds WHERE currency IS NOT NULL
        GROUP BY tenant_id, date(refunded_at), currency
        ON CONFLICT (tenant_id, day, currency) DO UPDATE
        SET refunds = daily_revenue.refunds + excluded.refunds
        """
    )
    _fill_months()
    op.create_table(
        "stock_monthly",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("product_id", sa.String(length=128), nullable=False),
        sa.Column("location_id", sa.String(length=128), nullable=False),
        sa.Column("month", sa.Date(), nullable=False),
        sa.Column("low_stock", sa.Integer(), nullable=False),
        sa.Column("out_of_stock", sa.Integer(), nullable=False),
        sa.Column("level_sum", sa.BigInteger(), nullable=False),
        sa.Column("levels", sa.Integer(), nullable=False),
        sa.Column("on_hand", sa.BigInteger(), nullable=True),
        sa.Column("first_out_at", sa.DateTime(), nullable=True),
        sa.Column("first_restock_at", sa.DateTime(), nullable=True),
        sa.Column("cycles", sa.Integer(), nullable=False),
        sa.Column("cycle_micros", sa.BigInteger(), nullable=False),
        sa.Column("open_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint(
            "tenant_id", "product_id", "location_id", "month", name=op.f("pk_stock_monthly")
        ),
    )
    op.create_index(
        "ix_inventory_movements_tenant_id_occurred_at",
        "inventory_movements",
        ["tenant_id", "occurred_at"],
    )
    # Days with stock movements: marked dirty, so the next refresh (beat's, or the first
    # report's) fills the monthly stock rollup.
    op.execute(
        """
        INSERT INTO rollup_dirty_days (tenant_id, day, generation)
        SELECT DISTINCT tenant_id, date(occurred_at), 1 FROM inventory_movements
        WHERE true
        ON CONFLICT (tenant_id, day) DO UPDATE
        SET generation = rollup_dirty_days.generation + 1
        """
    )


def _fill_months() -> None:
    """Sum the existing daily product sales by month (the name: the latest day's carrying one)."""
    bind = op.get_bind()
    text_columns = ("tenant_id", "product_id", "currency", "location_id", "name")

    def table(name: str, *dated: sa.ColumnClause[Any]) -> sa.TableClause:
        return sa.table(
            name,
            *(sa.column(column, sa.String()) for column in text_columns),
            *dated,
            sa.column("units", sa.BigInteger()),
            sa.column("revenue", sa.BigInteger()),
            sa.column("last_sold_at", sa.DateTime()),
        )

    sales = table("product_sales", sa.column("day", sa.Date()))
    monthly = table(
        "product_sales_monthly", sa.column("month", sa.Date()), sa.column("name_at", sa.DateTime())
    )
    key_columns = text_columns[:4]
    ordered = sa.select(sales).order_by(*(sales.c[name] for name in key_columns), sales.c.day)
    pending: list[dict[str, Any]] = []
    row: dict[str, Any] | None = None
    for sale in bind.execute(ordered).mappings():
        month = sale["day"].replace(day=1)
        key = (month, *(sale[name] for name in key_columns))
        if row is None or row["key"] != key:
            if row is not None:
                pending.append(row)
                if len(pending) >= _CHUNK:
                    _insert(bind, monthly, pending)
            row = {"key": key, "month": month, "name": None, "name_at": None, "units": 0}
            row.update({name: sale[name] for name in key_columns})
            row.update(revenue=0, last_sold_at=sale["last_sold_at"])
        row["units"] += sale["units"]
        row["revenue"] += sale["revenue"]
        row["last_sold_at"] = max(row["last_sold_at"], sale["last_sold_at"])
        if sale["name"] is not None:
            row["name"], row["name_at"] = sale["name"], sale["last_sold_at"]
    if row is not None:
        pending.append(row)
    _insert(bind, monthly, pending)


def _insert(bind: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    if rows:
        bind.execute(sa.insert(table), [{k: v for k, v in r.items() if k != "key"} for r in rows])
        rows.clear()


def downgrade() -> None:
    op.drop_index("ix_refunds_unresolved", table_name="refunds")
    op.create_index("ix_refunds_tenant_id_refunded_at", "refunds", ["tenant_id", "refunded_at"])
    op.drop_index("ix_inventory_movements_tenant_id_occurred_at", table_name="inventory_movements")
    with op.batch_alter_table("refunds") as batch:
        batch.drop_column("currency")
    op.drop_table("stock_monthly")
    op.drop_table("daily_revenue")
    op.drop_table("product_sales_monthly")
