"""withdrawn pairs, and the min score and filters of export cursors

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 14:30:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "withdrawn_pairs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("src_id", sa.BigInteger(), nullable=False),
        sa.Column("tgt_id", sa.BigInteger(), nullable=False),
        sa.Column("src_lang", sa.String(length=16), nullable=False),
        sa.Column("tgt_lang", sa.String(length=16), nullable=False),
        sa.Column("src_text", sa.Text(), nullable=False),
        sa.Column("tgt_text", sa.Text(), nullable=False),
        sa.Column("src_hash", sa.String(length=32), nullable=False),
        sa.Column("tgt_hash", sa.String(length=32), nullable=False),
        sa.Column("margin", sa.Float(), nullable=False),
        sa.Column("cosine", sa.Float(), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("withdrawn_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_withdrawn_langs_time",
        "withdrawn_pairs",
        ["src_lang", "tgt_lang", "withdrawn_at"],
        unique=False,
    )
    with op.batch_alter_table("export_cursors") as batch:
        batch.add_column(sa.Column("min_score", sa.Float(), nullable=True))
        batch.add_column(sa.Column("filters", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("export_cursors") as batch:
        batch.drop_column("filters")
        batch.drop_column("min_score")
    op.drop_index("ix_withdrawn_langs_time", table_name="withdrawn_pairs")
    op.drop_table("withdrawn_pairs")
