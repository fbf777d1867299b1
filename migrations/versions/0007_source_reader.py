"""how each file's source was read (format, column, field), so a read of it another way is
refused instead of dropping the lines the first reading gave

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 01:10:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


# Plain ALTER TABLE both ways, never batch mode's copy of ``sources``: SQLite would drop
# the old table with an implicit DELETE that cascades to every occurrence (see 0004).
def upgrade() -> None:
    op.add_column("sources", sa.Column("reader", sa.JSON(), nullable=True))


def downgrade() -> None:
    op.execute(sa.text("ALTER TABLE sources DROP COLUMN reader"))
