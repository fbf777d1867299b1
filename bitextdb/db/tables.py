"""SQLAlchemy 2 tables. The sentence id is also the vector store's point id."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# SQLite only auto-increments an INTEGER PRIMARY KEY; elsewhere ids are 64-bit.
Id = BigInteger().with_variant(Integer(), "sqlite")


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class Base(DeclarativeBase):
    pass


class Setting(Base):
    """One database setting (model, dimension, k, ...), JSON-encoded."""

    __tablename__ = "settings"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[object] = mapped_column(JSON)


class Source(Base):
    """A corpus file (or stream) that sentences came from."""

    __tablename__ = "sources"
    __table_args__ = (UniqueConstraint("lang", "name"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    lang: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(512))
    path: Mapped[str | None] = mapped_column(Text)
    records: Mapped[int] = mapped_column(BigInteger, default=0)
    #: whether its records were split into sentences (``ingest --split-sentences``)
    split_sentences: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: how a file's source was read (:func:`bitextdb.readers.reading`); None for streams,
    #: texts, and files read before schema 0007
    reader: Mapped[dict[str, object] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Sentence(Base):
    """A distinct sentence of one language; ``indexed`` once its vector is in the store."""

    __tablename__ = "sentences"
    __table_args__ = (
        UniqueConstraint("lang", "text_hash"),
        Index("ix_sentences_lang_indexed", "lang", "indexed"),
    )
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    lang: Mapped[str] = mapped_column(String(16))
    text: Mapped[str] = mapped_column(Text)
    text_hash: Mapped[str] = mapped_column(String(32))
    indexed: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Occurrence(Base):
    """Where a sentence was met: one row per (source, position, part); ``part`` numbers
    the sentences a split record gave (0 when records are not split)."""

    __tablename__ = "occurrences"
    __table_args__ = (Index("ix_occurrences_sentence", "sentence_id"),)
    source_id: Mapped[int] = mapped_column(
        ForeignKey("sources.id", ondelete="CASCADE"), primary_key=True
    )
    position: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    part: Mapped[int] = mapped_column(Integer, primary_key=True, default=0, server_default="0")
    sentence_id: Mapped[int] = mapped_column(ForeignKey("sentences.id", ondelete="CASCADE"))
    ext_id: Mapped[str | None] = mapped_column(String(256))


class DisplacedSentence(Base):
    """A sentence that lost a line when its file was ingested again after it changed
    (:mod:`bitextdb.source_sync`), written in the transaction that took the line, and
    removed when no source holds it any more, or forgotten when one does. The ingest does
    that when it ends; an ingest stopped before leaves the rows for the next ingest, mine or
    ``check --repair``."""

    __tablename__ = "displaced_sentences"
    sentence_id: Mapped[int] = mapped_column(
        ForeignKey("sentences.id", ondelete="CASCADE"), primary_key=True
    )


class Knn(Base):
    """A sentence's neighbourhood towards another language, and its best candidate there.

    ``size`` neighbours are stored in ``neighbours``; ``r`` is their mean cosine and
    ``kth_cos``/``kth_id`` the last one (the bar a newcomer must pass to enter the list).
    A row exists once the sentence has been mined against ``other_lang``; ``dirty`` marks a
    candidate (``best_*``) that must be recomputed because the list or a neighbour's ``r``
    changed since.
    """

    __tablename__ = "knn"
    __table_args__ = (Index("ix_knn_langs_dirty", "lang", "other_lang", "dirty"),)
    sentence_id: Mapped[int] = mapped_column(
        ForeignKey("sentences.id", ondelete="CASCADE"), primary_key=True
    )
    other_lang: Mapped[str] = mapped_column(String(16), primary_key=True)
    lang: Mapped[str] = mapped_column(String(16))
    size: Mapped[int] = mapped_column(Integer)
    r: Mapped[float] = mapped_column(Float)
    kth_cos: Mapped[float | None] = mapped_column(Float)
    kth_id: Mapped[int | None] = mapped_column(BigInteger)
    best_id: Mapped[int | None] = mapped_column(BigInteger)
    best_cos: Mapped[float | None] = mapped_column(Float)
    best_margin: Mapped[float | None] = mapped_column(Float)
    dirty: Mapped[bool] = mapped_column(Boolean, default=True)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Neighbour(Base):
    """One entry of a kNN list, best first (rank 0)."""

    __tablename__ = "neighbours"
    __table_args__ = (Index("ix_neighbours_reverse", "neighbour_id", "other_lang"),)
    sentence_id: Mapped[int] = mapped_column(
        ForeignKey("sentences.id", ondelete="CASCADE"), primary_key=True
    )
    other_lang: Mapped[str] = mapped_column(String(16), primary_key=True)
    rank: Mapped[int] = mapped_column(Integer, primary_key=True)
    neighbour_id: Mapped[int] = mapped_column(BigInteger)
    cosine: Mapped[float] = mapped_column(Float)


class Pair(Base):
    """A candidate pair: the best candidate of its source side, its target side, or both.

    ``src_lang`` < ``tgt_lang`` alphabetically. ``accepted`` marks the greedy one-to-one
    selection over all candidates of the language pair (before any threshold: a threshold
    only cuts the tail of that walk, so exports filter on ``margin``).
    """

    __tablename__ = "pairs"
    __table_args__ = (
        Index("ix_pairs_langs_margin", "src_lang", "tgt_lang", "margin"),
        Index("ix_pairs_tgt", "tgt_id"),
        Index("ix_pairs_updated", "updated_at"),
    )
    src_id: Mapped[int] = mapped_column(
        ForeignKey("sentences.id", ondelete="CASCADE"), primary_key=True
    )
    tgt_id: Mapped[int] = mapped_column(
        ForeignKey("sentences.id", ondelete="CASCADE"), primary_key=True
    )
    src_lang: Mapped[str] = mapped_column(String(16))
    tgt_lang: Mapped[str] = mapped_column(String(16))
    cosine: Mapped[float] = mapped_column(Float)
    margin: Mapped[float] = mapped_column(Float)
    src_r: Mapped[float] = mapped_column(Float)
    tgt_r: Mapped[float] = mapped_column(Float)
    forward: Mapped[bool] = mapped_column(Boolean, default=False)
    backward: Mapped[bool] = mapped_column(Boolean, default=False)
    accepted: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class WithdrawnPair(Base):
    """An accepted pair that stopped being accepted: a later mine selected other pairs, or
    one of its sentences went with a removed source.

    Written in the transaction that withdraws it, with both texts (a removed sentence's row
    is gone) and their ``text_hash``, so that ``export --cursor ... --withdrawn`` can tell a
    consumer what to drop and find the pair again if it came back (under other ids).
    ``margin`` and ``cosine`` are the pair's last ones; ``reason`` is ``displaced`` or
    ``removed``. No foreign keys: the record outlives its sentences.
    """

    __tablename__ = "withdrawn_pairs"
    __table_args__ = (Index("ix_withdrawn_langs_time", "src_lang", "tgt_lang", "withdrawn_at"),)
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    src_id: Mapped[int] = mapped_column(BigInteger)
    tgt_id: Mapped[int] = mapped_column(BigInteger)
    src_lang: Mapped[str] = mapped_column(String(16))
    tgt_lang: Mapped[str] = mapped_column(String(16))
    src_text: Mapped[str] = mapped_column(Text)
    tgt_text: Mapped[str] = mapped_column(Text)
    src_hash: Mapped[str] = mapped_column(String(32))
    tgt_hash: Mapped[str] = mapped_column(String(32))
    margin: Mapped[float] = mapped_column(Float)
    cosine: Mapped[float] = mapped_column(Float)
    reason: Mapped[str] = mapped_column(String(16))
    withdrawn_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ExportCursor(Base):
    """A named export position: ``export --cursor NAME`` writes only pairs changed after it.

    ``last_exported_at`` is the time the last successful export under this name started;
    ``min_score`` the lowest margin it exports and ``filters`` its pair filters
    (:class:`bitextdb.filters.PairFilter`): a cursor follows one cut and one filter, since
    pairs between two cuts would be neither written nor withdrawn. NULL for cursors older
    than these columns.
    """

    __tablename__ = "export_cursors"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    pair: Mapped[str] = mapped_column(String(40))
    last_exported_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    min_score: Mapped[float | None] = mapped_column(Float)
    filters: Mapped[dict[str, object] | None] = mapped_column(JSON)
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
