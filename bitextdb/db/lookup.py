"""Read-only lookups for queries: sentences by text, their neighbourhood values and pairs."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from .graph import chunks
from .tables import Knn, Pair, Sentence

SENT = Sentence.__table__
KNN = Knn.__table__
PAIRS = Pair.__table__


def sentence_by_hash(s: Session, lang: str, text_hash: str) -> int | None:
    found = s.execute(
        select(SENT.c.id).where(SENT.c.lang == lang, SENT.c.text_hash == text_hash)
    ).scalar()
    return None if found is None else int(found)


def r_values(s: Session, ids: Sequence[int], other: str) -> dict[int, float]:
    """``id -> r`` towards ``other`` for the mined ones among ``ids``."""
    out: dict[int, float] = {}
    for chunk in chunks(list(ids)):
        for sid, r in s.execute(
            select(KNN.c.sentence_id, KNN.c.r).where(
                KNN.c.other_lang == other, KNN.c.sentence_id.in_(chunk)
            )
        ):
            out[int(sid)] = float(r)
    return out


def pairs_of(s: Session, sentence_id: int) -> list[dict[str, object]]:
    """Every candidate pair a sentence takes part in, either side."""
    rows = s.execute(
        select(PAIRS).where(or_(PAIRS.c.src_id == sentence_id, PAIRS.c.tgt_id == sentence_id))
    ).mappings()
    return [dict(row) for row in rows]
