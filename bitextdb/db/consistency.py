"""SQL side of ``bitextdb check``: what the SQL tables say should be in the vector store."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import and_, delete, exists, func, not_, select, tuple_, update
from sqlalchemy.orm import Session

from ..topk import PAD_ID, TopK
from .graph import chunks
from .tables import Knn, Neighbour, Occurrence, Pair, Sentence

SENT = Sentence.__table__
KNN = Knn.__table__
NB = Neighbour.__table__
PAIRS = Pair.__table__
OCC = Occurrence.__table__


def indexed_ids(s: Session, lang: str) -> np.ndarray:
    rows = s.execute(
        select(SENT.c.id).where(SENT.c.lang == lang, SENT.c.indexed).order_by(SENT.c.id)
    ).scalars()
    return np.fromiter(rows, dtype=np.int64)


def all_ids(s: Session, lang: str) -> np.ndarray:
    rows = s.execute(select(SENT.c.id).where(SENT.c.lang == lang).order_by(SENT.c.id)).scalars()
    return np.fromiter(rows, dtype=np.int64)


def unheld_ids(s: Session, lang: str) -> np.ndarray:
    """The sentences of ``lang`` that no source holds (no occurrence), by id: displaced by
    an ingest of a changed file stopped before its end, until the next ingest or mine
    removes them (see :mod:`bitextdb.source_sync`), or left by files ingested again after
    they changed before schema 0005 (a line's position took its new sentence and the old
    one stayed), or by in-memory texts given to one source twice before such calls
    appended (2026-11-28: the second call took the first one's positions)."""
    held = exists().where(OCC.c.sentence_id == SENT.c.id)
    rows = s.execute(
        select(SENT.c.id).where(SENT.c.lang == lang, not_(held)).order_by(SENT.c.id)
    ).scalars()
    return np.fromiter(rows, dtype=np.int64)


def count_indexed(s: Session, lang: str) -> int:
    """Sentences of ``lang`` whose vectors the vector store confirmed it holds."""
    query = select(func.count()).select_from(SENT).where(SENT.c.lang == lang, SENT.c.indexed)
    return int(s.execute(query).scalar_one())


def count_unindexed(s: Session) -> int:
    return int(
        s.execute(select(func.count()).select_from(SENT).where(not_(SENT.c.indexed))).scalar_one()
    )


def mark_unindexed(s: Session, ids: np.ndarray) -> None:
    for chunk in chunks(ids):
        s.execute(update(SENT).where(SENT.c.id.in_(chunk)).values(indexed=False))


def count_dangling_neighbours(s: Session) -> int:
    missing = not_(exists().where(SENT.c.id == NB.c.neighbour_id))
    return int(s.execute(select(func.count()).select_from(NB).where(missing)).scalar_one())


def _stray_conditions() -> list[tuple[object, object]]:
    """``(table, condition)`` of rows that no kept row explains, in the order to delete
    them: occurrences and kNN rows of missing sentences, kNN rows whose languages are not
    their sentence's or whose entries name a sentence of another language, neighbour
    entries without their list, and pair rows whose languages are not their sentences'.
    Left by hand-made damage (a deleted row the foreign keys did not follow, a language
    changed); the miner would insert the rows again and fail on their keys, or mine the
    wrong collection."""
    own = SENT.alias("own")
    named = SENT.alias("named")
    src, tgt = SENT.alias("src"), SENT.alias("tgt")
    wrong_entry = (
        select(NB.c.sentence_id)
        .join(named, named.c.id == NB.c.neighbour_id)
        .where(
            NB.c.sentence_id == KNN.c.sentence_id,
            NB.c.other_lang == KNN.c.other_lang,
            named.c.lang != NB.c.other_lang,
        )
    )
    return [
        (OCC, not_(exists().where(SENT.c.id == OCC.c.sentence_id))),
        (KNN, not_(exists().where(SENT.c.id == KNN.c.sentence_id))),
        (
            KNN,
            exists().where(own.c.id == KNN.c.sentence_id, own.c.lang != KNN.c.lang)
            | (KNN.c.lang == KNN.c.other_lang)
            | exists(wrong_entry),
        ),
        (
            NB,
            not_(
                exists().where(
                    KNN.c.sentence_id == NB.c.sentence_id, KNN.c.other_lang == NB.c.other_lang
                )
            ),
        ),
        # (not src_lang >= tgt_lang: SQL would compare by the database's collation, where
        # zh-Hant and zh-cmn may sort otherwise than the code points the pairs go by)
        (
            PAIRS,
            exists().where(src.c.id == PAIRS.c.src_id, src.c.lang != PAIRS.c.src_lang)
            | exists().where(tgt.c.id == PAIRS.c.tgt_id, tgt.c.lang != PAIRS.c.tgt_lang)
            | (PAIRS.c.src_lang == PAIRS.c.tgt_lang),
        ),
    ]


def count_stray_rows(s: Session) -> int:
    """Rows of :func:`_stray_conditions`."""
    return sum(
        int(s.execute(select(func.count()).select_from(table).where(where)).scalar_one())
        for table, where in _stray_conditions()
    )


def delete_stray_rows(s: Session) -> int:
    """Delete the rows of :func:`_stray_conditions`; how many went."""
    return sum(
        int(s.execute(delete(table).where(where)).rowcount) for table, where in _stray_conditions()
    )


def count_dangling_pairs(s: Session) -> int:
    missing = not_(exists().where(SENT.c.id == PAIRS.c.src_id)) | not_(
        exists().where(SENT.c.id == PAIRS.c.tgt_id)
    )
    return int(s.execute(select(func.count()).select_from(PAIRS).where(missing)).scalar_one())


def count_dirty(s: Session, pairs: Sequence[tuple[str, str]]) -> int:
    """Candidates waiting to be recomputed in the language ``pairs`` (those mined: a pair
    that ``config --pairs`` left out keeps what it had, waiting or not)."""
    if not pairs:
        return 0
    directions = [(a, b) for pair in pairs for a, b in (pair, pair[::-1])]
    query = select(func.count()).select_from(KNN).where(KNN.c.dirty)
    query = query.where(tuple_(KNN.c.lang, KNN.c.other_lang).in_(directions))
    return int(s.execute(query).scalar_one())


def forget_dangling(s: Session) -> tuple[int, int]:
    """Drop the kNN rows of sentences whose list points at a missing sentence (re-mined
    later) and the pair rows of missing sentences: the lists dropped, and the accepted pairs
    among those rows (no withdrawal can be recorded for them: a text is gone)."""
    holders = select(NB.c.sentence_id).where(not_(exists().where(SENT.c.id == NB.c.neighbour_id)))
    ids = list(s.execute(holders.distinct()).scalars())
    for chunk in chunks(ids):
        s.execute(delete(NB).where(NB.c.sentence_id.in_(chunk)))
        s.execute(delete(KNN).where(KNN.c.sentence_id.in_(chunk)))
    missing = not_(exists().where(SENT.c.id == PAIRS.c.src_id)) | not_(
        exists().where(SENT.c.id == PAIRS.c.tgt_id)
    )
    accepted = s.execute(delete(PAIRS).where(missing & PAIRS.c.accepted)).rowcount
    s.execute(delete(PAIRS).where(missing))
    return len(ids), int(accepted or 0)


# -- what mining derived, for ``check --deep`` -------------------------------------------------
#: rows read at a time from the neighbour and pair tables
READ_BATCH = 50_000


@dataclass
class StoredLists:
    """One direction's stored kNN rows (by sentence id) and their neighbour entries."""

    ids: np.ndarray
    size: np.ndarray
    r: np.ndarray
    kth_cos: np.ndarray
    kth_id: np.ndarray
    best_id: np.ndarray
    best_margin: np.ndarray
    dirty: np.ndarray
    #: entries by rank; a rank the list lacks stays ``PAD_ID`` / -inf
    lists: TopK
    #: rows with an entry ranked k or beyond
    misranked: np.ndarray


def _column(values: list[object], dtype: type, missing: object) -> np.ndarray:
    return np.array([missing if v is None else v for v in values], dtype=dtype)


def stored_lists(s: Session, lang: str, other: str, k: int) -> StoredLists:
    """Every list of ``lang`` towards ``other`` as stored, with its size, mean, k-th entry
    and candidate (``PAD_ID`` or NaN where the row holds none)."""
    rows = s.execute(
        select(
            KNN.c.sentence_id,
            KNN.c.size,
            KNN.c.r,
            KNN.c.kth_cos,
            KNN.c.kth_id,
            KNN.c.best_id,
            KNN.c.best_margin,
            KNN.c.dirty,
        )
        .where(KNN.c.lang == lang, KNN.c.other_lang == other)
        .order_by(KNN.c.sentence_id)
    ).all()
    cols = list(zip(*rows)) if rows else [[] for _ in range(8)]
    ids = _column(cols[0], np.int64, PAD_ID)
    lists = TopK.empty(len(ids), k)
    misranked = np.zeros(len(ids), dtype=bool)
    entries = (
        select(NB.c.sentence_id, NB.c.rank, NB.c.neighbour_id, NB.c.cosine)
        .join(KNN, and_(KNN.c.sentence_id == NB.c.sentence_id, KNN.c.other_lang == NB.c.other_lang))
        .where(KNN.c.lang == lang, KNN.c.other_lang == other)
    )
    result = s.execute(entries, execution_options={"yield_per": READ_BATCH})
    for part in result.partitions():
        sid, rank, nid, cos = (np.array(c) for c in zip(*part))
        row = np.searchsorted(ids, sid.astype(np.int64))
        fits = (rank >= 0) & (rank < k)
        misranked[row[~fits]] = True
        lists.ids[row[fits], rank[fits]] = nid[fits]
        lists.cos[row[fits], rank[fits]] = cos[fits]
    return StoredLists(
        ids=ids,
        size=_column(cols[1], np.int64, 0),
        r=_column(cols[2], np.float64, np.nan),
        kth_cos=_column(cols[3], np.float64, np.nan),
        kth_id=_column(cols[4], np.int64, PAD_ID),
        best_id=_column(cols[5], np.int64, PAD_ID),
        best_margin=_column(cols[6], np.float64, np.nan),
        dirty=_column(cols[7], bool, False),
        lists=lists,
        misranked=misranked,
    )


@dataclass
class StoredPairs:
    """The pair rows of one language pair, as arrays."""

    src: np.ndarray
    tgt: np.ndarray
    cosine: np.ndarray
    margin: np.ndarray
    forward: np.ndarray
    backward: np.ndarray
    accepted: np.ndarray


def stored_pairs(s: Session, src_lang: str, tgt_lang: str) -> StoredPairs:
    """Every pair row of ``src_lang``-``tgt_lang`` (sorted codes)."""
    query = select(
        PAIRS.c.src_id,
        PAIRS.c.tgt_id,
        PAIRS.c.cosine,
        PAIRS.c.margin,
        PAIRS.c.forward,
        PAIRS.c.backward,
        PAIRS.c.accepted,
    ).where(PAIRS.c.src_lang == src_lang, PAIRS.c.tgt_lang == tgt_lang)
    parts = [
        list(zip(*part))
        for part in s.execute(query, execution_options={"yield_per": READ_BATCH}).partitions()
    ]
    dtypes = (np.int64, np.int64, np.float64, np.float64, bool, bool, bool)
    columns = [
        np.concatenate([np.array(p[i], dtype=t) for p in parts]) if parts else np.zeros(0, t)
        for i, t in enumerate(dtypes)
    ]
    return StoredPairs(*columns)


def forget_lists(s: Session, lang: str, other: str, ids: np.ndarray) -> None:
    """Drop the lists of ``ids`` (of ``lang``) towards ``other``: mined again as new."""
    for chunk in chunks(ids):
        s.execute(delete(NB).where(NB.c.other_lang == other, NB.c.sentence_id.in_(chunk)))
        s.execute(
            delete(KNN).where(
                KNN.c.lang == lang, KNN.c.other_lang == other, KNN.c.sentence_id.in_(chunk)
            )
        )
