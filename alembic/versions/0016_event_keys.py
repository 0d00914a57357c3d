"""event keys: every stored event's (tenant_id, event_id) once; events' unique index dropped

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06 23:10:00.000000

The writer used to find a re-sent event by looking its ``(tenant_id, event_id)`` up in
``events`` under an advisory lock a key; on the partitioned table that look-up probes
every month's index, a cost that grew with the history kept (~1 µs an event a month,
measured). ``event_keys`` holds each key once, as its primary key: the writer claims
an event's key there (one probe, no lock) and stores only the events whose key it
claimed. The upgrade fills it from the stored events; keys stay when retention prunes
raw events, so a pruned event re-sent still counts once.

``events``' unique index ``(tenant_id, event_id, occurred_at)`` goes: the keys hold what
it held, and more (it had to hold the partition key, so a re-sent id under another time
passed it). It cost every insert an entry at a random place of a large index and ~200
bytes an event (measured at 0.5 M events); a key costs ~145.

The downgrade builds the unique index again (on every partition: minutes on a large
store) and drops the keys.
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | None = None
depends_on: str | None = None

UNIQUE = "ix_events_tenant_id_event_id_occurred_at"


def upgrade() -> None:
    op.create_table(
        "event_keys",
        sa.Column("tenant_id", sa.String(length=128), nullable=False),
        sa.Column("event_id", sa.String(length=128), nullable=False),
        sa.PrimaryKeyConstraint("tenant_id", "event_id", name=op.f("pk_event_keys")),
    )
    op.execute(
        "INSERT INTO event_keys (tenant_id, event_id) "
        "SELECT DISTINCT tenant_id, event_id FROM events"
    )
    op.drop_index(UNIQUE, table_name="events")


def downgrade() -> None:
    op.create_index(UNIQUE, "events", ["tenant_id", "event_id", "occurred_at"], unique=True)
    op.drop_table("event_keys")
