"""mend homes made by development versions: the export cursors' filters column, the id floor

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 00:45:00.000000

Revision 0003 gained ``export_cursors.filters`` after homes had been stamped with it
(2026-11-28), so those homes lack the column and every command that reads cursors failed.
And on SQLite, sentences removed before the id floor existed left no floor, so their ids
could be given again: the highest id a withdrawal record names is a floor too.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ID_FLOOR = "sentence_id_floor"  # bitextdb.db.corpus.ID_FLOOR, as of this revision


def upgrade() -> None:
    bind = op.get_bind()
    columns = {c["name"] for c in sa.inspect(bind).get_columns("export_cursors")}
    if "filters" not in columns:
        op.add_column("export_cursors", sa.Column("filters", sa.JSON(), nullable=True))
    if bind.dialect.name != "sqlite":
        return  # sequences never give an id twice
    settings = sa.table("settings", sa.column("key", sa.String), sa.column("value", sa.JSON))
    named = bind.execute(
        sa.text("SELECT MAX(MAX(src_id), MAX(tgt_id)) FROM withdrawn_pairs")
    ).scalar()
    stored = bind.execute(sa.select(settings.c.value).where(settings.c.key == ID_FLOOR)).scalar()
    if named is None or (stored is not None and int(stored) >= int(named)):
        return
    bind.execute(sa.delete(settings).where(settings.c.key == ID_FLOOR))
    bind.execute(sa.insert(settings).values(key=ID_FLOOR, value=int(named)))


def downgrade() -> None:
    pass  # both mends are what revisions 0003 and 0004 should have left
