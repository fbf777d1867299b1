"""Removing sources: a corpus ingested by mistake (the wrong language, a broken file) is
taken out again, and the pairs become those of a batch run over what remains.

A source's occurrences go with it, and so do the sentences no other source holds, with
their vectors, lists, candidates and pairs; the miner (:meth:`bitextdb.miner.Miner.forget`)
searches again the lists of the other languages' sentences that held them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import check_lang, resolved_path
from .db import consistency, corpus
from .db.export_sql import as_utc
from .errors import BusyError, InputError, UnknownSourceError
from .lock import displacing_lock

log = logging.getLogger(__name__)

#: what ``remove`` reports of each language pair the miner brought up to date
PAIR_FIELDS = ("pair", "changed_lists", "candidates_recomputed", "pairs", "accepted", "seconds")

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .api import BitextDB


def list_sources(db: BitextDB, lang: str | None = None) -> list[dict[str, Any]]:
    """The sources ingested (of ``lang``, or of every language), by language and name:
    ``lang, name, path, records, split_sentences, occurrences, sentences, created_at,
    updated_at`` (ISO 8601, UTC, as the export cursors' times) and ``missing`` (see
    :func:`file_missing`)."""
    if lang is not None:
        lang = check_lang(lang)
    with db.db.session() as s:
        rows = corpus.list_sources(s, lang)
    for row in rows:
        del row["id"]
        row["missing"] = file_missing(row["path"])
        for key in ("created_at", "updated_at"):  # SQLite hands them back naive
            if row.get(key) is not None:
                row[key] = as_utc(row[key]).isoformat()
    return rows


def file_missing(path: str | None) -> bool:
    """Whether a source's file is gone from where this process sees files: only for the
    absolute paths files are recorded by (not for texts, standard input, or the paths
    given as typed before schema 0005, 2026-11-28), and not for pipes that earlier
    versions recorded by their passing names (``/proc/123/fd/pipe:[456]``, ``/dev/fd/63``)."""
    if path is None or not Path(path).is_absolute():
        return False
    if path.startswith(("/proc/", "/dev/fd/")):  # a stream, read once: never "missing"
        return False
    found = Path(path)
    return not found.exists() or found.is_dir()  # a directory now stands where the file was


def remove_missing(
    db: BitextDB, lang: str | None = None, *, dry_run: bool = False
) -> list[dict[str, Any]]:
    """Remove the sources (of ``lang``, or of every language) whose file is gone, as
    :func:`remove_sources` does: one report per language that had any."""
    by_lang: dict[str, list[str]] = {}
    for row in list_sources(db, lang):
        if row["missing"]:
            by_lang.setdefault(row["lang"], []).append(row["name"])
    return [
        remove_sources(db, code, names, dry_run=dry_run, exact=True)
        for code, names in sorted(by_lang.items())
    ]


def remove_sources(
    db: BitextDB,
    lang: str,
    names: Sequence[str],
    *,
    dry_run: bool = False,
    exact: bool = False,
) -> dict[str, Any]:
    """Forget the sources ``names`` of ``lang`` (a file's source is named by its absolute
    path unless ``--source`` named it; a relative path is resolved). ``dry_run`` only counts.

    Returns what went (``occurrences``, ``sentences_removed``), what stays because another
    source holds it too (``sentences_kept``), per language pair what the miner did, and
    ``notes``: a name that is both a source's own name and, resolved, a file's source
    removes the first, and a note says so.
    """
    lang = check_lang(lang)
    if not names:
        raise InputError("Name at least one source to remove; `bitextdb sources` lists them.")
    # ``exact``: names as stored (remove_missing's), not as typed, so none is resolved
    spellings = {name: (name, name if exact else resolved_path(name)) for name in names}
    with db.db.session() as s:
        wanted = [spelling for both in spellings.values() for spelling in both]
        known = {row["name"]: row for row in corpus.list_sources(s, lang, wanted)}
        chosen: dict[int, dict[str, Any]] = {}
        for name, (literal, path) in spellings.items():
            row = known.get(literal) or known.get(path)
            if row is None:
                mined = [pair for pair in db.language_pairs() if lang in pair]
                waiting = consistency.count_dirty(s, mined)
                raise _unknown(name, lang, corpus.source_names(s, lang), waiting)
            chosen[row["id"]] = row
        notes = [
            f"{literal} named the source called so; the source of the file {path} stays "
            "(name it by that path to remove it)."
            for literal, path in spellings.values()
            if literal != path
            and literal in known
            and path in known
            and known[path]["id"] not in chosen  # named too, by its path
        ]
        source_ids = sorted(chosen)
        gone = corpus.sentences_only_in(s, source_ids)
        kept = corpus.count_sentences_in(s, source_ids) - len(gone)
    report: dict[str, Any] = {
        "lang": lang,
        "sources": sorted(row["name"] for row in chosen.values()),
        "occurrences": sum(row["occurrences"] for row in chosen.values()),
        "sentences_removed": len(gone),
        "sentences_kept": kept,
        "dry_run": dry_run,
        "pairs": [],
        "notes": notes,
    }
    if dry_run:
        return report

    def remove_rows(s: Session) -> None:
        # on a shared PostgreSQL database another worker may have ingested one of these
        # sentences from another source since they were counted: then nothing is removed
        if not np.array_equal(corpus.sentences_only_in(s, source_ids), gone):
            raise BusyError(
                "Another writer changed these sources while they were being removed; "
                "nothing was removed. Run the command again."
            )
        corpus.remove_sources(s, source_ids, gone)

    report["pairs"] = _pair_reports(db.miner().forget(lang, gone, remove_rows))
    return report


def remove_displaced(db: BitextDB) -> tuple[set[int], list[dict[str, Any]]]:
    """Remove the sentences that files ingested again displaced (recorded by
    :func:`bitextdb.db.corpus.note_displaced`) and that no source holds any more, as
    ``remove`` would; the others are forgotten. Returns the ids removed and what the miner
    did per language pair. A language where another writer meanwhile ingested one of them
    (shared PostgreSQL) is left for the next call, with a warning."""
    with db.db.session() as s:
        pending = corpus.displaced(s)
    removed: set[int] = set()
    reports: list[dict[str, Any]] = []
    for lang in pending:
        # waits for the ingests of changed files of ``lang`` running elsewhere (shared
        # PostgreSQL): a line they moved may come back below
        with db.db.advisory_lock(displacing_lock(lang)):
            try:
                gone, pairs = _remove_displaced_of(db, lang)
            except BusyError as exc:
                log.warning("%s", exc)
                continue
        removed.update(gone)
        reports += pairs
    return removed, reports


def _remove_displaced_of(db: BitextDB, lang: str) -> tuple[list[int], list[dict[str, Any]]]:
    with db.db.session() as s:  # again, under the lock
        ids = corpus.displaced(s).get(lang, [])
        gone = corpus.unheld_among(s, ids)
    held = sorted(set(ids).difference(gone.tolist()))

    def remove_rows(s: Session) -> None:
        if not np.array_equal(corpus.unheld_among(s, gone.tolist()), gone):
            raise BusyError(
                "Another writer ingested some of the sentences a changed file left while "
                "they were being removed; the next ingest or mine removes the rest."
            )
        corpus.remove_sentences(s, gone)  # their records go with them (cascade)
        corpus.forget_displaced(s, held)

    if not len(gone):
        with db.db.session() as s:
            corpus.forget_displaced(s, held)
        return [], []
    return gone.tolist(), _pair_reports(db.miner().forget(lang, gone, remove_rows))


def _pair_reports(pairs: list[Any]) -> list[dict[str, Any]]:
    return [{key: getattr(pair, key) for key in PAIR_FIELDS} for pair in pairs]


def _unknown(name: str, lang: str, names: list[str], waiting: int = 0) -> UnknownSourceError:
    """The error for a source ``lang`` does not have, naming a few it has, and the work a
    removal stopped after its commit left (``waiting`` candidates to recompute)."""
    listed = ", ".join(repr(n) for n in names[:5]) + (", ..." if len(names) > 5 else "")
    return UnknownSourceError(
        f"No source {name!r} in {lang}"
        + (f" (its sources: {listed})." if names else ": it has no sources.")
        + " `bitextdb sources` lists them."
        + (
            f" {waiting:,} candidates of {lang} wait to be recomputed: if a removal of it was "
            "stopped, it took the source out, and `bitextdb mine` finishes its work."
            if waiting
            else ""
        )
    )
