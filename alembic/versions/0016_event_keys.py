"""event keys: every stored event's (tenant_id, event_id) once, how a replay is known

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

The downgrade drops the table (the look-up in ``events`` comes back with the code).
"""

from __future__ import annotations

import sqlalchemy as sa

from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | None = None
depends_on: str | None = None


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


def downgrade() -> None:
    op.drop_table("event_keys")
