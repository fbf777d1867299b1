"""``bitextdb check``: do the SQL tables and the vector store agree? ``--repair`` makes them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from . import audit
from .config import pair_name
from .db import consistency, corpus, graph
from .remove import remove_displaced
from .vectors import EdgeIndex
from .vectors.edge import DAMAGE_SAMPLE

if TYPE_CHECKING:
    from .api import BitextDB


@dataclass
class CheckReport:
    """Counts of every kind of disagreement; ``ok`` when all are zero."""

    languages: dict[str, dict[str, int]] = field(default_factory=dict)
    #: languages whose Qdrant Edge shard cannot be opened or read, or lacks or gives back
    #: otherwise the vectors of the copy written beside it, with what was found
    #: (``--repair`` sets it aside and makes it again)
    damaged: dict[str, str] = field(default_factory=dict)
    wrong_dimension: list[str] = field(default_factory=list)
    unindexed: int = 0
    dangling_neighbours: int = 0
    dangling_pairs: int = 0
    #: rows no kept row explains (see :func:`bitextdb.db.consistency.count_stray_rows`)
    stray_rows: int = 0
    dirty_candidates: int = 0
    #: sentences a changed file displaced, left by an ingest stopped before its end
    displaced_waiting: int = 0
    unmined: dict[str, int] = field(default_factory=dict)
    #: with ``deep``: per language pair, what differs from the lists derived again
    deep: list[dict[str, Any]] | None = None
    repaired: dict[str, int] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self._faults or self._work_waiting)

    @property
    def only_work_waiting(self) -> bool:
        """Whether all that keeps it from ``ok`` is work ``mine`` does (an ingest with
        ``--no-mine``, or one stopped: sentences to encode, mine or remove, candidates to
        recompute), nothing a repair must mend."""
        return self._work_waiting and not self._faults

    @property
    def _faults(self) -> bool:
        per_lang = any(
            c["missing_vectors"] or c["orphan_vectors"] or c["without_source"]
            for c in self.languages.values()
        )
        return bool(
            per_lang
            or self.damaged
            or self.wrong_dimension
            or self.dangling_neighbours
            or self.dangling_pairs
            or self.stray_rows
            or any(pair["problems"] for pair in self.deep or ())
        )

    @property
    def _work_waiting(self) -> bool:
        return bool(
            self.unindexed
            or self.dirty_candidates
            or self.displaced_waiting
            or any(self.unmined.values())
        )

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__) | {"ok": self.ok, "only_work_waiting": self.only_work_waiting}


def check(
    db: BitextDB, *, repair: bool = False, deep: bool = False, sample: int = audit.DEFAULT_SAMPLE
) -> CheckReport:
    """Compare SQL and the vector store; with ``deep``, also derive every list's mean,
    candidate, pair row and the selection again from the stored lists, and search
    ``sample`` lists of each side again exactly (see :mod:`bitextdb.audit`); with
    ``repair``, fix what disagrees, then re-check."""
    deep_sample = sample if deep else None
    report = _inspect(db, deep_sample)
    if not repair or report.ok:
        return report
    repaired: dict[str, int] = {}
    for lang in report.damaged:  # made again from what it and its copy hold; the rest below
        with db.db.session() as s:
            wanted = consistency.all_ids(s, lang)
        _, restored, doubted = cast("EdgeIndex", db.index).set_aside(lang, db.settings.dim, wanted)
        repaired["shards_set_aside"] = repaired.get("shards_set_aside", 0) + 1
        repaired["vectors_copied_back"] = repaired.get("vectors_copied_back", 0) + restored
        if doubted:
            repaired["copy_rows_differing"] = repaired.get("copy_rows_differing", 0) + doubted
    if report.displaced_waiting:  # removed before any is attributed as held by no source
        repaired["displaced_removed"] = len(remove_displaced(db)[0])
    for lang, counts in report.languages.items():
        with db.db.session() as s:
            wanted = consistency.all_ids(s, lang)
            indexed = consistency.indexed_ids(s, lang)
        stored = _stored_ids(db, lang)
        orphans = np.setdiff1d(stored, wanted)
        if len(orphans):
            db.index.delete(lang, orphans)
            repaired["orphan_vectors_removed"] = repaired.get("orphan_vectors_removed", 0) + len(
                orphans
            )
        missing = np.setdiff1d(indexed, stored)
        if len(missing):
            with db.db.session() as s:
                consistency.mark_unindexed(s, missing)
            repaired["vectors_restored"] = repaired.get("vectors_restored", 0) + len(missing)
        if counts["without_source"]:  # fewer now, maybe: a fresh count
            with db.db.session() as s:
                found = corpus.attribute(s, lang, consistency.unheld_ids(s, lang).tolist())
            repaired["sentences_attributed"] = repaired.get("sentences_attributed", 0) + found
    with db.db.session() as s:
        stray = consistency.delete_stray_rows(s)  # first: the lists they belong to are gone
    if stray:
        repaired["stray_rows_deleted"] = stray
    with db.db.session() as s:
        forgotten, unrecorded = consistency.forget_dangling(s)
    if forgotten:
        repaired["lists_forgotten"] = forgotten
    if unrecorded:
        repaired["accepted_pairs_dropped_unrecorded"] = unrecorded
    if stray or forgotten:
        # a list mined again may change its mean cosine, on which the candidates of every
        # sentence holding it depend: all of them are recomputed after the re-mining
        with db.db.session() as s:
            for a, b in db.language_pairs():
                graph.mark_all_dirty(s, a, b)
                graph.mark_all_dirty(s, b, a)
            graph.mark_every_selection_stale(s)  # pairs not mined now included
    # re-encodes what lacks a vector (resume), re-mines what is stale and recomputes dirty
    # candidates; bands of every mined point are rewritten from SQL
    reports = db.mine()
    if deep:  # on the state mining left: an audit skips pairs with work waiting
        fixed = audit.repair(db, sample)
        if any(fixed.values()):
            repaired |= fixed
            reports += db.mine()
    repaired["sentences_remined"] = sum(sum(r.new.values()) for r in reports)
    repaired["bands_rewritten"] = _rewrite_bands(db)
    final = _inspect(db, deep_sample)
    final.repaired = repaired
    return final


def _stored_ids(db: BitextDB, lang: str) -> np.ndarray:
    parts = [ids for ids, _ in db.index.scan(lang)]
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


def _inspect(db: BitextDB, deep_sample: int | None = None) -> CheckReport:
    report = CheckReport()
    mined = db.language_pairs()
    with db.db.session() as s:
        langs = graph.languages(s)
        sql_langs = sorted({*langs, *db.index.languages()})
        for lang in sql_langs:
            wanted = consistency.all_ids(s, lang)
            indexed = consistency.indexed_ids(s, lang)
            damage = (
                db.index.damage(lang, None if deep_sample is not None else DAMAGE_SAMPLE)
                if isinstance(db.index, EdgeIndex)
                else None
            )
            if damage is not None:  # none of its points counts as stored: see the repair
                report.damaged[lang] = damage
                stored = np.zeros(0, dtype=np.int64)
            else:
                stored = _stored_ids(db, lang)
            dim = None if damage is not None else db.index.dimension(lang)
            if dim is not None and dim != db.settings.dim:
                report.wrong_dimension.append(lang)
            report.languages[lang] = {
                "sentences": len(wanted),
                "vectors": len(stored),
                "missing_vectors": len(np.setdiff1d(indexed, stored)),
                "orphan_vectors": len(np.setdiff1d(stored, wanted)),
                "without_source": len(consistency.unheld_ids(s, lang)),
            }
        report.unindexed = consistency.count_unindexed(s)
        report.dangling_neighbours = consistency.count_dangling_neighbours(s)
        report.dangling_pairs = consistency.count_dangling_pairs(s)
        report.stray_rows = consistency.count_stray_rows(s)
        report.dirty_candidates = consistency.count_dirty(s, mined)
        report.displaced_waiting = sum(len(ids) for ids in corpus.displaced(s).values())
    for a, b in mined:
        with db.db.session() as s:
            n = graph.count_pending(s, a, b) + graph.count_pending(s, b, a)
        report.unmined[pair_name(a, b)] = n
    if deep_sample is not None:
        damaged = frozenset(report.damaged)
        report.deep = [pair.as_dict() for pair in audit.audit(db, deep_sample, damaged)]
    return report


def _rewrite_bands(db: BitextDB) -> int:
    miner = db.miner()
    total = 0
    for a, b in db.language_pairs():
        for side, other in ((a, b), (b, a)):
            with db.db.session() as s:
                base = graph.mined_base(s, side, other)
                stored = consistency.indexed_ids(s, side)
            # a sentence whose vector could not be made again (given, and lost) has no point
            held = np.isin(base.ids, stored)
            if not held.any():
                continue
            bars = np.where(base.sizes < db.settings.k, -np.inf, base.kth_cos)
            miner.write_bands(side, other, base.ids[held], bars[held])
            total += int(held.sum())
    return total
