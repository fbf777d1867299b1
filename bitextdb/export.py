"""Export mined pairs as TSV, JSONL, Moses, TMX or Parquet files, streamed and optionally
compressed.

The default export (ratio margin, ``max`` retrieval) is the stored selection: the accepted
pairs of the ``pairs`` table, read with a streaming cursor. Other margins and retrieval
modes (as in LASER's ``mine_bitexts.py``) are re-derived from the stored kNN lists and
``r`` values without searching again; see :func:`select_pairs`.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import json
import lzma
import math
import os
import sys
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import numpy as np

from . import tmx
from .config import breaks_a_line, join_pair, pair_name, split_pair
from .db import consistency, export_sql, graph
from .db.tables import utcnow
from .errors import BitextDBError, HistoryGoneError, InputError
from .filters import PairFilter
from .interrupts import committed
from .lock import mine_lock
from .margin import MARGINS, MarginFn, greedy_one_to_one
from .outputs import OutputFile, output_file
from .parquet import ParquetSink, require_pyarrow
from .readers import uncompressed_suffix

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from .api import BitextDB

FORMATS = ("tsv", "jsonl", "moses", "tmx", "parquet")
RETRIEVALS = ("max", "intersect", "fwd", "bwd")
COMPRESSIONS = {".gz": "gzip", ".bz2": "bzip2", ".xz": "xz"}
#: pairs written per round of text lookups
BATCH = 1000
MAX_CURSOR_NAME = 128

#: ``(output src id, output tgt id, score, cosine)``
Row = tuple[int, int, float, float]


# -- the language pair -------------------------------------------------------------------------
@dataclass(frozen=True)
class PairSpec:
    """A language pair in the direction asked for; ``swap`` when stored the other way round."""

    src_lang: str
    tgt_lang: str

    @property
    def swap(self) -> bool:
        """Whether the output's src side is the stored tgt side (stored pairs are sorted)."""
        return self.src_lang > self.tgt_lang

    @property
    def stored(self) -> tuple[str, str]:
        """The pair as the ``pairs`` table holds it (``src_lang < tgt_lang``)."""
        a, b = sorted((self.src_lang, self.tgt_lang))
        return a, b

    @property
    def name(self) -> str:
        """``src-tgt`` in the direction asked for (as :func:`bitextdb.config.join_pair`)."""
        return join_pair(self.src_lang, self.tgt_lang)

    @property
    def canonical(self) -> str:
        """The canonical (sorted) name, as in ``stats``."""
        return pair_name(self.src_lang, self.tgt_lang)


def parse_directed_pair(text: str) -> PairSpec:
    """Parse ``en-de`` (or ``zh-Hant:en``) keeping the order given."""
    try:
        return PairSpec(*split_pair(text))
    except BitextDBError as exc:
        raise InputError(str(exc)) from exc


def resolve_pair(db: BitextDB, pair: str) -> PairSpec:
    """Parse ``pair`` and check that the database holds both languages and mines the pair.

    A pair that lost a language (its sources were removed) is accepted too while it has
    withdrawn pairs to report, or had some that ``cursors prune`` deleted: it exports no
    pair, and ``withdrawn`` says which went (a cursor past them is then told of nothing
    more; an earlier ``since``, that they went), so a script exporting every pair it ever
    had, or an HTTP copy kept in sync, goes on.
    """
    spec = parse_directed_pair(pair)
    with db.db.session() as s:
        langs = export_sql.languages(s)
        lost = not {spec.src_lang, spec.tgt_lang} <= set(langs)
        if lost and (
            export_sql.has_withdrawn(s, *spec.stored)
            or export_sql.pruned_before(s, *spec.stored) is not None
        ):
            return spec
    for lang in (spec.src_lang, spec.tgt_lang):
        if lang not in langs:
            held = ", ".join(langs) or "none yet"
            raise InputError(f"The database has no sentences in {lang!r} (languages: {held}).")
    wanted = db.settings.pairs
    if wanted is not None and spec.canonical not in wanted:
        raise InputError(
            f"The pair {spec.canonical} is not mined in this database (pairs: "
            f"{', '.join(wanted) or 'none'}); add it with `bitextdb config --pairs`."
        )
    return spec


# -- re-deriving a selection from the neighbour lists ----------------------------------------
@dataclass
class Selection:
    """Selected pairs in the output direction, sorted by (-score, src, tgt)."""

    src: np.ndarray
    tgt: np.ndarray
    score: np.ndarray
    cosine: np.ndarray

    def __len__(self) -> int:
        return len(self.src)


def _best(
    lists: export_sql.Lists, other: export_sql.Lists, margin: MarginFn
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per sentence of ``lists`` (with neighbours): its id, best neighbour, score, cosine.

    The best neighbour has the highest ``margin`` score; ties go to the first in kNN order.
    """
    n, k = lists.nb_ids.shape
    empty_ids = np.zeros(0, dtype=np.int64)
    if n == 0 or k == 0 or len(other.ids) == 0:
        return empty_ids, empty_ids.copy(), np.zeros(0), np.zeros(0)
    pos = np.minimum(np.searchsorted(other.ids, lists.nb_ids), len(other.ids) - 1)
    valid = (np.arange(k)[None, :] < lists.sizes[:, None]) & (other.ids[pos] == lists.nb_ids)
    r_neighbours = np.where(valid, other.r[pos], 0.0)
    cos = np.where(valid, lists.nb_cos, 0.0)
    scores = np.where(valid, margin(cos, lists.r[:, None], r_neighbours), -np.inf)
    column = np.argmax(scores, axis=1)  # the first maximum: kNN order on ties
    rows = np.arange(n)
    has = valid.any(axis=1)
    return (
        lists.ids[has],
        lists.nb_ids[rows, column][has],
        scores[rows, column][has],
        lists.nb_cos[rows, column][has],
    )


def _sorted(src: np.ndarray, tgt: np.ndarray, score: np.ndarray, cos: np.ndarray) -> Selection:
    order = np.lexsort((tgt, src, -score))
    return Selection(src[order], tgt[order], score[order], cos[order])


def select_from_lists(
    src_lists: export_sql.Lists,
    tgt_lists: export_sql.Lists,
    margin: str = "ratio",
    retrieval: str = "max",
) -> Selection:
    """LASER-style selection on neighbour lists (``src_lists``: the output's src side).

    ``fwd``: each src sentence's best-scoring neighbour; ``bwd``: each tgt sentence's;
    ``max``: their union, greedy one-to-one by (-score, src, tgt); ``intersect``: the pairs
    that are both the fwd best of their src and the bwd best of their tgt.
    """
    fn = _margin_fn(margin)
    _check_retrieval(retrieval)
    f_src, f_tgt, f_score, f_cos = _best(src_lists, tgt_lists, fn)
    b_tgt, b_src, b_score, b_cos = _best(tgt_lists, src_lists, fn)
    if retrieval == "fwd":
        return _sorted(f_src, f_tgt, f_score, f_cos)
    if retrieval == "bwd":
        return _sorted(b_src, b_tgt, b_score, b_cos)
    if retrieval == "intersect":
        if not len(b_tgt):
            return _sorted(f_src[:0], f_tgt[:0], f_score[:0], f_cos[:0])
        pos = np.minimum(np.searchsorted(b_tgt, f_tgt), len(b_tgt) - 1)
        both = (b_tgt[pos] == f_tgt) & (b_src[pos] == f_src)
        return _sorted(f_src[both], f_tgt[both], f_score[both], f_cos[both])
    src = np.concatenate([f_src, b_src])
    tgt = np.concatenate([f_tgt, b_tgt])
    score = np.concatenate([f_score, b_score])
    cos = np.concatenate([f_cos, b_cos])
    # a pair found in both directions: keep it once (the higher score; equal in exact math)
    order = np.lexsort((-score, tgt, src))
    src, tgt, score, cos = src[order], tgt[order], score[order], cos[order]
    first = np.ones(len(src), dtype=bool)
    first[1:] = (src[1:] != src[:-1]) | (tgt[1:] != tgt[:-1])
    src, tgt, score, cos = src[first], tgt[first], score[first], cos[first]
    keep = greedy_one_to_one(src, tgt, score)
    return _sorted(src[keep], tgt[keep], score[keep], cos[keep])


def select_pairs(
    db: BitextDB, pair: str, *, margin: str = "ratio", retrieval: str = "max"
) -> Selection:
    """Re-derive a selection from the stored kNN lists and ``r`` values (no new search).

    Holds both sides' neighbour lists in memory. With ``ratio`` and ``max`` it equals the
    stored accepted pairs.
    """
    _margin_fn(margin)
    _check_retrieval(retrieval)
    spec = resolve_pair(db, pair)
    k = db.settings.k
    with db.db.session() as s:
        src_lists = export_sql.load_lists(s, spec.src_lang, spec.tgt_lang, k)
        tgt_lists = export_sql.load_lists(s, spec.tgt_lang, spec.src_lang, k)
    return select_from_lists(src_lists, tgt_lists, margin, retrieval)


def _margin_fn(margin: str) -> MarginFn:
    if margin not in MARGINS:
        raise InputError(f"Unknown margin {margin!r}; use one of {', '.join(MARGINS)}.")
    return MARGINS[margin]


def _check_retrieval(retrieval: str) -> None:
    if retrieval not in RETRIEVALS:
        raise InputError(f"Unknown retrieval {retrieval!r}; use one of {', '.join(RETRIEVALS)}.")


# -- output files ------------------------------------------------------------------------------
@dataclass
class _Target:
    file: OutputFile
    compression: str | None

    @property
    def path(self) -> Path:
        return self.file.path


#: the extensions that name an export format, after any compression's
FORMAT_SUFFIXES = {
    ".tsv": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".tmx": "tmx",
    ".parquet": "parquet",
}
#: compressions bitextdb does not write: refused rather than written plain under their name
UNWRITTEN_COMPRESSIONS = (".zst", ".zstd", ".lz4", ".zip", ".7z", ".br", ".bz", ".lzma", ".z")
#: names of formats an export does not write, and what it writes instead
UNWRITTEN_FORMATS = {".json": "JSON Lines (.jsonl)", ".csv": "TSV (.tsv)", ".tar": "no archive"}


def output_format(output: str, fmt: str | None) -> str:
    """The format an export to ``output`` writes: ``fmt``, else the one its extension names
    (TSV when none does); an extension naming another format than ``fmt``, or a
    compression not written, is refused."""
    if fmt is not None and fmt not in FORMATS:
        raise InputError(f"Unknown format {fmt!r}; use one of {', '.join(FORMATS)}.")
    if output == "-":
        return fmt or "tsv"
    outer = Path(output).suffix
    if outer.lower() in UNWRITTEN_COMPRESSIONS:
        raise InputError(
            f"bitextdb compresses with .gz, .bz2 or .xz, not {outer}: name {output} "
            "with one of those, or with none."
        )
    suffix = uncompressed_suffix(output)
    named = FORMAT_SUFFIXES.get(suffix)
    if fmt is None and suffix in UNWRITTEN_FORMATS:
        raise InputError(
            f"{output} names a format export does not write; it writes "
            f"{UNWRITTEN_FORMATS[suffix]}: rename it, or give --format."
        )
    if fmt is None:
        return named or "tsv"
    if named is not None and fmt == "moses":  # two files: PREFIX.en and PREFIX.de
        raise InputError(
            f"Moses output is two files named PREFIX.LANG; {output} names a {named} file: "
            "give a prefix without a format's extension."
        )
    if named is not None and named != fmt:
        raise InputError(
            f"{output} names a {named} file, but the format asked for is {fmt}: change "
            "one of them (without --format the name chooses)."
        )
    return fmt


def _targets(
    db: BitextDB, output: str, fmt: str, spec: PairSpec, flag: str = "--output"
) -> list[_Target] | None:
    """The files an export writes (None: standard output), checked before any work."""
    if output == "-":
        if fmt == "moses":
            raise InputError(
                f"Moses output is two files (PREFIX.{spec.src_lang} and "
                f"PREFIX.{spec.tgt_lang}); give {flag} PREFIX, not standard output."
            )
        if fmt == "parquet":
            raise InputError(f"Parquet is a binary file; give {flag} FILE.parquet.")
        return None
    path = Path(output).expanduser()
    compression = COMPRESSIONS.get(path.suffix.lower())
    if compression and fmt == "parquet":
        raise InputError(f"Parquet compresses its columns itself; drop {path.suffix} from {flag}.")
    if fmt == "moses":
        stem = path.with_suffix("") if compression else path
        ext = path.suffix if compression else ""
        paths = [
            stem.with_name(f"{stem.name}.{lang}{ext}") for lang in (spec.src_lang, spec.tgt_lang)
        ]
    else:
        paths = [path]
    return [_Target(output_file(p, flag, db.locations), compression) for p in paths]


class _Sink:
    """Text streams into temporary files, renamed into place by :meth:`commit` (see
    :mod:`bitextdb.outputs`)."""

    def __init__(self, targets: list[_Target] | None) -> None:
        self._stack = contextlib.ExitStack()
        self._targets = targets or []
        self._open_files: list[OutputFile] = []
        self.streams: list[IO[str]] = []
        self._stdout_bytes: IO[bytes] | None = None
        if targets is None:
            sys.stdout.flush()
            self._stdout_bytes = getattr(sys.stdout, "buffer", None)
            return
        for target in self._targets:
            try:
                self._open_files.append(target.file)
                self.streams.append(self._open(target))
            except OSError as exc:
                self.abort()
                # the name given, not the temporary file beside it that failed to open
                raise InputError(
                    f"Cannot write {target.file.path}: {exc.strerror or exc}."
                ) from exc

    def _open(self, target: _Target) -> IO[str]:
        if target.file.descriptor is not None:
            sys.stdout.flush()  # what this process printed there before goes first
        raw = self._stack.enter_context(target.file.open_binary())
        binary: IO[bytes]
        if target.compression == "gzip":
            inner = target.path.name[: -len(target.path.suffix)]
            binary = self._stack.enter_context(
                gzip.GzipFile(filename=inner, mode="wb", fileobj=raw, compresslevel=6, mtime=0)
            )
        elif target.compression == "bzip2":
            binary = self._stack.enter_context(bz2.BZ2File(raw, mode="wb"))
        elif target.compression == "xz":
            binary = self._stack.enter_context(lzma.LZMAFile(raw, mode="wb"))  # noqa: SIM115
        else:
            binary = raw
        text = io.TextIOWrapper(binary, encoding="utf-8", newline="\n", write_through=False)
        self._stack.callback(text.detach)
        self._stack.callback(text.flush)
        return text

    def write(self, parts: list[str]) -> None:
        """One string per stream (only one for standard output)."""
        if not self._targets:
            if self._stdout_bytes is not None:
                self._stdout_bytes.write(parts[0].encode("utf-8"))
            else:
                sys.stdout.write(parts[0])
            return
        for stream, part in zip(self.streams, parts):
            stream.write(part)

    def finish(self) -> None:
        """Write out and close the files (raising if they cannot be written whole)."""
        if not self._targets:
            (self._stdout_bytes or sys.stdout).flush()
        self._stack.close()

    def commit(self) -> list[str]:
        """Close the files and move them into place; the files written (``-``: stdout)."""
        self.finish()
        if not self._targets:
            return ["-"]
        for file in self._open_files:
            file.install()
        self._open_files = []
        return [str(t.path) for t in self._targets]

    def abort(self) -> None:
        """Drop the temporary files; nothing is left behind."""
        with contextlib.suppress(Exception):
            self._stack.close()
        for file in self._open_files:
            file.discard()
        self._open_files = []


def _format(
    fmt: str,
    spec: PairSpec,
    rows: list[Row],
    texts: dict[int, str],
    provenance: Provenance,
) -> list[Any]:
    """What the sink of ``fmt`` writes for ``rows``: a string per file, or for parquet
    the records."""
    if fmt == "moses":
        return [
            "".join(texts[a] + "\n" for a, *_ in rows),
            "".join(texts[b] + "\n" for _, b, *_ in rows),
        ]
    records = [_record(spec, row, texts, provenance) for row in rows]
    return [records if fmt == "parquet" else render_records(fmt, records)]


#: the formats records can be streamed in (``GET /export?format=``), with their media types
STREAM_FORMATS = {
    "jsonl": "application/x-ndjson",
    "tsv": "text/tab-separated-values; charset=utf-8",
    "tmx": "application/x-tmx+xml",
}


def render_records(fmt: str, records: list[dict[str, Any]]) -> str:
    """Records of :func:`iter_records` or :func:`iter_withdrawn` as the text of ``fmt``
    (one of :data:`STREAM_FORMATS`), as the file export writes them: jsonl lines, tsv
    lines (margin, src, tgt: LASER's layout), or TMX units with the margin and the cosine
    (a withdrawal's adding ``x-reason`` and ``x-withdrawn-at``) as props; see
    :func:`document_ends` for what goes around them."""
    if fmt == "jsonl":
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
    if fmt == "tsv":
        return "".join(f"{r['margin']:.6f}\t{r['src']}\t{r['tgt']}\n" for r in records)
    units = []
    for r in records:
        props = [("x-cosine", f"{r['cosine']:.6f}")]
        if "reason" in r:
            props += [("x-reason", r["reason"]), ("x-withdrawn-at", r["withdrawn_at"])]
        units.append(
            tmx.unit(
                r["src_lang"],
                r["src"],
                r["tgt_lang"],
                r["tgt"],
                [("x-margin", f"{r['margin']:.6f}"), *props],
            )
        )
    return "".join(units)


def document_ends(fmt: str, spec: PairSpec) -> tuple[str, str]:
    """What a document of ``fmt`` starts and ends with (TMX: the header and the end of
    the body; nothing for the others)."""
    if fmt != "tmx":
        return "", ""
    from . import __version__

    return tmx.header(spec.src_lang, spec.tgt_lang, __version__), tmx.FOOTER


def _format_withdrawn(fmt: str, spec: PairSpec, rows: list[export_sql.Withdrawal]) -> list[Any]:
    """Withdrawn pairs in the export's format (jsonl and parquet add ``reason`` and
    ``withdrawn_at``, parquet as a timestamp; TMX as props)."""
    if fmt == "moses":
        return ["".join(row[4] + "\n" for row in rows), "".join(row[5] + "\n" for row in rows)]
    records = [withdrawn_record(spec, row) for row in rows]
    if fmt == "parquet":
        return [[record | {"withdrawn_at": row[7]} for record, row in zip(records, rows)]]
    return [render_records(fmt, records)]


def withdrawn_record(spec: PairSpec, row: export_sql.Withdrawal) -> dict[str, Any]:
    """One jsonl record of a withdrawn pair: the fields of an export record (no sources),
    then ``reason`` (displaced, removed, below_min_score) and ``withdrawn_at`` (ISO, UTC)."""
    a, b, score, cos, src_text, tgt_text, reason, moment = row
    return {
        "src": src_text,
        "tgt": tgt_text,
        "src_lang": spec.src_lang,
        "tgt_lang": spec.tgt_lang,
        "margin": score,
        "cosine": cos,
        "src_id": a,
        "tgt_id": b,
        "reason": reason,
        "withdrawn_at": moment.isoformat(),
    }


#: the fields of a jsonl record, before what ``with_sources`` and ``with_ids`` add
RECORD_FIELDS = ["src", "tgt", "src_lang", "tgt_lang", "margin", "cosine", "src_id", "tgt_id"]


def _fields(with_sources: bool, with_ids: bool) -> list[str]:
    """The fields of the records :func:`_record` writes."""
    asked = [name for name, wanted in (("sources", with_sources), ("ext_ids", with_ids)) if wanted]
    return RECORD_FIELDS + [f"{side}_{name}" for name in asked for side in ("src", "tgt")]


def _open_sink(targets: list[_Target] | None, fmt: str, fields: list[str]) -> _Sink | ParquetSink:
    if fmt == "parquet":
        assert targets is not None  # refused by _targets
        return ParquetSink(targets[0].file, fields)
    return _Sink(targets)


#: what jsonl records add about where each side came from: ``{name: sentence id -> values}``,
#: written as ``src_<name>`` and ``tgt_<name>`` (``sources``, ``ext_ids``)
Provenance = dict[str, dict[int, list[str]]]


def _provenance(s: Session, ids: list[int], with_sources: bool, with_ids: bool) -> Provenance:
    """The source names and external ids of ``ids``, as asked."""
    found: Provenance = {}
    if with_sources:
        found["sources"] = export_sql.source_names(s, ids)
    if with_ids:
        found["ext_ids"] = export_sql.ext_ids(s, ids)
    return found


def _record(
    spec: PairSpec, row: Row, texts: dict[int, str], provenance: Provenance
) -> dict[str, Any]:
    """One jsonl record: src, tgt, src_lang, tgt_lang, margin, cosine, src_id, tgt_id, then
    src_sources and tgt_sources, src_ext_ids and tgt_ext_ids when asked for."""
    a, b, score, cos = row
    record: dict[str, Any] = {
        "src": texts[a],
        "tgt": texts[b],
        "src_lang": spec.src_lang,
        "tgt_lang": spec.tgt_lang,
        "margin": score,
        "cosine": cos,
        "src_id": a,
        "tgt_id": b,
    }
    for name, values in provenance.items():
        record[f"src_{name}"] = values.get(a, [])
        record[f"tgt_{name}"] = values.get(b, [])
    return record


def _selection_batches(selection: Selection, min_score: float | None) -> Iterator[list[Row]]:
    n = len(selection)
    if min_score is not None:  # sorted by descending score: the tail is cut
        n = int(np.searchsorted(-selection.score, -float(min_score), side="right"))
    for start in range(0, n, BATCH):
        stop = min(n, start + BATCH)
        yield list(
            zip(
                selection.src[start:stop].tolist(),
                selection.tgt[start:stop].tolist(),
                selection.score[start:stop].tolist(),
                selection.cosine[start:stop].tolist(),
            )
        )


def iter_records(
    db: BitextDB,
    pair: str,
    *,
    min_score: float | None = None,
    since: datetime | str | None = None,
    with_sources: bool = False,
    with_ids: bool = False,
    batch: int = BATCH,
    max_length_ratio: float | None = None,
    skip_identical: bool = False,
) -> Iterator[dict[str, Any]]:
    """The stored selection of ``pair`` as jsonl records (dicts), streamed.

    Each record has the fields of :func:`export_pairs`' jsonl rows, in the same order
    (src, tgt, src_lang, tgt_lang, margin, cosine, src_id, tgt_id, and with
    ``with_sources`` src_sources and tgt_sources, with ``with_ids`` src_ext_ids and
    tgt_ext_ids); records come best first, ties by
    (src id, tgt id). ``min_score`` defaults to the database threshold; ``since`` keeps
    pairs changed at or after that moment (a naive datetime is UTC); ``max_length_ratio``
    and ``skip_identical`` filter as in :func:`export_pairs`.

    The pair is checked when this is called (:class:`~bitextdb.errors.InputError`), before
    any record is read. Rows are then read from a streaming cursor ``batch`` at a time, with
    their texts looked up per batch, so at most one batch is held in memory; the cursor's
    session stays open until the iterator is exhausted or closed (``.close()``).
    """
    if batch < 1:
        raise InputError("The export batch size must be at least 1.")
    keep = PairFilter(max_length_ratio, skip_identical)
    moment = parse_since(since)
    spec = resolve_pair(db, pair)
    min_score = _min_score(db, min_score)
    return _iter_records(db, spec, float(min_score), moment, with_sources, with_ids, batch, keep)


def _iter_records(
    db: BitextDB,
    spec: PairSpec,
    min_score: float,
    since: datetime | None,
    with_sources: bool,
    with_ids: bool,
    batch: int,
    keep: PairFilter,
) -> Iterator[dict[str, Any]]:
    with db.db.snapshot() as s:
        batches = export_sql.stream_accepted(
            s, *spec.stored, swap=spec.swap, min_score=min_score, since=since, batch=batch
        )
        with contextlib.closing(batches):
            for rows in batches:
                ids = [a for a, *_ in rows] + [b for _, b, *_ in rows]
                texts = export_sql.texts(s, ids)
                rows = _kept(rows, texts, keep)
                provenance = _provenance(s, ids, with_sources, with_ids)
                for row in rows:
                    yield _record(spec, row, texts, provenance)


def iter_withdrawn(
    db: BitextDB,
    pair: str,
    *,
    since: datetime | str,
    min_score: float | None = None,
    batch: int = BATCH,
) -> Iterator[dict[str, Any]]:
    """The pairs a consumer of ``pair``'s exports up to ``since`` must drop, as records.

    Records have the fields of :func:`withdrawn_record`: pairs no longer accepted, then
    pairs whose margin fell below ``min_score`` (the database threshold by default), as in
    ``export_pairs(..., withdrawn=...)``. The pair is checked when this is called; rows are
    then streamed ``batch`` at a time, as in :func:`iter_records`.
    """
    if batch < 1:
        raise InputError("The export batch size must be at least 1.")
    moment = parse_since(since)
    if moment is None:
        raise InputError("Say since when: the moment of the consumer's last export.")
    spec = resolve_pair(db, pair)
    min_score = _min_score(db, min_score)
    _check_not_pruned(db, spec, moment)
    return _iter_withdrawn(db, spec, float(min_score), moment, batch)


def parse_since(value: str | datetime | None) -> datetime | None:
    """A ``since`` moment as an aware UTC datetime: a datetime (a naive one is UTC), or an
    ISO 8601 text (``2026-01-31``, ``2026-01-31T12:00:00+01:00``, a trailing ``Z`` for
    UTC)."""
    if value is None:
        return None
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str):
        text = value.strip()
        if text.endswith(("Z", "z")):  # Python 3.10's fromisoformat does not read 'Z'
            text = text[:-1] + "+00:00"
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise InputError(
                f"{value!r} is not an ISO timestamp such as 2026-01-31 or "
                "2026-01-31T12:00:00+01:00."
            ) from None
    else:
        raise InputError(f"Give since as a datetime or an ISO timestamp, not {value!r}.")
    try:
        return export_sql.as_utc(moment)
    except OverflowError:  # 9999-12-31T23:59:59-01:00 is past the last datetime in UTC
        raise InputError(f"{value!s} is outside the dates this can compare.") from None


def check_export_options(
    fmt: str, min_score: float | None, with_sources: bool = False, with_ids: bool = False
) -> None:
    """Refuse what an export cannot do whatever the database holds: a NaN minimum score,
    and source names or external ids in a format without fields for them."""
    if min_score is not None:
        _checked_score(min_score)
    if (with_sources or with_ids) and fmt not in ("jsonl", "parquet"):
        raise InputError(
            "--with-sources and --with-ids add fields to JSONL and Parquet records; "
            f"{fmt} has no place for them."
        )


def _checked_score(min_score: float) -> float:
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)):
        raise InputError(f"The minimum score must be a number, not {min_score!r}.")
    if math.isnan(min_score):
        raise InputError("The minimum score must be a number, not NaN.")
    return float(min_score)


def _min_score(db: BitextDB, min_score: float | None) -> float:
    """The lowest margin to export: ``min_score``, by default the database threshold; a
    number (-inf keeps every pair), not NaN, which no margin is above."""
    return float(db.settings.threshold) if min_score is None else _checked_score(min_score)


def _check_not_pruned(db: BitextDB, spec: PairSpec, since: datetime | None) -> None:
    """Refuse to list the withdrawals since a moment older than the records
    ``cursors prune`` kept: some of them are gone, and a list without them would leave
    the reader holding pairs that were withdrawn. (A cursor never is: the records it has
    not passed are kept.)"""
    if since is None:
        return
    with db.db.session() as s:
        horizon = export_sql.pruned_before(s, *spec.stored)
    if horizon is not None and export_sql.as_utc(since) < horizon:
        raise HistoryGoneError(
            f"The withdrawal records of {spec.name} older than {horizon.isoformat()} were "
            "pruned (`bitextdb cursors prune`), so those since "
            f"{export_sql.as_utc(since).isoformat()} are no longer all known: export the "
            "pair whole again, and follow it with --cursor or a later --since."
        )


def _iter_withdrawn(
    db: BitextDB, spec: PairSpec, min_score: float, since: datetime, batch: int
) -> Iterator[dict[str, Any]]:
    with db.db.snapshot() as s:
        parts = export_sql.stream_withdrawn(
            s, *spec.stored, swap=spec.swap, min_score=min_score, since=since, batch=batch
        )
        with contextlib.closing(parts):
            for part in parts:
                for row in part:
                    yield withdrawn_record(spec, row)


def export_pairs(
    db: BitextDB,
    pair: str,
    *,
    output: str = "-",
    fmt: str | None = None,
    min_score: float | None = None,
    since: datetime | str | None = None,
    cursor: str | None = None,
    with_sources: bool = False,
    with_ids: bool = False,
    margin: str = "ratio",
    retrieval: str = "max",
    withdrawn: str | None = None,
    max_length_ratio: float | None = None,
    skip_identical: bool = False,
) -> dict[str, Any]:
    """Write the mined pairs of ``pair`` and return a summary (rows, files, seconds, ...).

    ``pair`` is directed: ``en-de`` puts English in the src column even though the database
    stores the pair as de-en. Rows come in descending score, ties by (src id, tgt id).

    Formats: ``tsv`` (score, src, tgt: LASER's layout), ``jsonl`` (src, tgt, src_lang,
    tgt_lang, margin, cosine, src_id, tgt_id, and with ``with_sources`` src_sources and
    tgt_sources, with ``with_ids`` src_ext_ids and tgt_ext_ids, the external ids of each
    side's occurrences) and ``moses`` (``output`` is a prefix: ``PREFIX.<src>`` and
    ``PREFIX.<tgt>``, line-aligned; ``corpus.gz`` gives ``corpus.en.gz`` and
    ``corpus.de.gz``) and ``tmx`` (TMX 1.4: a ``<tu>`` a pair, margin and cosine as
    ``x-margin`` and ``x-cosine`` props; see :mod:`bitextdb.tmx`). An ``output`` ending
    in .gz, .bz2 or .xz is compressed. Without ``fmt`` the output's extension names the
    format (``.jsonl``, ``.tmx``, ``.parquet``; TSV otherwise); one that names another
    format than ``fmt`` is refused. Files are written under a temporary name and renamed
    at the end, so a failed export leaves none.

    ``min_score`` keeps pairs scoring at least that much; it defaults to the database
    threshold for the ratio margin and to no limit for the other margins (whose scale
    differs). ``margin`` (ratio, distance, absolute) and ``retrieval`` (max, intersect,
    fwd, bwd) other than the default ratio/max re-derive the selection from the stored
    neighbour lists (:func:`select_pairs`), holding them in memory.

    ``since`` keeps pairs changed at or after that moment (a datetime, naive is UTC, or an
    ISO 8601 text: :func:`parse_since`). ``cursor`` names a stored position: only pairs
    changed after the last successful export under that name are written (all of them on
    first use), and a successful export moves the cursor to the time it started. A pair
    changes when it is created, its margin or cosine changes, or it becomes accepted. A
    cursor follows one ``min_score``: it is stored with it, and another one is refused. A
    cursor export holds the pair's mining lock (on PostgreSQL; an embedded home is held by
    one process anyway), so no pair changed by a concurrent miner is skipped; the clocks
    of the machines that mine and export must agree. ``since`` and ``cursor`` apply to the
    stored selection only (ratio margin, max retrieval).

    ``max_length_ratio`` drops pairs whose longer side has more than that many times the
    characters of the shorter one, ``skip_identical`` pairs whose sides are the same text
    but for case (:class:`bitextdb.filters.PairFilter`); ``filtered`` in the summary counts
    them. A cursor keeps its filter as it keeps its ``min_score``.

    ``withdrawn`` (with ``since`` or ``cursor``) also writes, to that path in the same
    format, the pairs a consumer of the earlier exports must drop: those no longer
    accepted (another mine selected other pairs, or a source was removed) and those whose
    margin fell below ``min_score`` (:func:`bitextdb.db.export_sql.stream_withdrawn`).
    The two outputs never share a pair: dropping the one and adding or updating the other,
    in either order, leaves the consumer with exactly the pairs a full export writes now.
    """
    started = time.perf_counter()
    keep = PairFilter(max_length_ratio, skip_identical)
    since = parse_since(since)
    for path, flag in ((output, "--output"), (withdrawn, "--withdrawn")):
        if not isinstance(path, (str, os.PathLike)) and (path is not None or flag == "--output"):
            raise InputError(f"{flag} names a file (or '-' for standard output), not {path!r}.")
    if withdrawn is not None and since is None and cursor is None:  # before its name's checks
        raise InputError(
            "--withdrawn lists what changed since an earlier export: give --cursor or --since."
        )
    for path, flag in ((output, "--output"), (withdrawn, "--withdrawn")):
        if path not in (None, "-"):  # the database's own files first, whatever their name
            output_file(path, flag, db.locations)
    asked = fmt
    fmt = output_format(withdrawn if output == "-" and withdrawn else output, fmt)
    if withdrawn is not None:
        output_format(withdrawn, asked)  # its name is checked as the output's (.json...)
        try:  # and the two files are of one format
            output_format(withdrawn, fmt)
        except InputError as exc:
            if asked is not None:
                raise
            raise InputError(
                f"{output} and {withdrawn} name two formats; an export writes both in one: "
                "name them alike, or give --format."
            ) from exc
    if fmt == "parquet":
        require_pyarrow()
    check_export_options(fmt, min_score, with_sources, with_ids)
    _margin_fn(margin)
    _check_retrieval(retrieval)
    stored = (margin, retrieval) == ("ratio", "max")
    if not stored and (since is not None or cursor is not None):
        raise InputError(
            "--since and --cursor follow the stored pairs (ratio margin, max retrieval); "
            "they cannot be combined with another margin or retrieval."
        )
    if cursor is not None and not isinstance(cursor, str):
        raise InputError(f"Give the cursor's name as text, not {type(cursor).__name__}.")
    if cursor is not None and (not 0 < len(cursor) <= MAX_CURSOR_NAME or breaks_a_line(cursor)):
        raise InputError(
            f"A cursor name has 1 to {MAX_CURSOR_NAME} characters, none of them a control "
            "character (a tab, a line break)."
        )
    if since is not None and cursor is not None:
        raise InputError(
            "--cursor starts where its last export ended; it cannot go with --since (a new "
            "cursor's first export is whole)."
        )
    spec = resolve_pair(db, pair)
    found = None
    if cursor is not None:
        with db.db.session() as s:
            found = export_sql.get_cursor(s, cursor)
    if min_score is None and found is not None and found.min_score is not None:
        min_score = found.min_score  # its own cut, whatever the threshold became since
    # another margin's scale is not the threshold's: without --min-score, every pair
    min_score = _min_score(db, min_score) if margin == "ratio" or min_score is not None else None
    after = None
    if cursor is not None and found is not None:
        _check_cursor(cursor, found, spec, min_score, keep)
        after = found.last_exported_at
    if withdrawn is not None:
        _check_not_pruned(db, spec, since)
    targets = _targets(db, output, fmt, spec)
    withdrawn_targets = (
        None if withdrawn is None else _targets(db, withdrawn, fmt, spec, "--withdrawn")
    )
    if withdrawn is not None and _same_files(targets, withdrawn_targets):
        raise InputError("--withdrawn must name other files than --output.")
    progress = db.progress or (lambda stage, done, total: None)

    selection = None
    if not stored:  # the neighbour lists are read (and released) before anything is written
        selection = select_pairs(db, pair, margin=margin, retrieval=retrieval)

    with contextlib.ExitStack() as hold:
        if cursor is not None:
            # no miner of this pair may commit between the cursor's new time and the read
            hold.enter_context(db.db.advisory_lock(mine_lock(*spec.stored)))
        started_at = utcnow()
        sink = _open_sink(targets, fmt, _fields(with_sources, with_ids))
        _open_document(sink, fmt, spec)
        withdrawn_sink = None
        rows_written = withdrawn_rows = filtered = 0
        try:
            # the streams close before their session: a reader gone (`| head`) must not
            # leave a cursor to be closed at exit, after its connection
            with db.db.snapshot() as s, contextlib.ExitStack() as streams:
                if selection is None:
                    total = 0
                    batches: Iterator[list[Row]] = export_sql.stream_accepted(
                        s,
                        *spec.stored,
                        swap=spec.swap,
                        min_score=min_score,
                        since=since,
                        after=after,
                        batch=BATCH,
                    )
                else:
                    total = len(selection)
                    batches = _selection_batches(selection, min_score)
                if isinstance(batches, Generator):
                    streams.enter_context(contextlib.closing(batches))
                for batch in batches:
                    ids = [a for a, *_ in batch] + [b for _, b, *_ in batch]
                    texts = export_sql.texts(s, ids)
                    kept = _kept(batch, texts, keep)
                    filtered += len(batch) - len(kept)
                    provenance = _provenance(s, ids, with_sources, with_ids)
                    sink.write(_format(fmt, spec, kept, texts, provenance))
                    rows_written += len(kept)
                    progress("export", rows_written + filtered, total)
                if withdrawn is not None:
                    withdrawn_sink = _open_sink(
                        withdrawn_targets, fmt, [*RECORD_FIELDS, "reason", "withdrawn_at"]
                    )
                    _open_document(withdrawn_sink, fmt, spec)
                    parts = _withdrawals(s, spec, min_score, since, after)
                    if isinstance(parts, Generator):
                        streams.enter_context(contextlib.closing(parts))
                    for part in parts:
                        part = [w for w in part if keep.keep(w[4], w[5])]
                        withdrawn_sink.write(_format_withdrawn(fmt, spec, part))
                        withdrawn_rows += len(part)
            # both files written whole before either is moved into place: a disk that
            # fills while the second is flushed leaves the first as it was, not new pairs
            # beside the old withdrawals
            _close_document(sink, fmt, spec)
            if withdrawn_sink is not None:
                _close_document(withdrawn_sink, fmt, spec)
            # the files go into place and the cursor moves: a stop from here on would
            # leave a rerun to write an empty change set over this one
            committed()
            files = sink.commit()
            withdrawn_files = None if withdrawn_sink is None else withdrawn_sink.commit()
        except BaseException:
            sink.abort()
            if withdrawn_sink is not None:
                withdrawn_sink.abort()
            raise
    with db.db.session() as s:  # work a mine would do first (see stats)
        waiting = consistency.count_dirty(s, [(spec.src_lang, spec.tgt_lang)])
        both = {spec.src_lang, spec.tgt_lang} <= set(export_sql.languages(s))
        pending = both and sum(  # nothing is mined against a language with no sentences
            graph.count_pending(s, a, b)
            for a, b in ((spec.src_lang, spec.tgt_lang), (spec.tgt_lang, spec.src_lang))
        )
    if cursor is not None:
        with db.db.session() as s:
            export_sql.save_cursor(s, cursor, spec.canonical, started_at, min_score, keep.as_dict())
    return {
        "pair": spec.name,
        "format": fmt,
        "rows": rows_written,
        "files": files,
        "seconds": time.perf_counter() - started,
        "min_score": min_score,
        "margin": margin,
        "retrieval": retrieval,
        "since": None if since is None else export_sql.as_utc(since).isoformat(),
        "cursor": cursor,
        "cursor_after": None if after is None else after.isoformat(),
        "started_at": started_at.isoformat(),
        "filters": keep.as_dict(),
        "filtered": filtered,
        "withdrawn_rows": None if withdrawn is None else withdrawn_rows,
        "withdrawn_files": withdrawn_files,
        "candidates_waiting": waiting,
        "sentences_pending": pending,
    }


def _open_document(sink: _Sink | ParquetSink, fmt: str, spec: PairSpec) -> None:
    """What a format writes before its first pair (TMX: the header)."""
    head, _ = document_ends(fmt, spec)
    if head:
        sink.write([head])


def _close_document(sink: _Sink | ParquetSink, fmt: str, spec: PairSpec) -> None:
    """What a format writes after its last pair (TMX: the end of the body), then close
    the file (not yet in place: :meth:`commit`)."""
    _, tail = document_ends(fmt, spec)
    if tail:
        sink.write([tail])
    sink.finish()


def _withdrawals(
    s: Session,
    spec: PairSpec,
    min_score: float | None,
    since: datetime | None,
    after: datetime | None,
) -> Iterator[list[export_sql.Withdrawal]]:
    if since is None and after is None:  # a cursor's first export is whole: nothing to drop
        return iter(())
    return export_sql.stream_withdrawn(
        s, *spec.stored, swap=spec.swap, min_score=min_score, since=since, after=after, batch=BATCH
    )


def _kept(rows: list[Row], texts: dict[int, str], keep: PairFilter) -> list[Row]:
    if not keep.active:
        return rows
    return [row for row in rows if keep.keep(texts[row[0]], texts[row[1]])]


def _check_cursor(
    name: str,
    found: export_sql.Cursor,
    spec: PairSpec,
    min_score: float | None,
    keep: PairFilter,
) -> None:
    if found.pair != spec.canonical:
        raise InputError(
            f"The cursor {name!r} follows {found.pair}, not {spec.canonical}; use another name."
        )
    fresh = "or use another name (a new cursor starts with a full export)"
    if found.min_score is not None and found.min_score != min_score:
        raise InputError(
            f"The cursor {name!r} exports pairs scoring at least {found.min_score:g}, not "
            f"{min_score:g}: pass --min-score {found.min_score:g}, {fresh}."
        )
    cursor_filter = PairFilter.from_dict(found.filters)
    if cursor_filter != keep:
        raise InputError(
            f"The cursor {name!r} exports with the filters {cursor_filter.describe()}, not "
            f"{keep.describe()}: pass the same ones, {fresh}."
        )


def _same_files(a: list[_Target] | None, b: list[_Target] | None) -> bool:
    """Whether two outputs share a file (or both are standard output)."""
    if a is None or b is None:
        return a is None and b is None
    # a device such as /dev/null takes both
    return bool({t.path for t in a if not t.file.direct} & {t.path for t in b})
