"""stock alerts: recomputed from the movements, which keep each alert's message

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("inventory_movements", sa.Column("alert_message", sa.Text(), nullable=True))
    op.create_index(
        op.f("ix_alerts_tenant_id_alert_key"), "alerts", ["tenant_id", "alert_key"], unique=False
    )
    # Movements stored before this revision get the message of the alert they raised, so
    # recomputing a product's alerts keeps the messages it has. The others (deduplicated
    # while an alert was open) fall back to a message built from the movement itself.
    op.execute(
        """
        UPDATE inventory_movements SET alert_message = (
            SELECT max(alerts.message) FROM alerts
            WHERE alerts.tenant_id = inventory_movements.tenant_id
              AND alerts.event_id = inventory_movements.event_id
              AND alerts.alert_type = inventory_movements.kind
        )
        WHERE kind IN ('low_stock', 'out_of_stock')
          AND (tenant_id, event_id) IN (
            SELECT tenant_id, event_id FROM alerts
            WHERE alert_type IN ('low_stock', 'out_of_stock')
          )
        """
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_alerts_tenant_id_alert_key"), table_name="alerts")
    op.drop_column("inventory_movements", "alert_message")
