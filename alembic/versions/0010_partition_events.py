"""partition events: monthly range partitions on occurred_at (PostgreSQL), the retention horizon

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-06 14:00:00.000000

PostgreSQL: ``events`` becomes ``PARTITION BY RANGE (occurred_at)``, one partition per
month that holds events plus a DEFAULT partition; every row is copied with its id, the
id sequence carries on. A unique index on a partitioned table must contain the
partition key, so the dedup index becomes ``(tenant_id, event_id, occurred_at)`` and the
primary key ``(id, occurred_at)``; the writer keeps dedup exact on ``(tenant_id,
event_id)`` across partitions itself (analytics/ingest/writer.py). The copy holds an
ACCESS EXCLUSIVE lock on ``events`` for its whole duration (measured: README,
"Retention"); the README describes the online path for large tables.

SQLite: only the dedup index changes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

import sqlalchemy as sa

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = (
    "id, tenant_id, event_id, event_type, known, user_id, occurred_at, received_at, "
    "stored_at, channel, response_time_ms, event_id_derived, timestamp_derived, payload"
)


def _next_month(month: date) -> date:
    return date(month.year + month.month // 12, month.month % 12 + 1, 1)


def _create_events(partitioning: str) -> None:
    """The events table of revision 0008's columns, partitioned or not; its id sequence kept."""
    op.execute(
        f"""
        CREATE TABLE events (
            id BIGINT NOT NULL DEFAULT nextval('events_id_seq'),
            tenant_id VARCHAR(128) NOT NULL,
            event_id VARCHAR(128) NOT NULL,
            event_type VARCHAR(128) NOT NULL,
            known BOOLEAN NOT NULL,
            user_id VARCHAR(128),
            occurred_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
            received_at TIMESTAMP WITHOUT TIME ZONE NOT NULL,
            stored_at TIMESTAMP WITHOUT TIME ZONE,
            channel VARCHAR(255) NOT NULL,
            response_time_ms DOUBLE PRECISION,
            event_id_derived BOOLEAN NOT NULL,
            timestamp_derived BOOLEAN NOT NULL,
            payload JSON NOT NULL
        ) {partitioning}
        """
    )
    op.execute("ALTER SEQUENCE events_id_seq OWNED BY events.id")


def upgrade() -> None:
    op.create_table(
        "raw_horizon",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("pruned_before", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_raw_horizon")),
    )
    if op.get_bind().dialect.name != "postgresql":
        with op.batch_alter_table("events") as batch:
            batch.drop_index("ix_events_tenant_id_event_id")
            batch.create_index(
                "ix_events_tenant_id_event_id_occurred_at",
                ["tenant_id", "event_id", "occurred_at"],
                unique=True,
            )
        return
    execute = op.execute
    execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
    execute("ALTER TABLE events RENAME TO events_0008")
    execute("ALTER INDEX pk_events RENAME TO pk_events_0008")
    execute("ALTER INDEX ix_events_tenant_id_event_id RENAME TO ix_events_0008_key")
    execute("ALTER INDEX ix_events_tenant_id_occurred_at RENAME TO ix_events_0008_time")
    _create_events("PARTITION BY RANGE (occurred_at)")
    months = (
        op.get_bind()
        .exec_driver_sql("SELECT DISTINCT date_trunc('month', occurred_at) FROM events_0008")
        .scalars()
        .all()
    )
    for moment in sorted(months):
        month = date(moment.year, moment.month, 1)
        execute(
            f"CREATE TABLE events_p{month:%Y%m} PARTITION OF events "
            f"FOR VALUES FROM ('{month}') TO ('{_next_month(month)}')"
        )
    execute("CREATE TABLE events_default PARTITION OF events DEFAULT")
    execute(f"INSERT INTO events ({COLUMNS}) SELECT {COLUMNS} FROM events_0008")
    # Indexes after the copy: building them once is faster than keeping them up per row.
    execute("ALTER TABLE events ADD CONSTRAINT pk_events PRIMARY KEY (id, occurred_at)")
    execute(
        "CREATE UNIQUE INDEX ix_events_tenant_id_event_id_occurred_at "
        "ON events (tenant_id, event_id, occurred_at)"
    )
    execute("CREATE INDEX ix_events_tenant_id_occurred_at ON events (tenant_id, occurred_at)")
    execute("DROP TABLE events_0008")


def downgrade() -> None:
    op.drop_table("raw_horizon")
    if op.get_bind().dialect.name != "postgresql":
        with op.batch_alter_table("events") as batch:
            batch.drop_index("ix_events_tenant_id_event_id_occurred_at")
            batch.create_index(
                "ix_events_tenant_id_event_id", ["tenant_id", "event_id"], unique=True
            )
        return
    execute = op.execute
    execute("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
    execute("ALTER TABLE events RENAME TO events_0009")
    execute("ALTER INDEX pk_events RENAME TO pk_events_0009")
    execute("ALTER INDEX ix_events_tenant_id_occurred_at RENAME TO ix_events_0009_time")
    execute("ALTER INDEX ix_events_tenant_id_event_id_occurred_at RENAME TO ix_events_0009_key")
    _create_events("")
    execute(f"INSERT INTO events ({COLUMNS}) SELECT {COLUMNS} FROM events_0009")
    execute("ALTER TABLE events ADD CONSTRAINT pk_events PRIMARY KEY (id)")
    execute("CREATE UNIQUE INDEX ix_events_tenant_id_event_id ON events (tenant_id, event_id)")
    execute("CREATE INDEX ix_events_tenant_id_occurred_at ON events (tenant_id, occurred_at)")
    execute("DROP TABLE events_0009")
