"""records split into sentences: a part number on occurrences, a flag on sources

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28 17:10:00.000000
"""

from __future__ import annotations

import warnings

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# the name PostgreSQL gave the primary key of 0001
PRIMARY_KEY = "occurrences_pkey"


def _occurrences_key(columns: list[str]) -> None:
    """Give ``occurrences`` the primary key ``columns``: PostgreSQL alters it in place;
    SQLite cannot, so Alembic's batch mode copies the table into one with the new key
    (safe: no table refers to ``occurrences``)."""
    if op.get_bind().dialect.name == "postgresql":
        op.drop_constraint(PRIMARY_KEY, "occurrences", type_="primary")
        op.create_primary_key(PRIMARY_KEY, "occurrences", columns)
        return
    with warnings.catch_warnings():
        # SQLAlchemy notes that the copy's key differs from the reflected one: the point
        warnings.filterwarnings("ignore", "Table '_alembic_tmp_occurrences' specifies")
        with op.batch_alter_table("occurrences", recreate="always") as batch:
            batch.create_primary_key(PRIMARY_KEY, columns)


def upgrade() -> None:
    # Plain ALTER TABLE, never batch mode's copy: SQLite drops the old ``sources`` with an
    # implicit DELETE, and its foreign keys then cascade to every occurrence.
    op.add_column(
        "sources",
        sa.Column("split_sentences", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column(
        "occurrences", sa.Column("part", sa.Integer(), nullable=False, server_default="0")
    )
    _occurrences_key(["source_id", "position", "part"])


def downgrade() -> None:
    # parts other than the first have no place in the old key
    op.execute(sa.text("DELETE FROM occurrences WHERE part <> 0"))
    _occurrences_key(["source_id", "position"])
    # SQLite (3.35 and later) drops a column in place; no table that others refer to is
    # copied (see upgrade)
    op.execute(sa.text("ALTER TABLE occurrences DROP COLUMN part"))
    op.execute(sa.text("ALTER TABLE sources DROP COLUMN split_sentences"))
