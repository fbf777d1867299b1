"""export cursors

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "export_cursors",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("pair", sa.String(length=40), nullable=False),
        sa.Column("last_exported_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("export_cursors")
