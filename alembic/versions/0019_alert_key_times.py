"""stock alerts read by key from a time: ``alerts (tenant_id, alert_key, created_at)``

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 07:00:00.000000

The writer recomputes a product's stock alerts from its last restock before the
batch's movements, not from its whole history, and so reads the product's alerts
created after that restock. With the index on ``(tenant_id, alert_key)`` that read
still fetched every alert the key ever had, to check each one's time; with
``created_at`` in the index it reads only the window. The new index replaces the
old one, whose only reader was that recompute.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "ix_alerts_tenant_id_alert_key"
NEW = "ix_alerts_tenant_id_alert_key_created_at"


def upgrade() -> None:
    op.create_index(NEW, "alerts", ["tenant_id", "alert_key", "created_at"], unique=False)
    op.drop_index(OLD, table_name="alerts")


def downgrade() -> None:
    op.create_index(OLD, "alerts", ["tenant_id", "alert_key"], unique=False)
    op.drop_index(NEW, table_name="alerts")
