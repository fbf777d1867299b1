"""SQL side of ``bitextdb check``: what the SQL tables say should be in the vector store."""

from __future__ import annotations

import numpy as np
from sqlalchemy import delete, exists, func, not_, select, update
from sqlalchemy.orm import Session

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
    """``(table, condition)`` of rows that no kept row explains: occurrences and kNN rows
    of missing sentences, and neighbour entries without their list (left by hand-made
    damage: a deleted row the foreign keys did not follow). The miner would insert them
    again and fail on their keys."""
    return [
        (OCC, not_(exists().where(SENT.c.id == OCC.c.sentence_id))),
        (KNN, not_(exists().where(SENT.c.id == KNN.c.sentence_id))),
        (
            NB,
            not_(
                exists().where(
                    KNN.c.sentence_id == NB.c.sentence_id, KNN.c.other_lang == NB.c.other_lang
                )
            ),
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


def count_dirty(s: Session) -> int:
    return int(s.execute(select(func.count()).select_from(KNN).where(KNN.c.dirty)).scalar_one())


def forget_dangling(s: Session) -> int:
    """Drop the kNN rows of sentences whose list points at a missing sentence (re-mined later)."""
    holders = select(NB.c.sentence_id).where(not_(exists().where(SENT.c.id == NB.c.neighbour_id)))
    ids = list(s.execute(holders.distinct()).scalars())
    for chunk in chunks(ids):
        s.execute(delete(NB).where(NB.c.sentence_id.in_(chunk)))
        s.execute(delete(KNN).where(KNN.c.sentence_id.in_(chunk)))
    missing = not_(exists().where(SENT.c.id == PAIRS.c.src_id)) | not_(
        exists().where(SENT.c.id == PAIRS.c.tgt_id)
    )
    s.execute(delete(PAIRS).where(missing))
    return len(ids)
