"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27 05:30:02.178139
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "sentences",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("lang", sa.String(length=16), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("text_hash", sa.String(length=32), nullable=False),
        sa.Column("indexed", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("lang", "text_hash"),
    )
    with op.batch_alter_table("sentences", schema=None) as batch_op:
        batch_op.create_index("ix_sentences_lang_indexed", ["lang", "indexed"], unique=False)

    op.create_table(
        "settings",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_table(
        "sources",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("lang", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=512), nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("lang", "name"),
    )
    op.create_table(
        "knn",
        sa.Column(
            "sentence_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("other_lang", sa.String(length=16), nullable=False),
        sa.Column("lang", sa.String(length=16), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("r", sa.Float(), nullable=False),
        sa.Column("kth_cos", sa.Float(), nullable=True),
        sa.Column("kth_id", sa.BigInteger(), nullable=True),
        sa.Column("best_id", sa.BigInteger(), nullable=True),
        sa.Column("best_cos", sa.Float(), nullable=True),
        sa.Column("best_margin", sa.Float(), nullable=True),
        sa.Column("dirty", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["sentence_id"], ["sentences.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("sentence_id", "other_lang"),
    )
    with op.batch_alter_table("knn", schema=None) as batch_op:
        batch_op.create_index("ix_knn_langs_dirty", ["lang", "other_lang", "dirty"], unique=False)

    op.create_table(
        "neighbours",
        sa.Column(
            "sentence_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("other_lang", sa.String(length=16), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("neighbour_id", sa.BigInteger(), nullable=False),
        sa.Column("cosine", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["sentence_id"], ["sentences.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("sentence_id", "other_lang", "rank"),
    )
    with op.batch_alter_table("neighbours", schema=None) as batch_op:
        batch_op.create_index("ix_neighbours_reverse", ["neighbour_id", "other_lang"], unique=False)

    op.create_table(
        "occurrences",
        sa.Column(
            "source_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column(
            "sentence_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("ext_id", sa.String(length=256), nullable=True),
        sa.ForeignKeyConstraint(["sentence_id"], ["sentences.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["source_id"], ["sources.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("source_id", "position"),
    )
    with op.batch_alter_table("occurrences", schema=None) as batch_op:
        batch_op.create_index("ix_occurrences_sentence", ["sentence_id"], unique=False)

    op.create_table(
        "pairs",
        sa.Column("src_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("tgt_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("src_lang", sa.String(length=16), nullable=False),
        sa.Column("tgt_lang", sa.String(length=16), nullable=False),
        sa.Column("cosine", sa.Float(), nullable=False),
        sa.Column("margin", sa.Float(), nullable=False),
        sa.Column("src_r", sa.Float(), nullable=False),
        sa.Column("tgt_r", sa.Float(), nullable=False),
        sa.Column("forward", sa.Boolean(), nullable=False),
        sa.Column("backward", sa.Boolean(), nullable=False),
        sa.Column("accepted", sa.Boolean(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["src_id"], ["sentences.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["tgt_id"], ["sentences.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("src_id", "tgt_id"),
    )
    with op.batch_alter_table("pairs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_pairs_langs_margin", ["src_lang", "tgt_lang", "margin"], unique=False
        )
        batch_op.create_index("ix_pairs_tgt", ["tgt_id"], unique=False)
        batch_op.create_index("ix_pairs_updated", ["updated_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("pairs", schema=None) as batch_op:
        batch_op.drop_index("ix_pairs_updated")
        batch_op.drop_index("ix_pairs_tgt")
        batch_op.drop_index("ix_pairs_langs_margin")

    op.drop_table("pairs")
    with op.batch_alter_table("occurrences", schema=None) as batch_op:
        batch_op.drop_index("ix_occurrences_sentence")

    op.drop_table("occurrences")
    with op.batch_alter_table("neighbours", schema=None) as batch_op:
        batch_op.drop_index("ix_neighbours_reverse")

    op.drop_table("neighbours")
    with op.batch_alter_table("knn", schema=None) as batch_op:
        batch_op.drop_index("ix_knn_langs_dirty")

    op.drop_table("knn")
    op.drop_table("sources")
    op.drop_table("settings")
    with op.batch_alter_table("sentences", schema=None) as batch_op:
        batch_op.drop_index("ix_sentences_lang_indexed")

    op.drop_table("sentences")
