"""Keeps the neighbour graph, the candidates and the accepted pairs up to date.

For a language pair (A, B), the mined sentences of A have exact kNN lists in the mined
sentences of B and vice versa. New sentences ΔA are added against B: their own lists are
searched, and every mined y of B whose list a newcomer x enters (cos(x, y) beats y's k-th
neighbour: a reverse-kNN search) gets its list merged. Then ΔB is added against A ∪ ΔA.
A changed list changes that sentence's r, so the candidates of the sentences holding it are
marked dirty; dirty candidates are recomputed and the greedy one-to-one selection is brought
up to date around the pairs that changed (``bitextdb.selection``).
Each step is one SQL transaction; candidates are recomputed from the dirty marks, so a
crash between steps is finished by the next run. See README "The miner".

Two ways to search, each exact where the collection is searched exactly:
- scan: stream the other side's vectors from the store and multiply in blocks
  (``knn.BlockedKnn``): one pass gives both directions. Used for exact-mode collections
  and for large additions (the bulk path).
- query: per-vector Qdrant queries (HNSW above ``exact_limit``): forward kNN, and the
  reverse search by k-th-cosine bands kept in each point's payload.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import Settings, pair_name, pairs_to_mine
from .db import Database, consistency, graph
from .errors import BusyError, StoreUnavailableError
from .knn import PAD_ID, BlockedKnn, TopK, exact_cosines, merge_topk
from .lock import mine_lock
from .margin import best_candidates, greedy_one_to_one
from .selection import reselect
from .vectors import Hit, VectorIndex, band_field, band_floor, band_of

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

Progress = Callable[[str, int, int], None]

# Past these many pairs touched by one refresh, or decided again around them, a walk over
# every pair is cheaper than following the changes (bitextdb.selection).
RESELECT_TOUCHED = 20_000
RESELECT_DECIDED = 100_000


@dataclass
class PairReport:
    """What one ``mine`` did for a language pair."""

    pair: str
    new: dict[str, int] = field(default_factory=dict)
    changed_lists: int = 0
    candidates_recomputed: int = 0
    pairs: int = 0
    accepted: int = 0
    paths: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return dict(self.__dict__)


#: how far apart two scores of the vector store may be and still swap places in exact
#: arithmetic (float32 dot products of unit vectors, with room to spare)
SCORE_SLACK = 1e-5


def _ids(hits: list[Hit]) -> np.ndarray:
    return np.array([h.id for h in hits], dtype=np.int64)


class Miner:
    """Incremental margin miner over one database and vector store."""

    def __init__(
        self,
        db: Database,
        index: VectorIndex,
        settings: Settings,
        *,
        progress: Progress | None = None,
        group_size: int = 65_536,
        scan_batch: int = 8192,
        query_block: int = 4096,
    ) -> None:
        self.db = db
        self.index = index
        self.settings = settings
        self.k = settings.k
        self.m = settings.k + max(4, settings.k)  # candidates kept before exact re-scoring
        self.progress = progress or (lambda stage, done, total: None)
        self.group_size = group_size
        self.scan_batch = scan_batch
        self.query_block = query_block
        #: neighbour searches issued (scan chunks and query batches); tests count these
        self.search_calls = 0

    # -- what to mine ----------------------------------------------------------------------
    def pairs(self) -> list[tuple[str, str]]:
        with self.db.session() as s:
            return pairs_to_mine(graph.languages(s), self.settings.pairs)

    def mine(self, pairs: list[tuple[str, str]] | None = None) -> list[PairReport]:
        """Bring every (or the given) language pair up to date."""
        return [self.mine_pair(a, b) for a, b in (pairs or self.pairs())]

    def mine_pair(self, a: str, b: str) -> PairReport:
        a, b = sorted((a, b))
        with self.db.advisory_lock(mine_lock(a, b)):
            return self._mine_pair(a, b)

    def _mine_pair(self, a: str, b: str) -> PairReport:
        started = time.perf_counter()
        self._require_whole_store(a, b)
        report = PairReport(pair_name(a, b))
        for side, other in ((a, b), (b, a)):
            # the path is chosen for the whole addition: groups only bound the memory, and a
            # short last group of a bulk load must not fall to the (approximate) query path
            with self.db.session() as s:
                new_ids = graph.pending_ids(s, side, other)
                path = self._path(len(new_ids), graph.count_mined(s, other, side))
            report.new[side] = len(new_ids)
            for start in range(0, len(new_ids), self.group_size):
                group = new_ids[start : start + self.group_size]
                changed = self._add(side, other, group, path)
                report.changed_lists += changed
                report.paths.append(path)
        self._refresh(a, b, report)
        report.seconds = time.perf_counter() - started
        return report

    def _require_whole_store(self, *langs: str) -> None:
        """Refuse to mine against a vector store that holds fewer vectors than SQL says it
        confirmed (no crash leaves it so: vectors are marked stored once they are, and
        removed after their sentences): it was damaged or changed by hand, and the lists
        mined from it would be stored wrong."""
        for lang in langs:
            with self.db.session() as s:
                confirmed = consistency.count_indexed(s, lang)
            held = self.index.count(lang)
            if held < confirmed:
                raise StoreUnavailableError(
                    f"The {lang} vector store holds {held:,} of the {confirmed:,} vectors the "
                    "SQL database says it stored: it was damaged or changed by hand, and "
                    "nothing is mined from it. `bitextdb check` says what is wrong, and "
                    "`bitextdb check --repair` mends it."
                )

    # -- taking sentences out ------------------------------------------------------------
    def forget(
        self, lang: str, ids: np.ndarray, remove_rows: Callable[[Session], None]
    ) -> list[PairReport]:
        """Take the sentences ``ids`` of ``lang`` out of every language pair, leaving what a
        batch run over the rest gives; ``remove_rows`` deletes them from SQL.

        Every sentence of another language whose list held one of them gets its list
        searched again without them (forward only: the others' lists lose no one else).
        Its ``r`` changes, so its candidate and those of the sentences holding it are
        recomputed, and the one-to-one selection is re-derived. The new lists and the
        deletion are one transaction; the vectors go after it (a leftover point without a
        sentence is passed over by mining and ``translate``; ``check --repair`` removes it).
        """
        with self.db.session() as s:
            others = graph.partners(s, lang)
        # sorted: two removers take the locks in one order
        with self.db.advisory_locks([mine_lock(lang, other) for other in others]):
            relisted = {other: self._relist(other, lang, ids) for other in others}
            with self.db.session() as s:
                if graph.partners(s, lang) != others:  # a worker mined a new pair meanwhile
                    raise BusyError(
                        f"Another worker mined {lang} against a new language meanwhile; "
                        "nothing was removed. Run the command again."
                    )
                for other, (holder_ids, lists, left) in relisted.items():
                    # the removed sentences' pairs go without a trace the selection could
                    # be followed from: a walk over every pair, even if this stops here
                    graph.mark_selection_stale(s, lang, other)
                    # lower bars go in first: a band below the true one is only slower
                    self._set_bands(other, lang, holder_ids, lists)
                    if not left:  # as if `lang` had never been mined against `other`
                        graph.drop_lists(s, other, lang)
                        continue
                    graph.write_lists(s, other, lang, holder_ids, lists, new=False)
                    graph.mark_holders_dirty(s, lang, other, holder_ids)
                remove_rows(s)
            self.index.delete(lang, ids)
            reports = []
            for other, (holder_ids, _, _) in relisted.items():
                started = time.perf_counter()
                report = PairReport(pair_name(lang, other))
                report.changed_lists = len(holder_ids)
                self._refresh(*sorted((lang, other)), report)
                report.seconds = time.perf_counter() - started
                reports.append(report)
        return reports

    def _relist(self, lang: str, other: str, gone: np.ndarray) -> tuple[np.ndarray, TopK, int]:
        """The sentences of ``lang`` whose list towards ``other`` holds one of ``gone``,
        their lists searched again among the mined sentences of ``other`` but ``gone``, and
        how many of those there are."""
        with self.db.session() as s:
            holder_ids = graph.holders(s, lang, other, gone)
            base = graph.mined_base(s, other, lang).without(gone)
        if not len(base.ids):
            return holder_ids, TopK.empty(len(holder_ids), self.k), 0
        path = self._path(len(holder_ids), len(base.ids))
        found, lists = [np.zeros(0, dtype=np.int64)], [TopK.empty(0, self.k)]
        for start in range(0, len(holder_ids), self.group_size):  # groups bound the memory
            group, vectors = self.index.retrieve(lang, holder_ids[start : start + self.group_size])
            if path == "scan":
                forward = self._scan(other, base, group, vectors)[0]
            else:
                forward = self._query(other, lang, base, group, vectors, reverse=False)[0]
            found.append(group)
            lists.append(TopK(forward.ids[:, : self.k], forward.cos[:, : self.k]))
        ids, cos = (np.concatenate([getattr(t, part) for t in lists]) for part in ("ids", "cos"))
        return np.concatenate(found), TopK(ids, cos), len(base.ids)

    # -- adding new sentences of one side ------------------------------------------------
    def _path(self, n_new: int, n_base: int) -> str:
        if self.settings.mine_path != "auto":
            return self.settings.mine_path
        if n_base <= self.settings.exact_limit or n_new >= self.settings.bulk_ratio * n_base:
            return "scan"
        return "query"

    def _add(self, side: str, other: str, new_ids: np.ndarray, path: str) -> int:
        """Mine ``new_ids`` (of ``side``) against the mined sentences of ``other``."""
        with self.db.session() as s:
            base = graph.mined_base(s, other, side)
        new_ids, new_vectors = self.index.retrieve(side, new_ids)
        if len(base.ids) == 0:
            forward, reverse_ids, reverse = TopK.empty(len(new_ids), self.m), base.ids, None
        elif path == "scan":
            forward, reverse_ids, reverse = self._scan(other, base, new_ids, new_vectors)
        else:
            forward, reverse_ids, reverse = self._query(other, side, base, new_ids, new_vectors)
        new_lists = TopK(forward.ids[:, : self.k].copy(), forward.cos[:, : self.k].copy())

        with self.db.session() as s:
            changed_ids = np.zeros(0, dtype=np.int64)
            changed_lists = TopK.empty(0, self.k)
            if reverse is not None and len(reverse_ids):
                rows = base.locate(reverse_ids)
                beats = _beats(reverse.cos[:, 0], reverse.ids[:, 0], base, rows, self.k)
                changed_ids = reverse_ids[beats]
                if len(changed_ids):
                    old = graph.load_lists(s, changed_ids, side, self.k)
                    changed_lists = merge_topk(old, reverse.take(beats), self.k)
            # newcomers' bands go in first: a point without a band is invisible to the
            # reverse search, while a band below the true one is only slower
            self._set_bands(side, other, new_ids, new_lists)
            graph.write_lists(s, side, other, new_ids, new_lists, new=True)
            if len(changed_ids):
                graph.write_lists(s, other, side, changed_ids, changed_lists, new=False)
                if len(changed_ids) > len(base.ids) // 5:
                    graph.mark_all_dirty(s, side, other)
                else:
                    graph.mark_holders_dirty(s, side, other, changed_ids)
        # k-th cosines only grow, so a band written after the commit can lag but never lie
        self._set_bands(other, side, changed_ids, changed_lists)
        return len(changed_ids)

    def _scan(
        self, other: str, base: graph.Base, new_ids: np.ndarray, new_vectors: np.ndarray
    ) -> tuple[TopK, np.ndarray, TopK]:
        # k suffices here: each block hands over every entry within rounding distance of its
        # k-th best, so nothing that belongs in a final list is dropped early
        engine = BlockedKnn(
            new_ids, new_vectors, self.k, device=self.settings.device, query_block=self.query_block
        )
        rev_ids: list[np.ndarray] = []
        rev_lists: list[TopK] = []
        seen = 0
        for ids, vectors in self.index.scan(other, self.scan_batch):
            self.search_calls += 1
            keep = base.contains(ids)
            ids, vectors = ids[keep], vectors[keep]
            rows = base.locate(ids)
            bars = np.where(base.sizes[rows] < self.k, -np.inf, base.kth_cos[rows])
            reverse = engine.add_chunk(ids, vectors, bars)
            beats = _beats(reverse.cos[:, 0], reverse.ids[:, 0], base, rows, self.k)
            rev_ids.append(ids[beats])
            rev_lists.append(reverse.take(beats))
            seen += len(ids)
            self.progress("search", seen, len(base.ids))
        if not rev_ids:
            return engine.forward, np.zeros(0, dtype=np.int64), TopK.empty(0, self.k)
        ids = np.concatenate(rev_ids)
        order = np.argsort(ids)
        lists = TopK(
            np.concatenate([t.ids for t in rev_lists])[order],
            np.concatenate([t.cos for t in rev_lists])[order],
        )
        return engine.forward, ids[order], lists

    def _query(
        self,
        other: str,
        side: str,
        base: graph.Base,
        new_ids: np.ndarray,
        new_vectors: np.ndarray,
        *,
        reverse: bool = True,
    ) -> tuple[TopK, np.ndarray, TopK]:
        exact = len(base.ids) <= self.settings.exact_limit
        self._vector_cache: dict[int, np.ndarray] = {}
        if not exact:
            self.index.build_index(other)
        # forward: the newcomers' own neighbours among the mined points of `other`, which
        # are the points with a band towards `side` (newcomers of `other` have none yet).
        # A point with a band but no stored list (a crash between the two writes) is
        # dropped here; a row left short by that is searched again with a larger limit.
        # Cosines are recomputed from retrieved vectors: a hit's own copy may differ in the
        # last bit between adapters, and exact ties must break the same way everywhere.
        field_name = band_field(side)
        want = min(self.m, len(base.ids))
        forward = TopK.empty(len(new_ids), self.m)

        def members(hits: list[Hit]) -> list[float]:
            return [h.score for h, member in zip(hits, base.contains(_ids(hits))) if member]

        def enough(hits: list[Hit], limit: int) -> bool:
            if len(hits) < limit:
                return True
            scores = members(hits)
            # the store ranks by its own float32 scores: only a last hit clearly below the
            # m-th member's score says that no point left out could rank among the m
            return len(scores) >= want and hits[-1].score < scores[want - 1] - SCORE_SLACK

        def tied(hits: list[Hit], limit: int) -> bool:
            # enough members, but ties at the m-th go on past the limit (copies of one
            # vector): widening could take every copy for every row; the scan settles it
            return limit >= 4 * (self.m + 8) and len(members(hits)) >= want

        options = {"exact": exact, "has_field": field_name, "with_vectors": False}
        tied_rows: list[int] = []
        searched = self._search_until(other, new_vectors, self.m + 8, enough, options, tied)
        for row, hits in searched:
            if hits is None:
                tied_rows.append(row)
                continue
            ids = _ids(hits)
            ids = ids[base.contains(ids)]
            if len(ids):
                cos = self._cosines(other, new_vectors[row], ids)
                order = np.lexsort((ids, -cos))[: self.m]
                forward.ids[row, : len(order)] = ids[order]
                forward.cos[row, : len(order)] = cos[order]
        if tied_rows:  # exact, and bounded by the scan's blocks, ties broken by id
            rows = np.array(tied_rows, dtype=np.int64)
            scanned = self._scan(other, base, new_ids[rows], new_vectors[rows])[0]
            forward.ids[rows, : self.k] = scanned.ids[:, : self.k]
            forward.cos[rows, : self.k] = scanned.cos[:, : self.k]
        # reverse: per band of k-th cosines, the base points a newcomer comes close enough to
        entries: dict[int, list[tuple[float, int]]] = {}
        bars = np.where(base.sizes < self.k, -np.inf, base.kth_cos)
        # the bands the points carry too: one whose write failed after its list's commit
        # (a lost connection, a kill) lags below the list's, and no list's would name it
        bands = (
            sorted({band_of(c) for c in bars} | self.index.bands(other, field_name))
            if len(base.ids) and reverse
            else []
        )
        for band in bands:
            options = {
                "exact": exact,
                "score_threshold": band_floor(int(band)) - 1e-6,
                "band": (field_name, int(band)),
                "with_vectors": True,
            }
            every = self._search_until(
                other, new_vectors, 64, lambda hits, limit: len(hits) < limit, options
            )
            for row, hits in every:
                assert hits is not None  # no row is given up on here
                ids = _ids(hits)
                ids = ids[base.contains(ids)]
                if len(ids):
                    cos = self._cosines(other, new_vectors[row], ids)
                    for pid, c in zip(ids.tolist(), cos.tolist()):
                        entries.setdefault(pid, []).append((c, int(new_ids[row])))
        ids = np.array(sorted(entries), dtype=np.int64)
        lists = TopK.empty(len(ids), self.m)
        for row, pid in enumerate(ids):
            best = sorted(entries[int(pid)], key=lambda e: (-e[0], e[1]))[: self.m]
            lists.ids[row, : len(best)] = [e[1] for e in best]
            lists.cos[row, : len(best)] = [e[0] for e in best]
        return forward, ids, lists

    def _search_until(
        self,
        lang: str,
        vectors: np.ndarray,
        limit: int,
        enough: Callable[[list[Hit], int], bool],
        options: dict[str, Any],
        give_up: Callable[[list[Hit], int], bool] | None = None,
    ) -> Iterator[tuple[int, list[Hit] | None]]:
        """Search every row of ``vectors`` in ``lang``; rows whose answer is not ``enough``
        are asked again with a four times larger limit, unless ``give_up`` says to stop
        there. Yields (row, hits) once per row; hits None for a row given up on."""
        todo = np.arange(len(vectors))
        while len(todo):
            self.search_calls += 1
            hits = self.index.search(
                lang, vectors[todo], limit, ef=max(self.settings.hnsw_ef, limit), **options
            )
            again = []
            for row, row_hits in zip(todo.tolist(), hits):
                if enough(row_hits, limit):
                    yield row, row_hits
                elif give_up is not None and give_up(row_hits, limit):
                    yield row, None
                else:
                    again.append(row)
            todo = np.array(again, dtype=np.int64)
            limit *= 4

    def _cosines(self, lang: str, query: np.ndarray, ids: np.ndarray) -> np.ndarray:
        """Exact float64 cosines of one query with stored points (cached per mine)."""
        missing = [i for i in ids.tolist() if i not in self._vector_cache]
        if missing:
            found, vectors = self.index.retrieve(lang, np.array(missing, dtype=np.int64))
            self._vector_cache.update(zip(found.tolist(), vectors))
        stacked = np.stack([self._vector_cache[i] for i in ids.tolist()])
        return exact_cosines(query[None], stacked[None])[0]

    def _set_bands(self, lang: str, other: str, ids: np.ndarray, lists: TopK) -> None:
        if not len(ids):
            return
        sizes = lists.sizes
        kth = np.where(
            sizes >= self.k, lists.cos[np.arange(len(ids)), np.maximum(sizes - 1, 0)], -np.inf
        )
        self.write_bands(lang, other, ids, kth)

    def write_bands(self, lang: str, other: str, ids: np.ndarray, kth: np.ndarray) -> None:
        """Store each point's k-th-cosine band (towards ``other``) in its payload."""
        bands = np.array([band_of(c) for c in kth])
        for band in np.unique(bands):
            self.index.set_band(lang, band_field(other), int(band), ids[bands == band])

    # -- candidates, pairs and the one-to-one selection ------------------------------------
    def _refresh(self, a: str, b: str, report: PairReport) -> None:
        """Recompute the dirty candidates and bring the one-to-one selection up to date:
        around the pairs that changed, or by a walk over every pair of (a, b) when many
        changed or no note says the flags are a walk's (a removal or a repair deletes it:
        their pairs went without a trace to follow)."""
        with self.db.session() as s:
            full = graph.selection_stale(s, a, b)
            touched: list[tuple[int, int]] = []
            for side, other in ((a, b), (b, a)):
                dirty = graph.load_dirty(s, side, other, self.k)
                report.candidates_recomputed += len(dirty.ids)
                if not len(dirty.ids):
                    continue
                sizes = dirty.lists.sizes
                column, margin = best_candidates(dirty.lists.cos, sizes, dirty.r, dirty.neighbour_r)
                rows = np.arange(len(dirty.ids))
                safe = np.maximum(column, 0)
                best_id = np.where(column >= 0, dirty.lists.ids[rows, safe], PAD_ID)
                best_cos = np.where(column >= 0, dirty.lists.cos[rows, safe], np.nan)
                best_r = np.where(column >= 0, dirty.neighbour_r[rows, safe], np.nan)
                graph.save_candidates(s, other, dirty.ids, best_id, best_cos, margin)
                forward = side == a  # src side is always the alphabetically first language
                lost = [
                    (int(sid), int(old)) if forward else (int(old), int(sid))
                    for sid, old, new in zip(dirty.ids, dirty.old_best, best_id)
                    if old != PAD_ID and old != new
                ]
                graph.drop_candidate_flags(s, lost, forward=forward)
                touched.extend(lost)
                now = graph.utcnow()
                upserts = []
                for sid, bid, cos, mar, r_self, r_other in zip(
                    dirty.ids, best_id, best_cos, margin, dirty.r, best_r
                ):
                    if bid == PAD_ID:
                        continue
                    src, tgt = (int(sid), int(bid)) if forward else (int(bid), int(sid))
                    upserts.append(
                        {
                            "src_id": src,
                            "tgt_id": tgt,
                            "src_lang": a,
                            "tgt_lang": b,
                            "cosine": float(cos),
                            "margin": float(mar),
                            "src_r": float(r_self if forward else r_other),
                            "tgt_r": float(r_other if forward else r_self),
                            "forward": forward,
                            "backward": not forward,
                            "accepted": False,
                            "updated_at": now,
                        }
                    )
                graph.upsert_pairs(s, upserts)
                touched.extend((int(row["src_id"]), int(row["tgt_id"])) for row in upserts)
            touched = list(dict.fromkeys(touched))  # a pair may lose both flags at once
            if not full and self._reselect(s, a, b, touched, report):
                return
            graph.withdraw_orphans(s, a, b)
            graph.delete_orphan_pairs(s, a, b)
            graph.clear_selection_stale(s, a, b)
            src, tgt, margin, accepted = graph.load_selection(s, a, b)
            selection = greedy_one_to_one(src, tgt, margin)
            flip = selection != accepted
            graph.withdraw_pairs(s, src[accepted & ~selection], tgt[accepted & ~selection])
            graph.set_accepted(s, src[flip], tgt[flip], selection[flip])
            report.pairs = len(src)
            report.accepted = int(selection.sum())

    def _reselect(
        self, s: Session, a: str, b: str, touched: list[tuple[int, int]], report: PairReport
    ) -> bool:
        """Bring the selection up to date around the pairs this refresh touched, when they
        are few (``bitextdb.selection``); False when a walk over everything is cheaper."""
        if len(touched) > RESELECT_TOUCHED:
            return False
        graph.drop_orphans_among(s, touched)
        flips = reselect(
            touched,
            lambda srcs, tgts: graph.pairs_touching(s, a, b, srcs, tgts),
            limit=RESELECT_DECIDED,
        )
        if flips is None:
            return False
        keys = list(flips)
        src = np.array([key[0] for key in keys], dtype=np.int64)
        tgt = np.array([key[1] for key in keys], dtype=np.int64)
        now_accepted = np.array([flips[key] for key in keys], dtype=bool)
        graph.withdraw_pairs(s, src[~now_accepted], tgt[~now_accepted])
        graph.set_accepted(s, src, tgt, now_accepted)
        report.pairs, report.accepted = graph.count_selection(s, a, b)
        return True


def _beats(
    cos: np.ndarray, ids: np.ndarray, base: graph.Base, rows: np.ndarray, k: int
) -> np.ndarray:
    """Whether (cos, id) would enter each base row's list: better than its k-th entry."""
    if not len(rows):
        return np.zeros(0, dtype=bool)
    not_full = base.sizes[rows] < k
    kth_cos = base.kth_cos[rows]
    better = (cos > kth_cos) | ((cos == kth_cos) & (ids < base.kth_id[rows]))
    return (ids != PAD_ID) & (not_full | better)
