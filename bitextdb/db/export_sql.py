"""SQL side of exports, export cursors and evaluation (used by ``bitextdb.export`` and
``bitextdb.evaluate``).

Every function takes an open session. Large reads are streamed (``yield_per``: a
server-side cursor on PostgreSQL) or batched by id, so no query loads a whole table.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from sqlalchemy import and_, delete, func, literal, select
from sqlalchemy.orm import Session

from .tables import (
    ExportCursor,
    Knn,
    Neighbour,
    Occurrence,
    Pair,
    Sentence,
    Setting,
    Source,
    WithdrawnPair,
    utcnow,
)
from .upsert import insert_for

KNN = Knn.__table__
NB = Neighbour.__table__
PAIRS = Pair.__table__
SENT = Sentence.__table__
OCC = Occurrence.__table__
SRC = Source.__table__
CURSORS = ExportCursor.__table__
WITHDRAWN = WithdrawnPair.__table__

#: ids per ``IN (...)`` lookup
LOOKUP_BATCH = 1000
#: rows fetched per round trip of a streamed query
STREAM_BATCH = 1000


def as_utc(moment: datetime) -> datetime:
    """An aware UTC datetime; a naive one is taken as UTC (how SQLite hands them back)."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


def _batches(values: Iterable[int], size: int = LOOKUP_BATCH) -> Iterator[list[int]]:
    values = sorted({int(v) for v in values})
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _str_batches(values: Iterable[str], size: int = LOOKUP_BATCH) -> Iterator[list[str]]:
    values = sorted(set(values))
    for start in range(0, len(values), size):
        yield values[start : start + size]


def languages(s: Session) -> list[str]:
    """Every language that has sentences, sorted."""
    return sorted(s.execute(select(SENT.c.lang).distinct()).scalars())


# -- the stored selection --------------------------------------------------------------------
def stream_accepted(
    s: Session,
    src_lang: str,
    tgt_lang: str,
    *,
    swap: bool,
    min_score: float | None,
    since: datetime | None = None,
    after: datetime | None = None,
    batch: int = STREAM_BATCH,
) -> Iterator[list[tuple[int, int, float, float]]]:
    """Accepted pairs of the stored pair ``src_lang``-``tgt_lang``, streamed in batches.

    Rows are ``(out_src_id, out_tgt_id, margin, cosine)`` where the output sides are the
    stored ones, or swapped when ``swap``; ordered by descending margin, ties by the output
    (src id, tgt id). ``since`` keeps ``updated_at >= since``, ``after`` keeps
    ``updated_at > after``.
    """
    out_src, out_tgt = PAIRS.c.src_id, PAIRS.c.tgt_id
    if swap:
        out_src, out_tgt = out_tgt, out_src
    query = select(out_src, out_tgt, PAIRS.c.margin, PAIRS.c.cosine).where(
        PAIRS.c.src_lang == src_lang, PAIRS.c.tgt_lang == tgt_lang, PAIRS.c.accepted
    )
    if min_score is not None:
        query = query.where(PAIRS.c.margin >= float(min_score))
    query = _window(query, PAIRS.c.updated_at, since, after)
    query = query.order_by(PAIRS.c.margin.desc(), out_src, out_tgt)
    for part in _stream(s, query, batch):
        yield [(int(a), int(b), float(m), float(c)) for a, b, m, c in part]


def has_withdrawn(s: Session, src_lang: str, tgt_lang: str) -> bool:
    """Whether the stored pair ``src_lang``-``tgt_lang`` ever had a pair withdrawn."""
    query = select(WITHDRAWN.c.id).where(
        WITHDRAWN.c.src_lang == src_lang, WITHDRAWN.c.tgt_lang == tgt_lang
    )
    return s.execute(query.limit(1)).first() is not None


#: ``(out src id, out tgt id, margin, cosine, src text, tgt text, reason, withdrawn at)``
Withdrawal = tuple[int, int, float, float, str, str, str, datetime]


def stream_withdrawn(
    s: Session,
    src_lang: str,
    tgt_lang: str,
    *,
    swap: bool,
    min_score: float | None,
    since: datetime | None = None,
    after: datetime | None = None,
    batch: int = STREAM_BATCH,
) -> Iterator[list[Withdrawal]]:
    """What a consumer of the exports of this pair up to ``since`` (or ``after``) must drop.

    Two kinds, in this order: pairs withdrawn in that window that are not accepted now
    (reason ``displaced`` or ``removed``; a pair withdrawn twice comes once, with its latest
    record), and pairs still accepted whose margin fell below ``min_score`` in that window
    (reason ``below_min_score``; best first). A pair accepted again since it was withdrawn
    is neither: the export itself writes it anew (or it is of the second kind). A pair is
    its two texts, found by their ``text_hash``: a removed sentence ingested again has
    another id. Texts come from the records, so a removed sentence's is there too.
    """
    yield from _withdrawn_records(s, src_lang, tgt_lang, swap, since, after, batch)
    if min_score is not None:
        yield from _below_the_cut(s, src_lang, tgt_lang, swap, min_score, since, after, batch)


def _withdrawn_records(
    s: Session,
    src_lang: str,
    tgt_lang: str,
    swap: bool,
    since: datetime | None,
    after: datetime | None,
    batch: int,
) -> Iterator[list[Withdrawal]]:
    """The first kind of :func:`stream_withdrawn`: withdrawal records of pairs not accepted
    now, the latest one of each pair, ordered by the pair's text hashes."""
    out_src, out_tgt = WITHDRAWN.c.src_id, WITHDRAWN.c.tgt_id
    out_src_text, out_tgt_text = WITHDRAWN.c.src_text, WITHDRAWN.c.tgt_text
    if swap:
        out_src, out_tgt, out_src_text, out_tgt_text = out_tgt, out_src, out_tgt_text, out_src_text
    now_a, now_b = SENT.alias("now_a"), SENT.alias("now_b")
    accepted_again = (
        select(PAIRS.c.src_id)
        .select_from(now_a)
        .join(PAIRS, PAIRS.c.src_id == now_a.c.id)
        .join(now_b, now_b.c.id == PAIRS.c.tgt_id)
        .where(
            now_a.c.lang == WITHDRAWN.c.src_lang,
            now_a.c.text_hash == WITHDRAWN.c.src_hash,
            now_b.c.lang == WITHDRAWN.c.tgt_lang,
            now_b.c.text_hash == WITHDRAWN.c.tgt_hash,
            PAIRS.c.accepted,
        )
        .exists()
    )
    query = select(
        out_src,
        out_tgt,
        WITHDRAWN.c.margin,
        WITHDRAWN.c.cosine,
        out_src_text,
        out_tgt_text,
        WITHDRAWN.c.reason,
        WITHDRAWN.c.withdrawn_at,
        WITHDRAWN.c.src_hash,
        WITHDRAWN.c.tgt_hash,
    ).where(WITHDRAWN.c.src_lang == src_lang, WITHDRAWN.c.tgt_lang == tgt_lang, ~accepted_again)
    query = _window(query, WITHDRAWN.c.withdrawn_at, since, after).order_by(
        WITHDRAWN.c.src_hash,
        WITHDRAWN.c.tgt_hash,
        WITHDRAWN.c.withdrawn_at.desc(),
        WITHDRAWN.c.id.desc(),
    )
    last = None
    for part in _stream(s, query, batch):
        rows = []
        for row in part:
            if row[8:] != last:  # the latest record of each pair comes first
                rows.append(_withdrawal(row[:8]))
                last = row[8:]
        if rows:
            yield rows


def _below_the_cut(
    s: Session,
    src_lang: str,
    tgt_lang: str,
    swap: bool,
    min_score: float,
    since: datetime | None,
    after: datetime | None,
    batch: int,
) -> Iterator[list[Withdrawal]]:
    """The second kind of :func:`stream_withdrawn`: accepted pairs whose margin fell below
    ``min_score`` in the window, best first."""
    text_a, text_b = SENT.alias("text_a"), SENT.alias("text_b")
    below_src, below_tgt = PAIRS.c.src_id, PAIRS.c.tgt_id
    below_src_text, below_tgt_text = text_a.c.text, text_b.c.text
    if swap:
        below_src, below_tgt = below_tgt, below_src
        below_src_text, below_tgt_text = below_tgt_text, below_src_text
    query = (
        select(
            below_src,
            below_tgt,
            PAIRS.c.margin,
            PAIRS.c.cosine,
            below_src_text,
            below_tgt_text,
            literal("below_min_score"),
            PAIRS.c.updated_at,
        )
        .join(text_a, text_a.c.id == PAIRS.c.src_id)
        .join(text_b, text_b.c.id == PAIRS.c.tgt_id)
        .where(
            PAIRS.c.src_lang == src_lang,
            PAIRS.c.tgt_lang == tgt_lang,
            PAIRS.c.accepted,
            PAIRS.c.margin < float(min_score),
        )
    )
    query = _window(query, PAIRS.c.updated_at, since, after).order_by(
        PAIRS.c.margin.desc(), below_src, below_tgt
    )
    for part in _stream(s, query, batch):
        yield [_withdrawal(row) for row in part]


def _window(query, column, since: datetime | None, after: datetime | None):  # type: ignore[no-untyped-def]
    if since is not None:
        query = query.where(column >= as_utc(since))
    if after is not None:
        query = query.where(column > as_utc(after))
    return query


def _stream(s: Session, query, batch: int) -> Iterator:  # type: ignore[no-untyped-def]
    result = s.execute(query, execution_options={"yield_per": batch})
    try:
        yield from result.partitions(batch)
    finally:
        result.close()


def _withdrawal(row) -> Withdrawal:  # type: ignore[no-untyped-def]
    a, b, margin, cos, src_text, tgt_text, reason, moment = row
    return (int(a), int(b), float(margin), float(cos), src_text, tgt_text, reason, as_utc(moment))


def accepted_pairs(
    s: Session, src_lang: str, tgt_lang: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every accepted pair (stored orientation) as arrays ``src, tgt, margin``."""
    return _pair_arrays(
        s,
        select(PAIRS.c.src_id, PAIRS.c.tgt_id, PAIRS.c.margin).where(
            PAIRS.c.src_lang == src_lang, PAIRS.c.tgt_lang == tgt_lang, PAIRS.c.accepted
        ),
    )


def candidate_pairs(
    s: Session, src_lang: str, tgt_lang: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every candidate pair (stored orientation) as arrays ``src, tgt, margin``."""
    return _pair_arrays(
        s,
        select(PAIRS.c.src_id, PAIRS.c.tgt_id, PAIRS.c.margin).where(
            PAIRS.c.src_lang == src_lang, PAIRS.c.tgt_lang == tgt_lang
        ),
    )


def _pair_arrays(s: Session, query) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
    src: list[np.ndarray] = []
    tgt: list[np.ndarray] = []
    margin: list[np.ndarray] = []
    result = s.execute(query, execution_options={"yield_per": 10 * STREAM_BATCH})
    for part in result.partitions():
        a, b, m = zip(*part)
        src.append(np.array(a, dtype=np.int64))
        tgt.append(np.array(b, dtype=np.int64))
        margin.append(np.array(m, dtype=np.float64))
    if not src:
        z = np.zeros(0, dtype=np.int64)
        return z, z.copy(), np.zeros(0)
    return np.concatenate(src), np.concatenate(tgt), np.concatenate(margin)


# -- neighbour lists -------------------------------------------------------------------------
@dataclass
class Lists:
    """The mined sentences of one language towards another, sorted by id.

    ``nb_ids``/``nb_cos`` are ``(n, k)`` padded kNN lists (rank 0 best; padding has id -1
    and cosine -inf beyond ``sizes``); ``r`` is each list's mean cosine as stored.
    """

    ids: np.ndarray
    r: np.ndarray
    sizes: np.ndarray
    nb_ids: np.ndarray
    nb_cos: np.ndarray


def load_lists(s: Session, lang: str, other: str, k: int) -> Lists:
    """The kNN rows and neighbour lists of every ``lang`` sentence mined against ``other``."""
    id_parts: list[np.ndarray] = []
    r_parts: list[np.ndarray] = []
    size_parts: list[np.ndarray] = []
    rows = s.execute(
        select(KNN.c.sentence_id, KNN.c.r, KNN.c.size)
        .where(KNN.c.lang == lang, KNN.c.other_lang == other)
        .order_by(KNN.c.sentence_id),
        execution_options={"yield_per": 10 * STREAM_BATCH},
    )
    for part in rows.partitions():
        a, r, size = zip(*part)
        id_parts.append(np.array(a, dtype=np.int64))
        r_parts.append(np.array(r, dtype=np.float64))
        size_parts.append(np.array(size, dtype=np.int64))
    ids = np.concatenate(id_parts) if id_parts else np.zeros(0, dtype=np.int64)
    r_all = np.concatenate(r_parts) if r_parts else np.zeros(0)
    sizes = np.concatenate(size_parts) if size_parts else np.zeros(0, dtype=np.int64)
    nb_ids = np.full((len(ids), k), -1, dtype=np.int64)
    nb_cos = np.full((len(ids), k), -np.inf)
    entries = s.execute(
        select(NB.c.sentence_id, NB.c.rank, NB.c.neighbour_id, NB.c.cosine)
        .join(KNN, and_(KNN.c.sentence_id == NB.c.sentence_id, KNN.c.other_lang == NB.c.other_lang))
        .where(KNN.c.lang == lang, KNN.c.other_lang == other, NB.c.rank < k),
        execution_options={"yield_per": 10 * STREAM_BATCH},
    )
    for part in entries.partitions():
        sid, rank, nid, cos = (np.array(col) for col in zip(*part))
        row = np.searchsorted(ids, sid.astype(np.int64))
        nb_ids[row, rank.astype(np.int64)] = nid.astype(np.int64)
        nb_cos[row, rank.astype(np.int64)] = cos.astype(np.float64)
    return Lists(ids, r_all, np.minimum(sizes, k), nb_ids, nb_cos)


# -- texts, sources, lookups -----------------------------------------------------------------
def texts(s: Session, ids: Iterable[int]) -> dict[int, str]:
    """``id -> text`` of the given sentences, looked up in batches."""
    out: dict[int, str] = {}
    for chunk in _batches(ids):
        for sid, text in s.execute(select(SENT.c.id, SENT.c.text).where(SENT.c.id.in_(chunk))):
            out[int(sid)] = text
    return out


def source_names(s: Session, ids: Iterable[int]) -> dict[int, list[str]]:
    """``id -> sorted names of the sources`` each given sentence was met in (batched)."""
    out: dict[int, set[str]] = {}
    for chunk in _batches(ids):
        query = (
            select(OCC.c.sentence_id, SRC.c.name)
            .join(SRC, SRC.c.id == OCC.c.source_id)
            .where(OCC.c.sentence_id.in_(chunk))
            .distinct()
        )
        for sid, name in s.execute(query):
            out.setdefault(int(sid), set()).add(name)
    return {sid: sorted(names) for sid, names in out.items()}


def ext_ids(s: Session, ids: Iterable[int]) -> dict[int, list[str]]:
    """``id -> sorted external ids`` of each given sentence's occurrences that have one
    (``ingest --id-column`` / ``--id-field``), batched."""
    out: dict[int, set[str]] = {}
    for chunk in _batches(ids):
        query = select(OCC.c.sentence_id, OCC.c.ext_id).where(
            OCC.c.sentence_id.in_(chunk), OCC.c.ext_id.is_not(None)
        )
        for sid, ext in s.execute(query):
            out.setdefault(int(sid), set()).add(ext)
    return {sid: sorted(values) for sid, values in out.items()}


def ids_by_ext_id(s: Session, lang: str, ext_ids: Sequence[str]) -> dict[str, set[int]]:
    """``ext_id -> sentence ids`` of ``lang`` carrying it (an id may name several sentences)."""
    out: dict[str, set[int]] = {}
    for chunk in _str_batches(ext_ids):
        query = (
            select(OCC.c.ext_id, OCC.c.sentence_id)
            .join(SENT, SENT.c.id == OCC.c.sentence_id)
            .where(SENT.c.lang == lang, OCC.c.ext_id.in_(chunk))
        )
        for ext, sid in s.execute(query):
            out.setdefault(ext, set()).add(int(sid))
    return out


def ids_by_hash(s: Session, lang: str, hashes: Sequence[str]) -> dict[str, int]:
    """``text_hash -> sentence id`` of ``lang`` for the hashes stored."""
    out: dict[str, int] = {}
    for chunk in _str_batches(hashes):
        query = select(SENT.c.text_hash, SENT.c.id).where(
            SENT.c.lang == lang, SENT.c.text_hash.in_(chunk)
        )
        for h, sid in s.execute(query):
            out[h] = int(sid)
    return out


# -- export cursors --------------------------------------------------------------------------
@dataclass
class Cursor:
    """A named export position (see ``export_cursors``); ``filters`` as stored (or None)."""

    pair: str
    last_exported_at: datetime
    min_score: float | None
    filters: dict[str, object] | None


def get_cursor(s: Session, name: str) -> Cursor | None:
    """A named cursor (its time in UTC), or None before its first use."""
    row = s.execute(
        select(
            CURSORS.c.pair, CURSORS.c.last_exported_at, CURSORS.c.min_score, CURSORS.c.filters
        ).where(CURSORS.c.name == name)
    ).first()
    if row is None:
        return None
    pair, moment, min_score, filters = row
    return Cursor(
        str(pair), as_utc(moment), None if min_score is None else float(min_score), filters
    )


def list_cursors(s: Session) -> list[dict[str, object]]:
    """Every named cursor: name, pair, last_exported_at (UTC), min_score, filters; sorted
    by name."""
    rows = s.execute(
        select(
            CURSORS.c.name,
            CURSORS.c.pair,
            CURSORS.c.last_exported_at,
            CURSORS.c.min_score,
            CURSORS.c.filters,
        ).order_by(CURSORS.c.name)
    ).all()
    return [
        {
            "name": name,
            "pair": pair,
            "last_exported_at": as_utc(moment),
            "min_score": min_score,
            "filters": filters,
        }
        for name, pair, moment, min_score, filters in rows
    ]


def delete_cursor(s: Session, name: str) -> bool:
    """Forget a named cursor; whether it existed."""
    return s.execute(delete(CURSORS).where(CURSORS.c.name == name)).rowcount > 0


def withdrawn_pairs_held(s: Session) -> dict[tuple[str, str], int]:
    """How many withdrawal records each stored pair ``(src_lang, tgt_lang)`` holds."""
    query = select(WITHDRAWN.c.src_lang, WITHDRAWN.c.tgt_lang, func.count()).group_by(
        WITHDRAWN.c.src_lang, WITHDRAWN.c.tgt_lang
    )
    return {(a, b): int(n) for a, b, n in s.execute(query)}


def _horizon_key(src_lang: str, tgt_lang: str) -> str:
    return f"withdrawn_pruned_before:{src_lang}:{tgt_lang}"


def pruned_before(s: Session, src_lang: str, tgt_lang: str) -> datetime | None:
    """The moment before which a stored pair's withdrawal records were pruned (None when
    none ever were): a reader of withdrawals since an earlier moment would miss some."""
    found = s.get(Setting, _horizon_key(src_lang, tgt_lang))
    return None if found is None else as_utc(datetime.fromisoformat(str(found.value)))


def note_pruned(s: Session, src_lang: str, tgt_lang: str, before: datetime) -> None:
    """Remember that a stored pair's withdrawal records older than ``before`` are gone
    (kept in ``settings``, as the id floor is; only ever moved later)."""
    known = pruned_before(s, src_lang, tgt_lang)
    if known is None or known < as_utc(before):
        s.merge(Setting(key=_horizon_key(src_lang, tgt_lang), value=as_utc(before).isoformat()))


def prune_withdrawn(
    s: Session, src_lang: str, tgt_lang: str, before: datetime, *, dry_run: bool
) -> int:
    """Delete (or, with ``dry_run``, count) a stored pair's withdrawal records older than
    ``before``."""
    where = (
        WITHDRAWN.c.src_lang == src_lang,
        WITHDRAWN.c.tgt_lang == tgt_lang,
        WITHDRAWN.c.withdrawn_at < as_utc(before),
    )
    if dry_run:
        return int(
            s.execute(select(func.count()).select_from(WITHDRAWN).where(*where)).scalar_one()
        )
    deleted = int(s.execute(delete(WITHDRAWN).where(*where)).rowcount)
    if deleted:
        note_pruned(s, src_lang, tgt_lang, before)
    return deleted


def save_cursor(
    s: Session,
    name: str,
    pair: str,
    exported_at: datetime,
    min_score: float | None,
    filters: dict[str, object],
) -> None:
    """Create or move a named cursor."""
    values = {
        "name": name,
        "pair": pair,
        "last_exported_at": as_utc(exported_at),
        "min_score": min_score,
        "filters": filters,
        "updated_at": utcnow(),
    }
    stmt = insert_for(s, CURSORS).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[CURSORS.c.name],
        set_={
            "pair": stmt.excluded.pair,
            "last_exported_at": stmt.excluded.last_exported_at,
            "min_score": stmt.excluded.min_score,
            "filters": stmt.excluded.filters,
            "updated_at": stmt.excluded.updated_at,
        },
    )
    s.execute(stmt)
