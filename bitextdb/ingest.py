"""read → dedup → insert → encode → upsert → mark indexed, in committed batches.

A batch is first stored as sentences without vectors (``indexed = false``) and occurrences;
its vectors are then upserted and the sentences marked indexed. A run that is killed leaves
at worst some unindexed sentences, which the next run (or ``check --repair``) encodes first,
so an interrupted ingest resumes where it stopped. Re-ingesting a file adds nothing: every
sentence is found by its hash and every (source, position, part) occurrence already exists;
a file that changed since brings its source up to date (:mod:`bitextdb.source_sync`).
Texts given in memory (the library's ``ingest_texts``, ``POST /ingest``) are appended to
their source instead: each call claims the positions after its last record.
"""

from __future__ import annotations

import array
import collections
import contextlib
import dataclasses
import itertools
import logging
import os
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy.orm import Session

from .config import Settings, breaks_a_line, check_lang, resolved_path
from .db import Database, corpus
from .encoder import TextEncoder, normalize_rows
from .encoder_process import wants_encoder_process
from .errors import InputError, ModelLoadError, ModelMismatchError
from .heap import loaded_objects_frozen
from .language_id import language_check
from .lock import displacing_lock, source_lock
from .pipeline import run_stages
from .readers import Line, ReadStats, encodable, read_lines, read_texts, reading, text_hash
from .segment import sentence_splitter
from .source_sync import SourceSync
from .vectors import EdgeIndex, VectorIndex, edge_writer

Progress = Callable[[str, int, int], None]
BATCH = 8192
#: rows of given embeddings checked at a time before an ingest stores anything
CHECK_ROWS = 65_536
log = logging.getLogger(__name__)


@dataclass
class IngestReport:
    """The summary of one ingest."""

    lang: str
    source: str
    read: int = 0
    #: the sentences the records were split into (``split_sentences``), else None
    sentences: int | None = None
    skipped: dict[str, int] = field(default_factory=dict)
    duplicates: int = 0
    new: int = 0
    encoded: int = 0
    #: sentences an earlier, stopped run stored without a vector, encoded first
    resumed: int = 0
    #: a file ingested again: lines whose sentence changed, lines no longer there (see
    #: :mod:`bitextdb.source_sync`), and the sentences that left with them because no
    #: other source holds them
    changed: int = 0
    dropped: int = 0
    sentences_removed: int = 0
    seconds: float = 0.0
    # seconds each pipeline stage worked, which tells what held the ingest back: reading
    # (and normalising), storing in SQL, encoding (when the model runs in a process of its
    # own: handing the batch over, which waits while that process has three in hand),
    # waiting for the vectors, upserting them (only handing them over, to a writer process),
    # waiting until they are stored, and marking them indexed; the stages overlap, so they
    # add up to more than ``seconds``
    stage_seconds: dict[str, float] = field(default_factory=dict)
    #: the sentences that lost a line of the source, for the caller to remove if no
    #: source holds them any more (not part of the summary)
    displaced: set[int] = field(default_factory=set, repr=False)

    def as_dict(self) -> dict[str, object]:
        out = dict(self.__dict__)
        del out["displaced"]
        return out


class VectorSource:
    """Where a batch's vectors come from: the encoder, or rows given by the user."""

    def __init__(
        self,
        encoder: Callable[[], TextEncoder] | None = None,
        rows: np.ndarray | None = None,
        first_position: int = 0,
    ) -> None:
        self._encoder_factory = encoder
        self._encoder: TextEncoder | None = None
        self.load_seconds = 0.0  # loading the model, wherever the first need met it
        self.rows = rows
        self.first_position = first_position  # the position of ``rows[0]``

    def rows_at(self, positions: list[int]) -> np.ndarray:
        """The given vectors of the records at ``positions``, checked and normalised."""
        assert self.rows is not None
        return _checked_rows(self.rows, [p - self.first_position for p in positions])

    def vectors(self, texts: list[str], positions: list[int] | None) -> np.ndarray:
        if self.rows is not None:
            if positions is None:
                raise InputError("Given vectors need the positions of their sentences.")
            return self.rows_at(positions)
        return self.encoder().encode(texts)

    def start(self, texts: list[str]) -> Callable[[], np.ndarray]:
        """Begin encoding ``texts``; call the result to get their vectors. An encoder
        process works on them meanwhile, so the caller can start the next batch first."""
        return self.encoder().start(texts)

    def encoder(self) -> TextEncoder:
        if self._encoder is None:
            if self._encoder_factory is None:
                raise InputError("No model is available to encode these sentences.")
            started = time.perf_counter()
            self._encoder = self._encoder_factory()
            self.load_seconds += time.perf_counter() - started
        return self._encoder


def _checked_rows(rows: np.ndarray, positions: Sequence[int]) -> np.ndarray:
    """The rows at ``positions`` (0-based lines) as unit vectors; refuses NaN, infinity
    (a float64 beyond float32's range too) and all-zero rows."""
    with np.errstate(over="ignore"):  # a float64 beyond float32's range: refused below
        picked = np.asarray(rows[np.asarray(positions, dtype=np.int64)], dtype=np.float32)
    if not np.isfinite(picked).all():
        bad = positions[int(np.where(~np.isfinite(picked).all(axis=1))[0][0])]
        raise InputError(
            f"Row {bad + 1} of the embeddings (record {bad + 1}) holds NaN or infinity."
        )
    # scaled by its largest component first: the norm of 3e38s overflows to infinity
    peaks = np.abs(picked).max(axis=1, initial=0.0)
    if (peaks == 0).any():
        bad = positions[int(np.where(peaks == 0)[0][0])]
        raise InputError(f"Row {bad + 1} of the embeddings (record {bad + 1}) is all zeros.")
    return normalize_rows(picked / peaks[:, None])


def load_embeddings(path: str | Path, dim: int | None, expected_dim: int) -> np.ndarray:
    """A ``.npy`` matrix, or raw float32 with ``dim`` columns (LASER's format), memory-mapped."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"No such embeddings file: {path}")
    try:
        if path.suffix == ".npy":
            rows = np.load(path, mmap_mode="r", allow_pickle=False)
        else:
            if not dim:
                raise InputError(f"{path} is raw float32: give its dimension with --dim.")
            size = path.stat().st_size
            if size % (4 * dim):
                raise InputError(f"{path} is not a whole number of float32 rows of {dim}.")
            rows = np.memmap(path, dtype=np.float32, mode="r").reshape(-1, dim)
    except (ValueError, OSError, EOFError) as exc:
        raise InputError(f"Cannot read embeddings from {path}: {exc or 'it is empty'}") from exc
    if not np.issubdtype(rows.dtype, np.floating) and not np.issubdtype(rows.dtype, np.integer):
        raise InputError(f"{path} holds {rows.dtype} values, not real numbers.")
    if rows.ndim != 2:
        raise InputError(f"{path} must hold a 2-D matrix, not shape {rows.shape}.")
    if rows.shape[1] != expected_dim:
        raise ModelMismatchError(
            f"{path} holds {rows.shape[1]}-dimensional vectors but the database holds "
            f"{expected_dim}-dimensional ones."
        )
    return rows


class Ingestor:
    """Stores sentences and their vectors for one database."""

    def __init__(
        self,
        db: Database,
        index: VectorIndex,
        settings: Settings,
        encoder: Callable[[], TextEncoder] | None,
        progress: Progress | None = None,
    ) -> None:
        self.db = db
        self.index = index
        self.settings = settings
        self.encoder = encoder
        self.progress = progress or (lambda stage, done, total: None)

    def ingest_lines(
        self,
        lang: str,
        lines: Iterable[Line],
        *,
        source: str,
        path: str | None = None,
        stats: ReadStats | None = None,
        vectors: VectorSource | None = None,
        split_sentences: bool = False,
        whole: bool = False,
        read: dict[str, object] | None = None,
    ) -> IngestReport:
        """Store ``lines`` (already read and normalised) of ``lang`` as coming from ``source``;
        ``split_sentences`` says whether they are the sentences of split records. ``whole``
        says that ``lines`` are all the source holds now (a file read again): the lines they
        no longer hold leave it (see :mod:`bitextdb.source_sync`). ``read`` is how the file
        was read (:func:`bitextdb.readers.reading`): a source read otherwise before is
        refused."""
        lang = check_lang(lang)
        started = time.perf_counter()
        # Reading starts here, so a file that cannot be read (missing, binary, no such
        # column, ...) fails before a source row or a vector collection is created; and a
        # model that cannot be loaded fails then too when the first batch has sentences to
        # encode (_store_batch checks every later batch).
        batches = _batches(lines, BATCH)
        head = next(batches, None)
        report = IngestReport(lang=lang, source=source)
        if head is None and not whole:  # an empty stream or list: no source of nothing
            report.read = stats.lines if stats is not None else 0
            report.skipped = stats.skipped() if stats is not None else {}
            report.seconds = time.perf_counter() - started
            return report
        vectors = vectors or VectorSource(self.encoder)
        if head is not None:
            if vectors.rows is None:
                with self.db.session() as s:
                    if len(corpus.known(s, lang, head.hashes)) < len(set(head.hashes)):
                        vectors.encoder()
            batches = itertools.chain([head], batches)
        self.index.ensure(lang, self.settings.dim)
        if vectors.rows is None:  # given vectors: unindexed rows are refilled batch by batch
            report.resumed = self.resume(lang, vectors)
        with self.db.session() as s:
            src = corpus.source_id(s, lang, source, path, split_sentences=split_sentences)
            if read is not None:
                corpus.check_reading(s, src, source, read)
            sync = _source_sync(s, lang, source, src, path) if whole and path else None
            if sync is not None and stats is not None:
                sync.unreadable = stats.unreadable
        done = stored = 0
        sink = _Upserts(self.index, self._wants_index_process(encodes=vectors.rows is None))
        # ids handed to the later stages and not yet marked indexed: a later batch that
        # meets one of these sentences again must not schedule it a second time
        in_flight: set[int] = set()
        waits: collections.Counter[str] = collections.Counter()  # see stage_seconds

        # four stages overlap: store the batch in SQL (this thread feeds them), encode it
        # (or hand it to the encoder process, which then works through the queued batches),
        # upsert its vectors, mark it indexed; each batch is committed as it goes. Marking
        # is a stage of its own so that the next upsert need not wait for SQLite's writer
        # lock, which the first stage holds while it stores the batch after next.
        def store(batch: _Batch) -> tuple[Any, ...]:
            nonlocal stored
            kept = self._store_batch(lang, src, batch, vectors, report, in_flight, sink, sync)
            stored += len(batch.lines)
            return (batch.lines, *kept)

        stages = [
            store,
            lambda job: (job[0], job[1], self._vectors_for(job[1], job[2], vectors)),
            lambda job: (job[0], *self._upsert(lang, job[1], job[2], report, sink, waits)),
            lambda job: (job[0], self._when_stored_mark(job[1], job[2], in_flight, waits)),
        ]
        busy = [0.0] * (len(stages) + 1)  # seconds each stage worked, waits included
        loaded_before = vectors.load_seconds
        # full collections walk only what the ingest makes, not the libraries (bitextdb.heap)
        with loaded_objects_frozen():
            try:
                for batch, _ in run_stages(batches, stages, depth=2, busy=busy):
                    done += len(batch)
                    self.progress("ingest", done, 0)
            except InputError as exc:  # the file went bad partway (a damaged archive)
                if not stored:
                    raise
                again = (  # a stream's or --append's next read is a source of its own
                    "ingest the file again once it is whole (the source then gains the rest), or "
                    if whole
                    else ""
                )
                raise InputError(
                    f"{exc} The {stored:,} {'sentences' if split_sentences else 'lines'} read "
                    f"before that are stored in the source "
                    f"{source}{', and nothing it held was dropped' if sync else ''}: {again}"
                    f"take them out with `bitextdb remove --lang {lang} --source {source}`."
                ) from exc
            finally:
                sink.close()
        read, store, encode, upsert, mark = busy
        # the model is loaded before the first new sentence is stored: in the storing
        # stage when that sentence comes in a later batch, where it is not storing
        store -= vectors.load_seconds - loaded_before
        report.stage_seconds = {
            "load_model": vectors.load_seconds,
            "read": read,
            "store": store,
            "encode": encode,
            "wait_for_vectors": waits["wait_for_vectors"],
            "upsert": upsert - waits["wait_for_vectors"],
            "wait_for_upserts": waits["wait_for_upserts"],
            "mark_indexed": mark - waits["wait_for_upserts"],
        }
        if stats is not None:
            report.read = stats.lines
            report.skipped = stats.skipped()
            if split_sentences:
                report.sentences = stats.sentences
        else:
            report.read = done
        with self.db.session(writes=True) as s:
            if sync is not None:
                sync.finish(s)
                report.changed, report.dropped = sync.changed, sync.dropped
                report.displaced = sync.displaced
            corpus.touch_source(s, src, report.read, exact=whole)
        report.seconds = time.perf_counter() - started
        return report

    def _store_batch(
        self,
        lang: str,
        src: int,
        read: _Batch,
        vectors: VectorSource,
        report: IngestReport,
        in_flight: set[int],
        sink: _Upserts,
        sync: SourceSync | None,
    ) -> tuple[dict[int, tuple[str, int]], np.ndarray | None]:
        """Store a batch's sentences and occurrences (telling ``sync`` first, when given,
        what they replace). Returns ``id -> (text, position)`` of the sentences that need
        vectors, and, for given vectors, those vectors (checked and normalised), in the
        same order.

        ``in_flight`` holds the ids earlier batches of this ingest scheduled and that are
        not yet marked indexed; the ids scheduled here are added to it.
        """
        batch, hashes = read.lines, read.hashes
        checked = None
        if vectors.rows is not None:  # a bad given vector must fail before the batch is stored
            checked = vectors.rows_at([line.position for line in batch])
        # taken before the look-up: an id that leaves the set later was marked indexed
        # before it left, so the look-up below already sees it indexed
        flying = set(in_flight)
        with self.db.session(writes=True) as s:
            stored = corpus.known(s, lang, hashes)
            fresh: dict[str, str] = {}
            for line, h in zip(batch, hashes):
                if h not in stored and h not in fresh:
                    fresh[h] = line.text
            if fresh and vectors.rows is None:
                vectors.encoder()  # loaded (or refused) before a sentence is stored
            ids = {h: sid for h, (sid, _) in stored.items()}
            ids.update(corpus.add_sentences(s, lang, fresh))
            rows = [
                (src, line.position, line.part, ids[h], line.ext_id)
                for line, h in zip(batch, hashes)
            ]
            # a file read again: only what it does not hold as it is now
            corpus.add_occurrences(s, rows if sync is None else sync.reconcile(s, rows))
        report.new += len(fresh)
        report.duplicates += len(batch) - len(fresh)
        # vectors for the new sentences and for any stored earlier without one (an
        # interrupted run's), but not again for those an earlier batch already scheduled
        todo: dict[int, tuple[str, int]] = {}
        rows: list[int] = []  # each one's line in the batch
        for row, (line, h) in enumerate(zip(batch, hashes)):
            sid = ids[h]
            if (h in fresh or not (stored[h][1] or sid in flying)) and sid not in todo:
                todo[sid] = (line.text, line.position)
                rows.append(row)
        in_flight.update(todo)
        if todo and len(batch) >= BATCH:  # more may follow: worth a writer process, if wanted
            sink.prepare()
        return todo, None if checked is None else checked[rows]

    @staticmethod
    def _vectors_for(
        todo: dict[int, tuple[str, int]], given: np.ndarray | None, vectors: VectorSource
    ) -> Callable[[], np.ndarray] | None:
        """What returns the vectors of ``todo``: the ``given`` ones, or the encoder's."""
        if not todo:
            return None
        if given is not None:
            return lambda: given
        return vectors.start([t for t, _ in todo.values()])

    def _upsert(
        self,
        lang: str,
        todo: dict[int, tuple[str, int]],
        pending: Callable[[], np.ndarray] | None,
        report: IngestReport,
        sink: _Upserts,
        waits: collections.Counter[str],
    ) -> tuple[list[int], Callable[[], None]]:
        """Upsert the batch's vectors: the ids to mark indexed, and what returns once they
        are stored (a writer process may still be storing them)."""
        if pending is None:
            return [], _stored
        ids = list(todo)
        started = time.perf_counter()
        found = pending()
        waits["wait_for_vectors"] += time.perf_counter() - started
        stored = self._upsert_vectors(lang, ids, found, sink)
        report.encoded += len(ids)
        return ids, stored

    def _when_stored_mark(
        self,
        ids: list[int],
        stored: Callable[[], None],
        in_flight: set[int],
        waits: collections.Counter[str],
    ) -> None:
        """Wait until a batch's points are stored (never mark before), then mark them."""
        started = time.perf_counter()
        stored()
        waits["wait_for_upserts"] += time.perf_counter() - started
        self._mark_indexed(ids, in_flight)

    def _mark_indexed(self, ids: list[int], in_flight: set[int] | None = None) -> None:
        if ids:
            with self.db.session(writes=True) as s:
                corpus.mark_indexed(s, ids)
        if in_flight is not None:  # after the commit: see _store_batch
            in_flight.difference_update(ids)

    def _wants_index_process(self, *, encodes: bool = True) -> bool:
        """Whether Qdrant Edge's upserts go to a child process: as set, else with the
        encoder's (where the storage work is what holds a GPU ingest back); not for given
        vectors (no model to keep busy: the child's start would only add to the ingest,
        and asking whether there is a GPU imports torch)."""
        if not isinstance(self.index, EdgeIndex):
            return False  # a server's client already waits on the network, not in Python
        if self.settings.index_process is not None:
            return self.settings.index_process
        return encodes and wants_encoder_process(self.settings)

    def _upsert_vectors(
        self, lang: str, ids: list[int], vectors: np.ndarray, sink: _Upserts
    ) -> Callable[[], None]:
        """Upsert through ``sink``; what returns once the points are stored."""
        if vectors.shape[1] != self.settings.dim:
            raise ModelMismatchError(
                f"Got {vectors.shape[1]}-dimensional vectors for a database of "
                f"{self.settings.dim}-dimensional ones."
            )
        return sink.submit(lang, np.asarray(ids, dtype=np.int64), vectors)

    def resume(
        self, lang: str | None = None, vectors: VectorSource | None = None, *, strict: bool = True
    ) -> int:
        """Encode and upsert sentences an interrupted run stored without a vector.

        With ``strict=False`` a language whose sentences cannot be encoded here (a database of
        given vectors) is left as it is: unindexed sentences are never mined, and ``check``
        reports them until their file is ingested again.
        """
        if vectors is None:
            vectors = VectorSource(self.encoder)
        total = 0
        skipped: set[str] = set()
        while True:
            with self.db.session() as s:
                rows = corpus.unindexed(s, lang, BATCH, exclude=sorted(skipped))
            if not rows:
                return total
            by_lang: dict[str, list[tuple[int, str]]] = {}
            for sid, row_lang, text in rows:
                by_lang.setdefault(row_lang, []).append((sid, text))
            for row_lang, items in by_lang.items():
                self.index.ensure(row_lang, self.settings.dim)
                try:
                    found = vectors.vectors([t for _, t in items], None)
                except (ModelLoadError, InputError) as exc:
                    if not strict:
                        log.warning(
                            "%d %s sentences lack vectors; ingest their file again",
                            len(items),
                            row_lang,
                        )
                        skipped.add(row_lang)
                        continue
                    raise InputError(
                        f"{len(items)} {row_lang} sentences were stored without vectors by an "
                        "interrupted ingest and the model cannot encode them here; ingest the "
                        "same file again (with its --embeddings, if it had them)."
                    ) from exc
                ids = [i for i, _ in items]
                self._upsert_vectors(row_lang, ids, found, _Upserts(self.index, child=False))
                self._mark_indexed(ids)
                total += len(items)

    def ingest_file(
        self,
        path: str,
        lang: str,
        *,
        source: str | None = None,
        fmt: str = "auto",
        column: str | int | None = None,
        id_column: str | int | None = None,
        field: str | None = None,
        id_field: str | None = None,
        embeddings: str | None = None,
        dim: int | None = None,
        split_sentences: bool = False,
        lid: float | None = None,
        lid_accept: Sequence[str] = (),
        append: bool = False,
    ) -> IngestReport:
        """Read one file (or ``-`` for stdin) and store its sentences; with
        ``split_sentences`` each record is split into sentences first; with ``lid`` (a
        threshold) sentences of other languages are skipped (see :meth:`sentence_rules`).
        A file's source follows the file, unless ``append``: then, as for stdin, this read
        is a source of its own (``NAME@time``) that no later read changes."""
        lang = check_lang(lang)
        stream = is_stream(path)
        resolved, name = _read_source(path, source, append or stream)
        options = {
            "fmt": fmt,
            "column": column,
            "id_column": id_column,
            "field": field,
            "id_field": id_field,
        }
        rules = self.sentence_rules(lang, split_sentences, lid, lid_accept)
        vectors = self.given_vectors(path, options, embeddings, dim, split_sentences)
        stats = ReadStats()
        lines = read_lines(path, **options, **rules, stats=stats)  # type: ignore[arg-type]
        if stream or append:  # a new source each time: nothing to compare
            return self.ingest_lines(
                lang,
                lines,
                source=name,
                stats=stats,
                vectors=vectors,
                split_sentences=split_sentences,
            )
        # a file read again may displace sentences: none is removed while it runs; and
        # another worker's read of the same file waits for this one to end
        with (
            self.db.advisory_lock(displacing_lock(lang), shared=True),
            self.db.advisory_lock(source_lock(lang, name)),
        ):
            return self.ingest_lines(
                lang,
                lines,
                source=name,
                path=resolved,
                stats=stats,
                vectors=vectors,
                split_sentences=split_sentences,
                whole=True,
                read=reading(path, **options),  # type: ignore[arg-type]
            )

    def given_vectors(
        self,
        path: str,
        options: dict[str, Any],
        embeddings: str | None,
        dim: int | None,
        split_sentences: bool,
    ) -> VectorSource | None:
        """The vectors of ``embeddings`` for the lines of ``path`` (read with the reader's
        ``options``), checked to be one a line; None without ``embeddings``."""
        if not embeddings:
            return None
        if split_sentences:
            raise InputError(
                "--embeddings holds a vector per line, not per sentence: it cannot go with "
                "--split-sentences."
            )
        if path == "-":
            raise InputError("Embeddings must come with a text file, not standard input.")
        rows = load_embeddings(embeddings, dim, self.settings.dim)
        counted = ReadStats()
        # the lines that hold text (no rules needed): their rows are checked before anything
        # is stored, so a bad row far down the file does not leave half of it stored
        used = array.array(
            "q", (line.position for line in read_lines(path, **options, stats=counted))
        )
        if counted.lines != len(rows):
            raise InputError(
                f"{embeddings} has {len(rows)} rows but {path} has {counted.lines} records "
                "(lines, less a TSV's header); they must be line-aligned."
            )
        for start in range(0, len(used), CHECK_ROWS):
            _checked_rows(rows, used[start : start + CHECK_ROWS])
        return VectorSource(rows=rows)

    def preview_file(
        self,
        path: str,
        lang: str,
        *,
        source: str | None = None,
        split_sentences: bool = False,
        lid: float | None = None,
        lid_accept: Sequence[str] = (),
        append: bool = False,
        embeddings: str | None = None,
        dim: int | None = None,
        previewed: set[str] | None = None,
        **options: Any,
    ) -> IngestReport:
        """What :meth:`ingest_file` would do with ``path``, changing nothing
        (``ingest --dry-run``): the report's ``read``, ``skipped``, ``new`` and
        ``duplicates``, and for a file read again ``changed``, ``dropped`` and
        ``sentences_removed`` (the sentences that lines changed or gone would take with
        them: held by no other source and by no other line of the file). ``embeddings``
        are checked as the ingest checks them (one vector a line, of the database's
        dimension). ``previewed`` holds the hashes of the new sentences that files
        previewed before this one in the same ingest would store (it is added to), so they
        count as duplicates here, as they would be. ``options`` are the reader's (``fmt``,
        ``column``, ``id_column``, ``field``, ``id_field``)."""
        lang = check_lang(lang)
        if is_stream(path):
            what = "standard input" if path == "-" else f"{path} (a pipe)"
            raise InputError(f"--dry-run needs a file: {what} is gone once read.")
        self.given_vectors(path, options, embeddings, dim, split_sentences)
        started = time.perf_counter()
        resolved, name = _read_source(path, source, append)
        rules = self.sentence_rules(lang, split_sentences, lid, lid_accept)
        stats = ReadStats()
        lines = iter(read_lines(path, **options, **rules, stats=stats))
        first = next(lines, None)  # a file that cannot be read fails here
        lines = itertools.chain([] if first is None else [first], lines)
        report = IngestReport(lang=lang, source=name)
        sync = None
        with self.db.session() as s:
            src = None if append else corpus.existing_source(s, lang, name)
            if src is not None:  # refused as the ingest would refuse it
                corpus.source_id(s, lang, name, None, split_sentences=split_sentences)
                read = reading(path, **options)  # type: ignore[arg-type]
                corpus.check_reading(s, src, name, read, adopt=False)
                sync = _source_sync(s, lang, name, src, resolved, write=False)
                if sync is not None:
                    sync.unreadable = stats.unreadable
        fresh: set[str] = set() if previewed is None else previewed
        seen: list[np.ndarray] = []  # the stored sentences the file's lines hold
        for batch in _batches(lines, BATCH):
            with self.db.session() as s:
                stored = corpus.known(s, lang, batch.hashes)
                ids = [stored[h][0] if h in stored else -1 for h in batch.hashes]
                new = {h for h in batch.hashes if h not in stored and h not in fresh}
                if sync is not None:
                    rows = [
                        (sync.source_id, line.position, line.part, sid, line.ext_id)
                        for line, sid in zip(batch.lines, ids)
                    ]
                    sync.reconcile(s, rows)
            fresh |= new
            report.new += len(new)
            report.duplicates += len(batch.lines) - len(new)
            seen.append(np.array([sid for sid in ids if sid >= 0], dtype=np.int64))
        if sync is not None:
            with self.db.session() as s:
                sync.finish(s)
                leaving = np.setdiff1d(
                    np.array(sorted(sync.displaced), dtype=np.int64),
                    np.concatenate(seen) if seen else np.zeros(0, dtype=np.int64),
                )
                kept = corpus.held(s, leaving.tolist(), besides=sync.source_id)
            report.changed, report.dropped = sync.changed, sync.dropped
            report.sentences_removed = len(leaving) - len(kept)
        report.read, report.skipped = stats.lines, stats.skipped()
        if split_sentences:
            report.sentences = stats.sentences
        report.seconds = time.perf_counter() - started
        return report

    def sentence_rules(
        self, lang: str, split_sentences: bool, lid: float | None, lid_accept: Sequence[str]
    ) -> dict[str, Any]:
        """What the reader does to each record: the database's length limits, splitting into
        sentences (``split_sentences``), and, with ``lid``, skipping every sentence that
        py3langid puts in a language other than ``lang`` (or one of ``lid_accept``) with a
        probability of at least ``lid``."""
        accept = [lid_accept] if isinstance(lid_accept, str) else list(lid_accept)
        return {
            "min_chars": self.settings.min_chars,
            "max_chars": self.settings.max_chars,
            "split": sentence_splitter(lang) if split_sentences else None,
            "language": None if lid is None else language_check(lang, lid, accept),
        }

    def ingest_texts(
        self,
        lang: str,
        texts: Iterable[str],
        *,
        source: str,
        rows: np.ndarray | None = None,
        split_sentences: bool = False,
        lid: float | None = None,
        lid_accept: Sequence[str] = (),
    ) -> IngestReport:
        """Append in-memory texts to ``source``, with their vectors ``rows`` when given
        (row i belongs to text i); the texts take the positions after the source's last
        record, so that a later call adds to an earlier one instead of replacing it.
        ``split_sentences``, ``lid`` and ``lid_accept`` are :meth:`ingest_file`'s."""
        lang = check_lang(lang)
        texts = list(texts)
        if rows is not None and split_sentences:
            raise InputError("Given vectors belong to whole texts: they cannot be split.")
        _checked_source(source)
        if not texts:  # no source, and no language, made for nothing
            return IngestReport(lang=lang, source=source)
        stats = ReadStats()
        lines = read_texts(
            texts, **self.sentence_rules(lang, split_sentences, lid, lid_accept), stats=stats
        )  # checks every item is a string before anything is stored
        with self.db.session(writes=True) as s:
            src = corpus.source_id(s, lang, source, None, split_sentences=split_sentences)
            held = corpus.source_path(s, src)
            if held is not None:  # the file's next read would drop the texts again
                raise InputError(
                    f"The {lang} source {source!r} holds the lines of {held}; give the texts "
                    "another source."
                )
            first = corpus.reserve_positions(s, src, len(texts))
        shifted = (dataclasses.replace(line, position=line.position + first) for line in lines)
        try:
            return self.ingest_lines(
                lang,
                shifted,
                source=source,
                stats=stats,
                vectors=None if rows is None else VectorSource(rows=rows, first_position=first),
                split_sentences=split_sentences,
            )
        except BaseException:
            # nothing of these texts stored (a full disk, at once): the source claims no
            # records for them, and is not left behind empty
            with contextlib.suppress(Exception), self.db.session(writes=True) as s:
                corpus.release_positions(s, src, first, len(texts))
            raise


def _source_sync(
    s: Session, lang: str, name: str, source_id: int, path: str, *, write: bool = True
) -> SourceSync | None:
    """What keeps a file's source in step with the file, when the source holds lines
    already (None for a new one: nothing to compare). A source holds one file: another
    file under its name is refused, as it would replace the first file's lines."""
    held = corpus.source_path(s, source_id)
    if not corpus.holds_anything(s, source_id):
        return None
    if held is None:
        raise InputError(
            f"The {lang} source {name!r} holds texts given in memory; {path} would replace "
            f"them. Give the file its own --source, or remove {name!r} first."
        )
    # paths stored before schema 0005 (2026-11-28) may be relative to where that ingest ran
    if Path(held).is_absolute() and held != path:
        raise InputError(
            f"The {lang} source {name!r} holds the lines of {held}; a source holds one file "
            f"and {path} would replace them. Give it its own --source, or remove "
            f"{name!r} first."
        )
    return SourceSync(source_id, write=write)


def _read_source(path: str, source: str | None, append: bool) -> tuple[str, str]:
    """The resolved path of ``path`` (``stdin`` for ``-``) and the name of the source this
    read goes to: ``source``, by default the path; ``NAME@time`` for stdin and ``append``,
    each read a source of its own (two streams' positions must not collide)."""
    resolved = "stdin" if path == "-" else resolved_path(path)
    if not encodable(resolved):
        raise InputError(
            f"The name of {resolved!r} is not valid UTF-8, and a file's path is stored with "
            "its source: rename the file, or read it from standard input (- < FILE)."
        )
    # a pipe (`<(...)`, /dev/fd/N) is named as given: its resolved name means nothing later
    default = path if is_stream(path) and path != "-" else resolved
    name = _checked_source(default if source is None else source)
    if is_stream(path) or append:  # the name with its moment must fit as well
        name = f"{name}@{datetime.now(timezone.utc).isoformat(timespec='microseconds')}"
        _checked_source(name)
    return resolved, name


def is_stream(path: str) -> bool:
    """Whether ``path`` is read once and gone: standard input, a pipe, a socket or a
    character device (``bitextdb ingest <(zcat a.gz)``). Such a read is a source of its own,
    as stdin's is, never a file to follow or to find missing."""
    if path == "-":
        return True
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):  # ValueError: a NUL in the path
        return False  # the reader says what is wrong with it
    return stat.S_ISFIFO(mode) or stat.S_ISCHR(mode) or stat.S_ISSOCK(mode)


def _checked_source(name: str) -> str:
    """``name``, if a source may bear it (checked before anything is read or stored)."""
    if not isinstance(name, str):
        raise InputError(f"A source name is text, not {type(name).__name__}.")
    if not name.strip():
        raise InputError("A source name cannot be empty; pass a name with --source, or none.")
    if len(name) > 512 or breaks_a_line(name):
        raise InputError(
            f"A source name has at most 512 characters, none of them a control character "
            f"(a tab, a line break) or invalid UTF-8, not {name[:80]!r}; give another (a "
            "file's source is named after its path unless --source NAME names it)."
        )
    return name


class _Upserts:
    """Where an ingest's vectors go: the index, or, when ``child`` is set and
    :meth:`prepare` was called (by a full batch: an ingest of one short batch would be over
    before a child had started), an :class:`~bitextdb.vectors.edge_writer.EdgeWriter`."""

    def __init__(self, index: VectorIndex, child: bool) -> None:
        self.index = index
        self.child = child
        self.writer: edge_writer.EdgeWriter | None = None

    def prepare(self) -> None:
        """Start the writer process, if wanted, ahead of the upserts it will take.

        Called from the stage before the upserts: the batch queues between them order the
        two, so the upserting thread sees the writer.
        """
        if self.child and self.writer is None:
            assert isinstance(self.index, EdgeIndex)
            self.writer = edge_writer.EdgeWriter(self.index)

    def submit(self, lang: str, ids: np.ndarray, vectors: np.ndarray) -> Callable[[], None]:
        """Upsert, or hand the points to the writer; what returns once they are stored
        (called in submission order: the writer stores batches in that order)."""
        if self.writer is None:
            self.index.upsert(lang, ids, vectors)
            return _stored
        self.writer.submit(lang, ids, vectors)
        return self.writer.confirm

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def _stored() -> None:
    """Points stored already: nothing to wait for."""


@dataclass
class _Batch:
    """Lines read and their texts' hashes, worked out while reading, so that the storing
    stage, the ingest's busiest, only stores."""

    lines: list[Line]
    hashes: list[str]


def _batches(lines: Iterable[Line], size: int) -> Iterator[_Batch]:
    batch: list[Line] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= size:
            yield _hashed(batch)
            batch = []
    if batch:
        yield _hashed(batch)


def _hashed(lines: list[Line]) -> _Batch:
    return _Batch(lines, [text_hash(line.text) for line in lines])
