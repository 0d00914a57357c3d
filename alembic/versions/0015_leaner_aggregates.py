"""leaner aggregates: counters by day where no report reads the hour; ids and an index nothing read

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06 20:00:00.000000

- ``metric_counters``: every metric but those read by hour (``events``,
  ``payments_processed``, ``payments_failed``) is summed into one row a day, stamped
  with the day's midnight; reports ask for whole days, so they read the same sums.
  ``events`` (by hour and type before) becomes one row an hour for all types, and
  ``events_by_type`` one row a day per type.
  The table is rebuilt for that, with its 8-byte columns first (no alignment padding
  after the text columns).
- ``orders``: ``customer_id``, ``user_id`` and ``location_id`` dropped (no report
  read them).
- ``payments``: ``order_id`` and its index dropped (no report read it, no query used
  the index: refunds carry their order's id).
- ``user_sessions``: ``id`` (and the primary key), ``event_id`` and ``user_id``
  dropped: the sessions' percentiles read only the time and the duration, and the
  rows are appended and deleted by time.

On PostgreSQL a dropped column keeps its bytes in the rows stored before until they
are rewritten (``VACUUM FULL <table>``, in a quiet hour); rows stored after take none.

The downgrade brings the columns, keys and the index back; the dropped ids are gone
(the columns come back empty: null, ``''`` for ``user_sessions.event_id``, which may
not be null, and new row ids for the sessions), and counters stay by day, which every
report reads alike.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The metrics some report reads by hour (analytics.ingest.changes.HOURLY_METRICS then).
_HOURLY = ("events", "payments_processed", "payments_failed")


def upgrade() -> None:
    _counters_by_day()
    with op.batch_alter_table("orders") as batch:
        batch.drop_column("customer_id")
        batch.drop_column("user_id")
        batch.drop_column("location_id")
    op.drop_index("ix_payments_tenant_id_order_id", table_name="payments")
    with op.batch_alter_table("payments") as batch:
        batch.drop_column("order_id")
    with op.batch_alter_table("user_sessions") as batch:
        batch.drop_constraint("pk_user_sessions", type_="primary")
        batch.drop_column("id")
        batch.drop_column("event_id")
        batch.drop_column("user_id")


def _counters_by_day() -> None:
    """Copy the counters into a new table, the daily metrics' hours summed into their day."""
    postgresql = op.get_bind().dialect.name == "postgresql"
    op.rename_table("metric_counters", "metric_counters_hourly")
    if postgresql:
        # The primary key's index is named after the table: the new table's takes the name.
        op.execute("ALTER INDEX pk_metric_counters RENAME TO pk_metric_counters_hourly")
    op.create_table(
        "metric_counters",
        sa.Column("hour", sa.DateTime(), nullable=False),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.Column("total", sa.BigInteger(), nullable=False),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("dimension", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint(
            "tenant_id", "metric", "hour", "dimension", name=op.f("pk_metric_counters")
        ),
    )
    # SQLite keeps a DateTime as text, 'YYYY-MM-DD HH:MM:SS.ffffff'.
    midnight = (
        "date_trunc('day', hour)" if postgresql else "substr(hour, 1, 10) || ' 00:00:00.000000'"
    )
    hourly = ", ".join(f"'{metric}'" for metric in _HOURLY)
    bucket = f"CASE WHEN metric IN ({hourly}) THEN hour ELSE {midnight} END"
    columns = "hour, count, total, tenant_id, metric, dimension"
    op.execute(
        f"""
        INSERT INTO metric_counters ({columns})
        SELECT {bucket}, sum(count), sum(total), tenant_id, metric, dimension
        FROM metric_counters_hourly WHERE metric <> 'events'
        GROUP BY tenant_id, metric, {bucket}, dimension
        """
    )
    op.execute(
        f"""
        INSERT INTO metric_counters ({columns})
        SELECT hour, sum(count), sum(total), tenant_id, 'events', ''
        FROM metric_counters_hourly WHERE metric = 'events'
        GROUP BY tenant_id, hour
        """
    )
    # A type-less ``events`` row is one this revision made (a database upgraded, taken
    # back down and up again): its types are already in ``events_by_type``.
    op.execute(
        f"""
        INSERT INTO metric_counters ({columns})
        SELECT {midnight}, sum(count), sum(total), tenant_id, 'events_by_type', dimension
        FROM metric_counters_hourly WHERE metric = 'events' AND dimension <> ''
        GROUP BY tenant_id, {midnight}, dimension
        """
    )
    op.drop_table("metric_counters_hourly")


def downgrade() -> None:
    _sessions_with_ids()
    with op.batch_alter_table("payments") as batch:
        batch.add_column(sa.Column("order_id", sa.String(length=128), nullable=True))
    op.create_index(
        op.f("ix_payments_tenant_id_order_id"), "payments", ["tenant_id", "order_id"], unique=False
    )
    with op.batch_alter_table("orders") as batch:
        batch.add_column(sa.Column("customer_id", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("user_id", sa.String(length=128), nullable=True))
        batch.add_column(sa.Column("location_id", sa.String(length=128), nullable=True))


def _sessions_with_ids() -> None:
    """The sessions copied into the table of 0013 (a row id, the two ids), which takes the name."""
    op.rename_table("user_sessions", "user_sessions_lean")
    op.drop_index("ix_user_sessions_tenant_id_ended_at", table_name="user_sessions_lean")
    op.create_table(
        "user_sessions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.Column("user_id", sa.String(length=128), nullable=True),
        sa.Column("ended_at", sa.DateTime(), nullable=False),
        sa.Column("duration_seconds", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_sessions")),
    )
    op.create_index(
        op.f("ix_user_sessions_tenant_id_ended_at"),
        "user_sessions",
        ["tenant_id", "ended_at"],
        unique=False,
    )
    op.execute(
        "INSERT INTO user_sessions (tenant_id, event_id, ended_at, duration_seconds) "
        "SELECT tenant_id, '', ended_at, duration_seconds FROM user_sessions_lean "
        "ORDER BY ended_at"
    )
    op.drop_table("user_sessions_lean")
