"""dead letters: the size and hash of the whole message, whose bytes may be cut

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 11:50:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("dead_letters", sa.Column("raw_size", sa.BigInteger(), nullable=True))
    op.add_column("dead_letters", sa.Column("raw_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    op.drop_column("dead_letters", "raw_sha256")
    op.drop_column("dead_letters", "raw_size")
