"""``bitextdb check --deep``: derive again, from the stored neighbour lists alone, what
mining keeps up to date step by step (each list's size, mean and k-th entry, every
sentence's candidate, the pair rows and the one-to-one selection), and count where the
stored state differs.

The incremental miner touches only what an addition or a removal changes; this recomputes
everything the way a batch run over the same lists would, so a list or candidate that an
update missed, or a pair row changed or deleted by hand, shows up here. It reads every
list and pair row of a language pair once (memory: about 40 bytes a list entry).

The lists themselves are taken as stored, but for a sample of each side (spread evenly
by id), which is searched again exactly against the other side: a list that differs is
wrong where that side is searched exactly, and the HNSW recall gap where it is not.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import pair_name
from .db import consistency, graph
from .margin import best_candidates, greedy_one_to_one, mean_cosines
from .topk import PAD_ID

if TYPE_CHECKING:
    from .api import BitextDB

#: stored floats are compared with this relative tolerance (they are recomputed the same
#: way, so they agree to the last bit unless something changed them)
RTOL = 1e-9
#: lists of each side searched again exactly, by default
DEFAULT_SAMPLE = 100


@dataclass
class PairAudit:
    """What differs, for one language pair; ``pending`` when mining has work waiting there
    (then the pair is not compared: the stored state is not final yet)."""

    pair: str
    pending: bool = False
    lists: int = 0
    #: lists whose size, order, mean or k-th entry is not what their entries give, that
    #: name a sentence twice or hold one without a list back (its mean is unknown), or an
    #: entry whose cosine is not that of the two stored vectors
    lists_wrong: int = 0
    #: sentences whose stored candidate or margin is not the best of their list
    candidates_wrong: int = 0
    pairs: int = 0
    #: candidates with no pair row (or a row without that direction's flag)
    pairs_missing: int = 0
    #: pair rows flagged as a candidate that no list gives
    pairs_extra: int = 0
    #: pair rows whose cosine or margin differs from their lists'
    pairs_wrong: int = 0
    #: pairs whose accepted flag differs from the greedy walk over the candidates
    selection_wrong: int = 0
    #: lists searched again exactly (a sample of each side), and those that differ: a
    #: problem where the other side is searched exactly (up to ``exact_limit``), the HNSW
    #: recall gap otherwise (``approximate``)
    sampled: int = 0
    sampled_differ: int = 0
    approximate: bool = False

    @property
    def problems(self) -> int:
        return (
            self.lists_wrong
            + self.candidates_wrong
            + self.pairs_missing
            + self.pairs_extra
            + self.pairs_wrong
            + self.selection_wrong
            + (0 if self.approximate else self.sampled_differ)
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"problems": self.problems}


@dataclass
class Fixes:
    """What a repair of one language pair does: the lists to mine again, per direction,
    and the pair rows whose forward or backward flag no list gives."""

    lists: dict[tuple[str, str], np.ndarray] = field(default_factory=dict)
    forward: list[tuple[int, int]] = field(default_factory=list)
    backward: list[tuple[int, int]] = field(default_factory=list)


@dataclass
class _Side:
    """One direction's lists as stored, and what they give when derived again."""

    stored: consistency.StoredLists
    r: np.ndarray  # means recomputed from the entries
    wrong: np.ndarray  # per list: size, order, mean or k-th entry differs


def audit(
    db: BitextDB, sample: int = DEFAULT_SAMPLE, skip: frozenset[str] = frozenset()
) -> list[PairAudit]:
    """Audit every language pair mined in ``db`` (see the module's docstring), searching
    ``sample`` lists of each side again exactly; pairs of a language in ``skip`` (its
    vectors cannot be read) are left out."""
    pairs = [(a, b) for a, b in db.language_pairs() if not {a, b} & skip]
    return [audit_pair(db, a, b, sample)[0] for a, b in pairs]


def audit_pair(
    db: BitextDB, a: str, b: str, sample: int = DEFAULT_SAMPLE
) -> tuple[PairAudit, Fixes]:
    """Audit ``a``-``b`` (sorted codes): the counts, and what a repair would do."""
    report = PairAudit(pair_name(a, b))
    fixes = Fixes()
    k = db.settings.k
    with db.db.session() as s:
        report.pending = bool(
            graph.count_pending(s, a, b)
            or graph.count_pending(s, b, a)
            or consistency.count_dirty(s, [(a, b)])
        )
        if report.pending:
            return report, fixes
        ours = _derive(consistency.stored_lists(s, a, b, k))
        theirs = _derive(consistency.stored_lists(s, b, a, k))
        rows = consistency.stored_pairs(s, a, b)
    report.lists = len(ours.stored.ids) + len(theirs.stored.ids)
    fwd = _candidates(ours, theirs)
    bwd = _candidates(theirs, ours)
    for side, other, found in ((a, b, fwd), (b, a, bwd)):
        mine, yours = (ours, theirs) if side == a else (theirs, ours)
        bad = mine.wrong | found["unmatched"] | _cosines_wrong(db, side, other, mine)
        report.lists_wrong += int(bad.sum())
        report.candidates_wrong += int(found["wrong"].sum())
        approximate = len(yours.stored.ids) > db.settings.exact_limit
        report.approximate |= approximate
        differ = _search_again(db, side, other, mine, yours, sample)
        report.sampled += min(sample, len(mine.stored.ids))
        report.sampled_differ += int(differ.sum())
        if not approximate:
            bad[differ] = True
        fixes.lists[(side, other)] = mine.stored.ids[bad]

    # the candidate pairs the lists give, keyed (src, tgt): forward from a, backward from b
    expected: dict[tuple[int, int], list[Any]] = {}
    for sid, best, cos, margin in zip(*_given(ours, fwd)):
        expected[(sid, best)] = [cos, margin, True, False]
    for sid, best, cos, margin in zip(*_given(theirs, bwd)):
        expected.setdefault((best, sid), [cos, margin, False, False])[3] = True

    report.pairs = len(rows.src)
    keys = list(zip(rows.src.tolist(), rows.tgt.tolist()))
    wants = [expected.get(key) for key in keys]
    known = np.array([w is not None for w in wants], dtype=bool)
    want_fwd = np.array([w is not None and w[2] for w in wants], dtype=bool)
    want_bwd = np.array([w is not None and w[3] for w in wants], dtype=bool)
    want_cos = np.array([np.nan if w is None else w[0] for w in wants], dtype=np.float64)
    want_margin = np.array([np.nan if w is None else w[1] for w in wants], dtype=np.float64)
    extra_fwd, extra_bwd = rows.forward & ~want_fwd, rows.backward & ~want_bwd
    report.pairs_extra = int((extra_fwd | extra_bwd).sum())
    # a list mined again is mined as new, so nothing after knows the candidate its old one
    # flagged: that flag goes with it (mining sets it again if the candidate stays)
    remined_fwd = rows.forward & np.isin(rows.src, fixes.lists[(a, b)])
    remined_bwd = rows.backward & np.isin(rows.tgt, fixes.lists[(b, a)])
    fixes.forward = [keys[i] for i in np.flatnonzero(extra_fwd | remined_fwd)]
    fixes.backward = [keys[i] for i in np.flatnonzero(extra_bwd | remined_bwd)]
    flag_missing = (want_fwd & ~rows.forward) | (want_bwd & ~rows.backward)
    report.pairs_missing = int(flag_missing.sum()) + len(expected.keys() - set(keys))
    same = _close(rows.cosine, want_cos) & _close(rows.margin, want_margin)
    report.pairs_wrong = int((known & ~same).sum())

    # the selection: the greedy walk over the candidates the lists give
    candidates = list(expected)
    src = np.array([key[0] for key in candidates], dtype=np.int64)
    tgt = np.array([key[1] for key in candidates], dtype=np.int64)
    margins = np.array([expected[key][1] for key in candidates], dtype=np.float64)
    walk = greedy_one_to_one(src, tgt, margins)
    chosen = {key for key, on in zip(candidates, walk.tolist()) if on}
    accepted = {key for key, on in zip(keys, rows.accepted.tolist()) if on}
    report.selection_wrong = len(chosen ^ accepted)
    return report, fixes


def _cosines_wrong(db: BitextDB, lang: str, other: str, mine: _Side) -> np.ndarray:
    """Per list of ``mine``, whether an entry's cosine is not the dot product of the two
    stored vectors (computed as mining computes it, :func:`bitextdb.knn.row_dots`), or names
    a sentence without one: one pass over ``lang``'s vectors, the entries' fetched (a list
    whose own sentence lost its vector is the plain check's ``missing_vectors``)."""
    from .knn import row_dots  # torch: imported by the deep check only

    ids, lists = mine.stored.ids, mine.stored.lists
    wrong = np.zeros(len(ids), dtype=bool)
    if not len(ids):
        return wrong
    for chunk_ids, chunk_vectors in db.index.scan(lang):
        rows = np.minimum(np.searchsorted(ids, chunk_ids), len(ids) - 1)
        listed = ids[rows] == chunk_ids
        rows, vectors = rows[listed], chunk_vectors[listed]
        entry_row, entry_col = np.nonzero(lists.ids[rows] != PAD_ID)
        named = lists.ids[rows][entry_row, entry_col]
        found, found_vectors = db.index.retrieve(other, np.unique(named))
        at = np.minimum(np.searchsorted(found, named), max(len(found) - 1, 0))
        has = (found[at] == named) if len(found) else np.zeros(len(named), dtype=bool)
        dots = row_dots(vectors, entry_row[has], found_vectors, at[has])
        stored = lists.cos[rows][entry_row[has], entry_col[has]]
        wrong[rows[entry_row[has][~_close(dots, stored)]]] = True
        wrong[rows[entry_row[~has]]] = True
    return wrong


def _search_again(
    db: BitextDB, lang: str, other: str, mine: _Side, yours: _Side, sample: int
) -> np.ndarray:
    """Per list of ``mine``, whether an exact search of ``other`` (among the sentences with
    a list back, as mining searches) gives other entries or cosines; only ``sample`` lists,
    spread evenly by id, are searched (the others stay False)."""
    differ = np.zeros(len(mine.stored.ids), dtype=bool)
    n = len(mine.stored.ids)
    if not sample or not n:
        return differ
    rows = np.unique(np.linspace(0, n - 1, min(sample, n)).round().astype(np.int64))
    from .knn import BlockedKnn  # torch: imported by the deep check only

    ids, vectors = db.index.retrieve(lang, mine.stored.ids[rows])
    rows = np.searchsorted(mine.stored.ids, ids)  # those with a vector, in that order
    engine = BlockedKnn(ids, vectors, db.settings.k, device=db.settings.device)
    for chunk_ids, chunk_vectors in db.index.scan(other):
        keep = np.isin(chunk_ids, yours.stored.ids)
        engine.add_chunk(chunk_ids[keep], chunk_vectors[keep], np.full(int(keep.sum()), np.inf))
    fresh, stored = engine.forward, mine.stored.lists.take(rows)
    same_cos = _close(fresh.cos, stored.cos) | (np.isinf(fresh.cos) & np.isinf(stored.cos))
    differ[rows] = (fresh.ids != stored.ids).any(axis=1) | ~same_cos.all(axis=1)
    return differ


def repair(db: BitextDB, sample: int = DEFAULT_SAMPLE) -> dict[str, int]:
    """Make the stored state what the audit derives: lists found wrong are mined again,
    candidate flags no list gives are cleared, every candidate is recomputed and the
    selection re-derived (withdrawals recorded as mining records them) by the next mine.
    Returns counts: language pairs marked for it, lists dropped, flags cleared."""
    done = {"language_pairs_rederived": 0, "lists_remined": 0, "flags_cleared": 0}
    for a, b in db.language_pairs():
        report, fixes = audit_pair(db, a, b, sample)
        if report.pending or not report.problems:
            continue
        with db.db.session() as s:
            for (side, other), ids in fixes.lists.items():
                consistency.forget_lists(s, side, other, ids)
                done["lists_remined"] += len(ids)
            graph.drop_candidate_flags(s, fixes.forward, forward=True)
            graph.drop_candidate_flags(s, fixes.backward, forward=False)
            done["flags_cleared"] += len(fixes.forward) + len(fixes.backward)
            graph.mark_all_dirty(s, a, b)
            graph.mark_all_dirty(s, b, a)
            graph.mark_selection_stale(s, a, b)  # its flags may be no walk's
        done["language_pairs_rederived"] += 1
    return done


def _derive(stored: consistency.StoredLists) -> _Side:
    lists = stored.lists
    sizes = lists.sizes
    r = mean_cosines(lists.cos, sizes)
    # entries by rank fill 0..size-1, best first by (-cosine, id): a sentence named twice
    # breaks that order too (the same cosine, an id not above the one before)
    held = lists.ids != PAD_ID
    gap = held[:, 1:] & ~held[:, :-1]
    a_cos, b_cos = lists.cos[:, :-1], lists.cos[:, 1:]
    a_id, b_id = lists.ids[:, :-1], lists.ids[:, 1:]
    disorder = held[:, 1:] & ((b_cos > a_cos) | ((b_cos == a_cos) & (b_id <= a_id)))
    rows, last = np.arange(len(sizes)), np.maximum(sizes - 1, 0)
    kth_cos = np.where(sizes > 0, lists.cos[rows, last], np.nan)
    kth_id = np.where(sizes > 0, lists.ids[rows, last], PAD_ID)
    wrong = (
        stored.misranked
        | gap.any(axis=1)
        | disorder.any(axis=1)
        | (stored.size != sizes)
        | ~_close(stored.r, r)
        | ~(_close(stored.kth_cos, kth_cos) | (np.isnan(stored.kth_cos) & np.isnan(kth_cos)))
        | (stored.kth_id != kth_id)
    )
    return _Side(stored, r, wrong)


def _candidates(mine: _Side, theirs: _Side) -> dict[str, np.ndarray]:
    """Each list's best-margin neighbour derived again (``best``, ``cos``, ``margin``),
    lists holding a neighbour without a list back (``unmatched``), and stored candidates
    that differ (``wrong``)."""
    lists = mine.stored.lists
    held = lists.ids != PAD_ID
    # each entry's own list back, for its mean (theirs.stored.ids is sorted)
    back = np.append(theirs.stored.ids, PAD_ID)
    where = np.searchsorted(theirs.stored.ids, lists.ids)
    found = held & (back[where] == lists.ids)
    unmatched = (held & ~found).any(axis=1)
    neighbour_r = np.where(found, np.append(theirs.r, 0.0)[where], 0.0)
    column, margin = best_candidates(lists.cos, lists.sizes, mine.r, neighbour_r)
    rows, safe = np.arange(len(column)), np.maximum(column, 0)
    best = np.where(column >= 0, lists.ids[rows, safe], PAD_ID)
    cos = np.where(column >= 0, lists.cos[rows, safe], np.nan)
    stored = mine.stored
    none = (best == PAD_ID) & np.isnan(stored.best_margin)
    wrong = (stored.best_id != best) | ~(_close(stored.best_margin, margin) | none)
    return {"best": best, "cos": cos, "margin": margin, "unmatched": unmatched, "wrong": wrong}


def _given(side: _Side, found: dict[str, np.ndarray]) -> tuple[list[Any], ...]:
    """(sentence, candidate, cosine, margin) of the lists that have a candidate."""
    has = found["best"] != PAD_ID
    return (
        side.stored.ids[has].tolist(),
        found["best"][has].tolist(),
        found["cos"][has].tolist(),
        found["margin"][has].tolist(),
    )


def _close(a: Any, b: Any) -> Any:
    return np.isclose(a, b, rtol=RTOL, atol=0.0)
