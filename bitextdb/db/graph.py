"""SQL side of the neighbour graph, candidates and pairs (used by ``bitextdb.miner``).

Every function takes an open session and works on arrays, so the miner stays free of SQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from sqlalchemy import (
    DateTime,
    String,
    and_,
    bindparam,
    case,
    delete,
    exists,
    func,
    insert,
    literal,
    not_,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session

from ..topk import PAD_ID, TopK
from .tables import Knn, Neighbour, Pair, Sentence, Setting, WithdrawnPair, utcnow
from .upsert import insert_for

KNN = Knn.__table__
NB = Neighbour.__table__
PAIRS = Pair.__table__
SENT = Sentence.__table__
WITHDRAWN = WithdrawnPair.__table__
SETTINGS = Setting.__table__
CHUNK = 4000


def chunks(values: np.ndarray | list[int], size: int = CHUNK) -> Iterator[list[int]]:
    values = [int(v) for v in values]
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass
class Base:
    """The mined sentences of ``lang`` towards ``other``, sorted by id, with their bars."""

    ids: np.ndarray
    sizes: np.ndarray
    kth_cos: np.ndarray
    kth_id: np.ndarray

    def locate(self, ids: np.ndarray) -> np.ndarray:
        """Row of each id in the base (ids must be members)."""
        return np.searchsorted(self.ids, ids)

    def contains(self, ids: np.ndarray) -> np.ndarray:
        pos = np.minimum(np.searchsorted(self.ids, ids), max(len(self.ids) - 1, 0))
        return (self.ids[pos] == ids) if len(self.ids) else np.zeros(len(ids), dtype=bool)

    def without(self, ids: np.ndarray) -> Base:
        """The base less the given ids."""
        keep = ~np.isin(self.ids, ids)
        return Base(self.ids[keep], self.sizes[keep], self.kth_cos[keep], self.kth_id[keep])


def languages(s: Session) -> list[str]:
    rows = s.execute(select(SENT.c.lang).where(SENT.c.indexed).distinct()).scalars()
    return sorted(rows)


def partners(s: Session, lang: str) -> list[str]:
    """The languages ``lang`` has been mined against, one way or the other, sorted."""
    ours = select(KNN.c.other_lang).where(KNN.c.lang == lang).distinct()
    theirs = select(KNN.c.lang).where(KNN.c.other_lang == lang).distinct()
    return sorted(set(s.execute(ours).scalars()) | set(s.execute(theirs).scalars()))


def mined_base(s: Session, lang: str, other: str) -> Base:
    rows = s.execute(
        select(KNN.c.sentence_id, KNN.c.size, KNN.c.kth_cos, KNN.c.kth_id)
        .where(KNN.c.lang == lang, KNN.c.other_lang == other)
        .order_by(KNN.c.sentence_id)
    ).all()
    if not rows:
        empty = np.zeros(0, dtype=np.int64)
        return Base(empty, empty.copy(), np.zeros(0), empty.copy())
    ids, sizes, kth_cos, kth_id = zip(*rows)
    return Base(
        np.array(ids, dtype=np.int64),
        np.array(sizes, dtype=np.int64),
        np.array([-np.inf if c is None else c for c in kth_cos], dtype=np.float64),
        np.array([PAD_ID if i is None else i for i in kth_id], dtype=np.int64),
    )


def _pending_query(lang: str, other: str):  # type: ignore[no-untyped-def]
    mined = exists().where(KNN.c.sentence_id == SENT.c.id, KNN.c.other_lang == other)
    return and_(SENT.c.lang == lang, SENT.c.indexed, not_(mined))


def pending_ids(s: Session, lang: str, other: str) -> np.ndarray:
    """Indexed sentences of ``lang`` not yet mined against ``other``, by id."""
    rows = s.execute(
        select(SENT.c.id).where(_pending_query(lang, other)).order_by(SENT.c.id)
    ).scalars()
    return np.fromiter(rows, dtype=np.int64)


def count_mined(s: Session, lang: str, other: str) -> int:
    """Sentences of ``lang`` that have a kNN list towards ``other``."""
    query = (
        select(func.count()).select_from(KNN).where(KNN.c.lang == lang, KNN.c.other_lang == other)
    )
    return int(s.execute(query).scalar_one())


def count_pending(s: Session, lang: str, other: str) -> int:
    query = select(func.count()).select_from(SENT).where(_pending_query(lang, other))
    return int(s.execute(query).scalar_one())


def load_lists(s: Session, ids: np.ndarray, other: str, k: int) -> TopK:
    """Stored kNN lists of ``ids`` towards ``other`` as padded arrays (rows in ``ids`` order)."""
    out = TopK.empty(len(ids), k)
    row_of = {int(i): n for n, i in enumerate(ids)}
    for chunk in chunks(ids):
        for sid, rank, nid, cos in s.execute(
            select(NB.c.sentence_id, NB.c.rank, NB.c.neighbour_id, NB.c.cosine).where(
                NB.c.other_lang == other, NB.c.sentence_id.in_(chunk)
            )
        ):
            if 0 <= rank < k:  # a rank out of place (hand-made damage) is no entry
                out.ids[row_of[sid], rank] = nid
                out.cos[row_of[sid], rank] = cos
    return out


def write_lists(
    s: Session, lang: str, other: str, ids: np.ndarray, lists: TopK, *, new: bool
) -> None:
    """Store kNN lists (and their size, mean and bar), marking each sentence dirty."""
    sizes = lists.sizes
    r = np.divide(
        np.where(lists.ids != PAD_ID, lists.cos, 0.0).sum(axis=1),
        sizes,
        out=np.zeros(len(sizes)),
        where=sizes > 0,
    )
    if not new:
        for chunk in chunks(ids):
            s.execute(delete(NB).where(NB.c.other_lang == other, NB.c.sentence_id.in_(chunk)))
    nb_rows = [
        {
            "sentence_id": int(sid),
            "other_lang": other,
            "rank": j,
            "neighbour_id": int(nid),
            "cosine": float(cos),
        }
        for sid, row_ids, row_cos, size in zip(ids, lists.ids, lists.cos, sizes)
        for j, (nid, cos) in enumerate(zip(row_ids[:size], row_cos[:size]))
    ]
    if nb_rows:
        s.execute(insert(NB), nb_rows)
    now = utcnow()
    knn_rows = []
    for sid, row_ids, row_cos, size, mean in zip(ids, lists.ids, lists.cos, sizes, r):
        last = int(size) - 1
        knn_rows.append(
            {
                "b_sentence_id": int(sid),
                "b_other_lang": other,
                "lang": lang,
                "size": int(size),
                "r": float(mean),
                "kth_cos": float(row_cos[last]) if size else None,
                "kth_id": int(row_ids[last]) if size else None,
                "dirty": True,
                "updated_at": now,
            }
        )
    if not knn_rows:
        return
    if new:
        for row in knn_rows:
            row["sentence_id"] = row.pop("b_sentence_id")
            row["other_lang"] = row.pop("b_other_lang")
        s.execute(insert(KNN), knn_rows)
    else:
        stmt = (
            update(KNN)
            .where(
                KNN.c.sentence_id == bindparam("b_sentence_id"),
                KNN.c.other_lang == bindparam("b_other_lang"),
            )
            .values(
                size=bindparam("size"),
                r=bindparam("r"),
                kth_cos=bindparam("kth_cos"),
                kth_id=bindparam("kth_id"),
                dirty=True,
                updated_at=bindparam("updated_at"),
            )
        )
        s.connection().execute(stmt, knn_rows)
    if (sizes > 0).any():  # an empty list (nothing on the other side yet) ranks nothing
        _lower_r_floor(s, lang, other, float(r[sizes > 0].min()))


def _floor_key(lang: str, other: str) -> str:
    return f"r_floor:{lang}:{other}"


def r_floor(s: Session, lang: str, other: str) -> float | None:
    """A lower bound of every stored r of ``lang`` towards ``other`` (None: no list yet):
    the lowest r any list was ever written with, kept beside the settings so ``translate``
    reads one row; r only rises as lists gain members, and a list rewritten lower lowers
    it. Empty lists (the other side had nothing yet) do not count. A database whose lists
    predate the note is scanned once, by its first write."""
    kept = _kept_floor(s, lang, other)
    if kept is not None:
        return kept
    lowest = s.execute(
        select(func.min(KNN.c.r)).where(
            KNN.c.lang == lang, KNN.c.other_lang == other, KNN.c.size > 0
        )
    ).scalar()
    return None if lowest is None else float(lowest)


def _kept_floor(s: Session, lang: str, other: str) -> float | None:
    value = s.execute(
        select(SETTINGS.c.value).where(SETTINGS.c.key == _floor_key(lang, other))
    ).scalar()
    return None if value is None else float(value)  # type: ignore[arg-type]


def _lower_r_floor(s: Session, lang: str, other: str, written: float) -> None:
    """Keep :func:`r_floor` at most ``written`` (under the pair's mining lock)."""
    kept = _kept_floor(s, lang, other)
    if kept is not None and kept <= written:
        return  # the usual case: lists gain members, r rises
    # no note yet: the lowest of the lists just written and those before them
    floor = kept if kept is not None else r_floor(s, lang, other)
    value = written if floor is None else min(floor, written)
    s.execute(
        insert_for(s, SETTINGS)
        .values(key=_floor_key(lang, other), value=value)
        .on_conflict_do_update(index_elements=["key"], set_={"value": value})
    )


def holders(s: Session, lang: str, other: str, neighbour_ids: np.ndarray) -> np.ndarray:
    """The ``lang`` sentences whose list towards ``other`` holds any given id, sorted."""
    found: set[int] = set()
    for chunk in chunks(neighbour_ids):
        found.update(
            s.execute(
                select(NB.c.sentence_id)
                .join(KNN, and_(KNN.c.sentence_id == NB.c.sentence_id, KNN.c.other_lang == other))
                .where(NB.c.other_lang == other, NB.c.neighbour_id.in_(chunk), KNN.c.lang == lang)
                .distinct()
            ).scalars()
        )
    return np.array(sorted(found), dtype=np.int64)


def drop_lists(s: Session, lang: str, other: str) -> None:
    """Delete every list of ``lang`` towards ``other``: its sentences are pending again."""
    owners = select(KNN.c.sentence_id).where(KNN.c.lang == lang, KNN.c.other_lang == other)
    s.execute(delete(NB).where(NB.c.other_lang == other, NB.c.sentence_id.in_(owners)))
    s.execute(delete(KNN).where(KNN.c.lang == lang, KNN.c.other_lang == other))


def mark_holders_dirty(s: Session, lang: str, other: str, neighbour_ids: np.ndarray) -> None:
    """Mark dirty the ``lang`` sentences whose list towards ``other`` holds any given id."""
    for chunk in chunks(neighbour_ids):
        holders = select(NB.c.sentence_id).where(
            NB.c.other_lang == other, NB.c.neighbour_id.in_(chunk)
        )
        s.execute(
            update(KNN)
            .where(KNN.c.lang == lang, KNN.c.other_lang == other, KNN.c.sentence_id.in_(holders))
            .values(dirty=True)
        )


def mark_all_dirty(s: Session, lang: str, other: str) -> None:
    s.execute(update(KNN).where(KNN.c.lang == lang, KNN.c.other_lang == other).values(dirty=True))


@dataclass
class Dirty:
    """Dirty sentences of one side with their lists and every neighbour's ``r``."""

    ids: np.ndarray
    r: np.ndarray
    old_best: np.ndarray
    lists: TopK
    neighbour_r: np.ndarray


def load_dirty(s: Session, lang: str, other: str, k: int) -> Dirty:
    rows = s.execute(
        select(KNN.c.sentence_id, KNN.c.r, KNN.c.best_id)
        .where(KNN.c.lang == lang, KNN.c.other_lang == other, KNN.c.dirty)
        .order_by(KNN.c.sentence_id)
    ).all()
    ids = np.array([row[0] for row in rows], dtype=np.int64)
    r = np.array([row[1] for row in rows], dtype=np.float64)
    old_best = np.array([PAD_ID if row[2] is None else row[2] for row in rows], dtype=np.int64)
    lists = TopK.empty(len(ids), k)
    neighbour_r = np.zeros((len(ids), k))
    if not len(ids):
        return Dirty(ids, r, old_best, lists, neighbour_r)
    theirs = KNN.alias("theirs")
    mine = KNN.alias("mine")
    query = (
        select(NB.c.sentence_id, NB.c.rank, NB.c.neighbour_id, NB.c.cosine, theirs.c.r)
        .join(
            mine, and_(mine.c.sentence_id == NB.c.sentence_id, mine.c.other_lang == NB.c.other_lang)
        )
        .join(theirs, and_(theirs.c.sentence_id == NB.c.neighbour_id, theirs.c.other_lang == lang))
        .where(mine.c.lang == lang, mine.c.other_lang == other, mine.c.dirty)
    )
    for sid, rank, nid, cos, their_r in s.execute(query):
        row = int(np.searchsorted(ids, sid))
        if 0 <= rank < k:
            lists.ids[row, rank] = nid
            lists.cos[row, rank] = cos
            neighbour_r[row, rank] = their_r
    return Dirty(ids, r, old_best, lists, neighbour_r)


def save_candidates(
    s: Session,
    other: str,
    ids: np.ndarray,
    best_id: np.ndarray,
    best_cos: np.ndarray,
    best_margin: np.ndarray,
) -> None:
    rows = [
        {
            "b_sentence_id": int(sid),
            "b_other_lang": other,
            "best_id": None if bid == PAD_ID else int(bid),
            "best_cos": None if bid == PAD_ID else float(c),
            "best_margin": None if bid == PAD_ID else float(m),
        }
        for sid, bid, c, m in zip(ids, best_id, best_cos, best_margin)
    ]
    if not rows:
        return
    stmt = (
        update(KNN)
        .where(
            KNN.c.sentence_id == bindparam("b_sentence_id"),
            KNN.c.other_lang == bindparam("b_other_lang"),
        )
        .values(
            best_id=bindparam("best_id"),
            best_cos=bindparam("best_cos"),
            best_margin=bindparam("best_margin"),
            dirty=False,
        )
    )
    s.connection().execute(stmt, rows)


def drop_candidate_flags(s: Session, src_tgt: list[tuple[int, int]], *, forward: bool) -> None:
    """Clear the forward (or backward) flag of the given pairs."""
    if not src_tgt:
        return
    flag = {"forward": False} if forward else {"backward": False}
    stmt = (
        update(PAIRS)
        .where(PAIRS.c.src_id == bindparam("b_src"), PAIRS.c.tgt_id == bindparam("b_tgt"))
        .values(**flag, updated_at=bindparam("b_now"))
    )
    now = utcnow()
    s.connection().execute(stmt, [{"b_src": a, "b_tgt": b, "b_now": now} for a, b in src_tgt])


def upsert_pairs(s: Session, rows: list[dict[str, object]]) -> None:
    """Insert candidate pairs or refresh them, OR-ing the direction flags."""
    if not rows:
        return
    stmt = insert_for(s, PAIRS)
    ex = stmt.excluded
    changed = or_(
        PAIRS.c.margin != ex.margin,
        PAIRS.c.cosine != ex.cosine,
        and_(ex.forward, not_(PAIRS.c.forward)),
        and_(ex.backward, not_(PAIRS.c.backward)),
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[PAIRS.c.src_id, PAIRS.c.tgt_id],
        set_={
            "cosine": ex.cosine,
            "margin": ex.margin,
            "src_r": ex.src_r,
            "tgt_r": ex.tgt_r,
            "forward": or_(PAIRS.c.forward, ex.forward),
            "backward": or_(PAIRS.c.backward, ex.backward),
            "updated_at": case((changed, ex.updated_at), else_=PAIRS.c.updated_at),
        },
    )
    s.execute(stmt, rows)


def _withdrawal(reason: str, *conditions):  # type: ignore[no-untyped-def]
    """INSERT ... SELECT of the accepted pairs meeting ``conditions`` into ``withdrawn_pairs``."""
    src_text, tgt_text = SENT.alias("src_text"), SENT.alias("tgt_text")
    query = (
        select(
            PAIRS.c.src_id,
            PAIRS.c.tgt_id,
            PAIRS.c.src_lang,
            PAIRS.c.tgt_lang,
            src_text.c.text,
            tgt_text.c.text,
            src_text.c.text_hash,
            tgt_text.c.text_hash,
            PAIRS.c.margin,
            PAIRS.c.cosine,
            literal(reason, String()),
            literal(utcnow(), DateTime(timezone=True)),
        )
        .join(src_text, src_text.c.id == PAIRS.c.src_id)
        .join(tgt_text, tgt_text.c.id == PAIRS.c.tgt_id)
        .where(PAIRS.c.accepted, *conditions)
    )
    columns = ["src_id", "tgt_id", "src_lang", "tgt_lang", "src_text", "tgt_text"]
    columns += ["src_hash", "tgt_hash", "margin", "cosine", "reason", "withdrawn_at"]
    return insert(WITHDRAWN).from_select(columns, query)


def withdraw_pairs(s: Session, src: np.ndarray, tgt: np.ndarray) -> None:
    """Record these accepted pairs as withdrawn (a new selection drops them)."""
    if not len(src):
        return
    stmt = _withdrawal(
        "displaced", PAIRS.c.src_id == bindparam("b_src"), PAIRS.c.tgt_id == bindparam("b_tgt")
    )
    rows = [{"b_src": int(a), "b_tgt": int(b)} for a, b in zip(src, tgt)]
    s.connection().execute(stmt, rows)


def withdraw_orphans(s: Session, src_lang: str, tgt_lang: str) -> None:
    """Record the accepted pairs :func:`delete_orphan_pairs` is about to delete."""
    s.execute(
        _withdrawal(
            "displaced",
            PAIRS.c.src_lang == src_lang,
            PAIRS.c.tgt_lang == tgt_lang,
            not_(PAIRS.c.forward),
            not_(PAIRS.c.backward),
        )
    )


def withdraw_sentences(s: Session, ids: np.ndarray) -> None:
    """Record the accepted pairs of these sentences (about to be removed) as withdrawn."""
    for chunk in chunks(ids):
        for side in (PAIRS.c.src_id, PAIRS.c.tgt_id):  # a pair joins two languages: never both
            s.execute(_withdrawal("removed", side.in_(chunk)))


def delete_orphan_pairs(s: Session, src_lang: str, tgt_lang: str) -> None:
    s.execute(
        delete(PAIRS).where(
            PAIRS.c.src_lang == src_lang,
            PAIRS.c.tgt_lang == tgt_lang,
            not_(PAIRS.c.forward),
            not_(PAIRS.c.backward),
        )
    )


def pairs_touching(
    s: Session, src_lang: str, tgt_lang: str, srcs: list[int], tgts: list[int]
) -> Iterator[tuple[int, int, float, bool]]:
    """(src, tgt, margin, accepted) of the pairs with a source in ``srcs`` or a target in
    ``tgts`` (a pair may come twice)."""
    columns = (PAIRS.c.src_id, PAIRS.c.tgt_id, PAIRS.c.margin, PAIRS.c.accepted)
    languages = (PAIRS.c.src_lang, PAIRS.c.tgt_lang)
    for side, values in ((PAIRS.c.src_id, srcs), (PAIRS.c.tgt_id, tgts)):
        for chunk in chunks(values):
            # the languages are compared here, not in SQL: given them, SQLite's planner
            # walks the languages' index, every pair of the two, instead of the ids'
            for src, tgt, margin, accepted, src_lang_of, tgt_lang_of in s.execute(
                select(*columns, *languages).where(side.in_(chunk))
            ):
                if src_lang_of == src_lang and tgt_lang_of == tgt_lang:
                    yield src, tgt, margin, accepted


def drop_orphans_among(s: Session, src_tgt: list[tuple[int, int]]) -> None:
    """Withdraw (if accepted) and delete those of these pairs that lost both flags."""
    if not src_tgt:
        return
    orphan = (
        PAIRS.c.src_id == bindparam("b_src"),
        PAIRS.c.tgt_id == bindparam("b_tgt"),
        not_(PAIRS.c.forward),
        not_(PAIRS.c.backward),
    )
    rows = [{"b_src": int(a), "b_tgt": int(b)} for a, b in src_tgt]
    s.connection().execute(_withdrawal("displaced", *orphan), rows)
    s.connection().execute(delete(PAIRS).where(*orphan), rows)


def count_selection(s: Session, src_lang: str, tgt_lang: str) -> tuple[int, int]:
    """How many pairs a language pair holds, and how many of them are accepted."""
    total, accepted = s.execute(
        select(
            func.count(), func.coalesce(func.sum(case((PAIRS.c.accepted, 1), else_=0)), 0)
        ).where(PAIRS.c.src_lang == src_lang, PAIRS.c.tgt_lang == tgt_lang)
    ).one()
    return int(total), int(accepted)


def _walked_key(a: str, b: str) -> str:
    return "selection_walked:" + ":".join(sorted((a, b)))


# The accepted flags of (a, b) are followed from the pairs each refresh changes only while a
# note says they are a walk's: the walk over every pair writes it, and whatever changes pairs
# without a trace to follow (a removal, a repair) deletes it. A pair with no note (a database
# from before the notes, one a stopped removal left) is walked whole at its next refresh.
def mark_selection_stale(s: Session, a: str, b: str) -> None:
    """The next refresh of (a, b) walks every pair (its flags may be no walk's)."""
    s.execute(delete(SETTINGS).where(SETTINGS.c.key == _walked_key(a, b)))


def mark_every_selection_stale(s: Session) -> None:
    """:func:`mark_selection_stale` for every language pair, mined or not."""
    s.execute(delete(SETTINGS).where(SETTINGS.c.key.startswith("selection_walked:")))


def selection_stale(s: Session, a: str, b: str) -> bool:
    return s.get(Setting, _walked_key(a, b)) is None


def clear_selection_stale(s: Session, a: str, b: str) -> None:
    """Note that the flags of (a, b) are a walk's (written by that walk, under the pair's
    mining lock; a conflict with a note already there changes nothing)."""
    s.execute(
        insert_for(s, SETTINGS)
        .values(key=_walked_key(a, b), value=True)
        .on_conflict_do_nothing(index_elements=["key"])
    )


def load_selection(s: Session, src_lang: str, tgt_lang: str) -> tuple[np.ndarray, ...]:
    rows = s.execute(
        select(PAIRS.c.src_id, PAIRS.c.tgt_id, PAIRS.c.margin, PAIRS.c.accepted).where(
            PAIRS.c.src_lang == src_lang, PAIRS.c.tgt_lang == tgt_lang
        )
    ).all()
    if not rows:
        z = np.zeros(0, dtype=np.int64)
        return z, z.copy(), np.zeros(0), np.zeros(0, dtype=bool)
    src, tgt, margin, accepted = zip(*rows)
    return (
        np.array(src, dtype=np.int64),
        np.array(tgt, dtype=np.int64),
        np.array(margin, dtype=np.float64),
        np.array(accepted, dtype=bool),
    )


def set_accepted(s: Session, src: np.ndarray, tgt: np.ndarray, accepted: np.ndarray) -> None:
    now = utcnow()
    rows = [
        {"b_src": int(a), "b_tgt": int(b), "b_acc": bool(f), "b_now": now}
        for a, b, f in zip(src, tgt, accepted)
    ]
    if not rows:
        return
    stmt = (
        update(PAIRS)
        .where(PAIRS.c.src_id == bindparam("b_src"), PAIRS.c.tgt_id == bindparam("b_tgt"))
        .values(accepted=bindparam("b_acc"), updated_at=bindparam("b_now"))
    )
    s.connection().execute(stmt, rows)


def pair_counts(s: Session, src_lang: str, tgt_lang: str, threshold: float) -> dict[str, int]:
    """Candidates, accepted pairs, and accepted pairs at or above ``threshold``."""
    base = (
        select(func.count())
        .select_from(PAIRS)
        .where(PAIRS.c.src_lang == src_lang, PAIRS.c.tgt_lang == tgt_lang)
    )
    return {
        "candidates": int(s.execute(base).scalar_one()),
        "accepted": int(s.execute(base.where(PAIRS.c.accepted)).scalar_one()),
        "pairs": int(
            s.execute(base.where(PAIRS.c.accepted, PAIRS.c.margin >= threshold)).scalar_one()
        ),
    }
