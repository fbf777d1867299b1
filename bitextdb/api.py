"""``BitextDB``: the library face. Everything the CLI does is one call here."""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import os
import uuid
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from .audit import DEFAULT_SAMPLE
from .check import CheckReport, check
from .config import (
    EMBEDDED_DB_FILE,
    Locations,
    Settings,
    check_device,
    check_lang,
    embedded_db_url,
    mask_url,
    model_name,
    names_a_path,
    pair_name,
    pairs_to_mine,
    parse_pair,
    resolve_locations,
    same_model,
    sqlite_file,
    write_locations_file,
)
from .db import Database, consistency, corpus, export_sql, graph, never_initialised
from .encoder import Encoder, TextEncoder
from .encoder_process import EncoderProcess, wants_encoder_process
from .errors import ClosedError, ConfigError, InputError, ModelMismatchError, NotInitializedError
from .ingest import Ingestor, IngestReport
from .interrupts import committed
from .lock import writer_lock
from .query import Translation, translate_many
from .readers import encodable
from .remove import list_sources, remove_displaced, remove_missing, remove_sources
from .vectors import EdgeIndex, VectorIndex, open_index
from .vectors.edge import STORE_ID_FILE

if TYPE_CHECKING:
    from .miner import Miner, PairReport
    from .vectors.server import ServerIndex

Progress = Callable[[str, int, int], None]

#: settings a single run may change without touching the database
RUN_OPTIONS = (
    "device",
    "batch_size",
    "backend",
    "encoder_process",
    "index_process",
    "mine_path",
)


class BitextDB:
    """A bitext database: SQL + vector store + settings. Use :func:`open` or :func:`init`."""

    def __init__(
        self,
        locations: Locations,
        db: Database,
        index: VectorIndex,
        settings: Settings,
        *,
        progress: Progress | None = None,
        lock: contextlib.ExitStack | None = None,
    ) -> None:
        self.locations = locations
        self.db = db
        self.index = index
        self.settings = settings
        self.progress = progress
        self._lock = lock
        self._encoder: TextEncoder | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def close(self) -> None:
        """Flush and release both stores and the home's lock; the object is of no use
        after (a call that needs a store raises :class:`bitextdb.errors.ClosedError`)."""
        if isinstance(self.db, _Closed):
            return
        try:
            self._drop_encoder()
            self.index.close()
            self.db.dispose()
        finally:
            if self._lock is not None:
                self._lock.close()
                self._lock = None
            # without the lock another process may write now: nothing more through here
            self.db = cast(Database, _Closed(self.locations.home))
            self.index = cast(VectorIndex, _Closed(self.locations.home))

    def _require_open(self) -> None:
        if isinstance(self.db, _Closed):
            self.db.session  # noqa: B018 - says the object is closed

    def _drop_encoder(self) -> None:
        if self._encoder is not None:
            self._encoder.close()
            self._encoder = None

    def __enter__(self) -> BitextDB:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:  # the block's work is done: closing is no place to stop
            committed()
        self.close()

    # -- the parts -------------------------------------------------------------------------
    @property
    def encoder(self) -> TextEncoder:
        """The database's model, loaded on first use."""
        self._require_open()
        if self._encoder is None:
            s = self.settings
            options: dict[str, Any] = {
                "device": s.device,
                "revision": s.revision,
                "trust_remote_code": s.trust_remote_code,
                "max_seq_length": s.max_seq_length,
                "batch_size": s.batch_size,
                "backend": s.backend,
                "cache_dir": self.locations.home / "onnx",
            }
            if wants_encoder_process(s):
                encoder: TextEncoder = EncoderProcess(s.model, **options)
            else:
                encoder = Encoder(s.model, **options)
            try:
                encoder.check_dimension(s.dim)
            except BaseException:
                encoder.close()  # a child process must not outlive the refusal
                raise
            self._encoder = encoder
        return self._encoder

    def miner(self) -> Miner:
        """The database's miner (:class:`bitextdb.miner.Miner`) over its stores."""
        from .miner import Miner  # torch: imported by the commands that mine only

        self._require_open()
        return Miner(self.db, self.index, self.settings, progress=self.progress)

    def _ingestor(self) -> Ingestor:
        return Ingestor(
            self.db, self.index, self.settings, lambda: self.encoder, progress=self.progress
        )

    # -- ingest ----------------------------------------------------------------------------
    def ingest(
        self,
        paths: str | Path | Sequence[str | Path],
        lang: str,
        *,
        source: str | None = None,
        fmt: str = "auto",
        column: str | int | None = None,
        id_column: str | int | None = None,
        field: str | None = None,
        id_field: str | None = None,
        embeddings: str | Path | None = None,
        dim: int | None = None,
        split_sentences: bool = False,
        lid: float | None = None,
        lid_accept: Sequence[str] = (),
        append: bool = False,
        mine: bool = True,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Ingest files (``-`` is stdin), then mine unless ``mine=False``. A file read
        again brings its source up to date with it (lines changed or gone leave it; see
        :mod:`bitextdb.source_sync`) unless ``append``: then each read is a source of its
        own, named ``NAME@time``, as every read of stdin is. ``dry_run`` reads the files
        and counts what would change, changing nothing (see
        :meth:`bitextdb.ingest.Ingestor.preview_file`). With
        ``split_sentences`` every record (line, TSV cell, JSON field) is split into
        sentences (see :mod:`bitextdb.segment`); with ``lid`` (a probability, such as
        :data:`bitextdb.language_id.DEFAULT_LID_THRESHOLD`) a sentence that py3langid puts
        in another language than ``lang`` (or those of ``lid_accept``) with at least that
        probability is skipped."""
        lang = check_lang(lang)
        if paths is None:
            raise InputError("Give at least one file to ingest.")
        paths = [paths] if isinstance(paths, (str, bytes, os.PathLike)) else list(paths)
        if any(isinstance(path, bytes) for path in paths):
            raise InputError("Give file paths as str or pathlib.Path, not bytes.")
        if not paths:
            raise InputError("Give at least one file to ingest.")
        if embeddings is not None and len(paths) != 1:
            raise InputError("--embeddings goes with exactly one text file.")
        if source is not None and len(paths) != 1:
            raise InputError("--source names one file; ingest several files without it.")
        ingestor = self._ingestor()
        # how every file is read, and into which source
        common: dict[str, Any] = {
            "source": source,
            "fmt": fmt,
            "column": column,
            "id_column": id_column,
            "field": field,
            "id_field": id_field,
            "split_sentences": split_sentences,
            "lid": lid,
            "lid_accept": lid_accept,
            "append": append,
        }
        common["embeddings"] = None if embeddings is None else str(embeddings)
        common["dim"] = dim
        if dry_run:
            previewed: set[str] = set()  # the files before a file store its sentences
            previews = [
                ingestor.preview_file(str(p), lang, previewed=previewed, **common) for p in paths
            ]
            return {"ingested": [r.as_dict() for r in previews], "dry_run": True}
        reports: list[IngestReport] = []
        for path in paths:
            try:
                reports.append(ingestor.ingest_file(str(path), lang, **common))
            except InputError as exc:
                if not reports:
                    raise
                # the files before it are stored: finish them, so the database is whole
                finished = self._finish(reports, mine, self._remove_displaced(reports))
                done = ", ".join(r.source for r in reports)
                what = "ingested and mined" if mine else "ingested"
                said = str(exc).removesuffix(".")
                error = InputError(f"{said} (the files before it were {what}: {done}).")
                error.partial = finished
                raise error from exc
        return self._finish(reports, mine, self._remove_displaced(reports))

    def ingest_texts(
        self,
        lang: str,
        texts: Iterable[str],
        *,
        source: str = "api",
        split_sentences: bool = False,
        lid: float | None = None,
        lid_accept: Sequence[str] = (),
        mine: bool = True,
    ) -> dict[str, Any]:
        """Ingest sentences given as strings (or, with ``split_sentences``, texts to split
        into sentences); they are normalised, deduplicated and added to ``source``;
        ``lid`` and ``lid_accept`` as for :meth:`ingest`."""
        report = self._ingestor().ingest_texts(
            lang,
            _one_or_many(texts, "texts"),
            source=source,
            split_sentences=split_sentences,
            lid=lid,
            lid_accept=lid_accept,
        )
        return self._finish([report], mine)

    def ingest_embeddings(
        self,
        lang: str,
        texts: Sequence[str],
        vectors: np.ndarray,
        *,
        source: str = "embeddings",
        mine: bool = True,
    ) -> dict[str, Any]:
        """Ingest sentences with vectors made elsewhere (row i belongs to ``texts[i]``)."""
        texts = _one_or_many(texts, "texts")
        vectors = _float_rows(vectors)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise InputError(
                f"Expected {len(texts)} vectors (one per sentence), got an array of shape "
                f"{vectors.shape}."
            )
        if vectors.shape[1] != self.settings.dim:
            raise ModelMismatchError(
                f"Got {vectors.shape[1]}-dimensional vectors for a database of "
                f"{self.settings.dim}-dimensional ones."
            )
        report = self._ingestor().ingest_texts(lang, texts, source=source, rows=vectors)
        return self._finish([report], mine)

    def _remove_displaced(self, reports: Sequence[IngestReport] = ()) -> list[dict[str, Any]]:
        """Remove the sentences that files ingested again no longer hold and no other
        source does (after all files: a sentence may move to another of them); returns what
        the miner did per language pair and sets each report's ``sentences_removed``."""
        removed, pairs = remove_displaced(self)
        for report in reports:
            report.sentences_removed = len(report.displaced & removed)
        return pairs

    def _finish(
        self, reports: list[IngestReport], mine: bool, removed: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"ingested": [r.as_dict() for r in reports]}
        out["removed"] = removed or []
        if mine:
            out["mined"] = [r.as_dict() for r in self.mine()]
        return out

    # -- mining ----------------------------------------------------------------------------
    def mine(self, pairs: str | Sequence[str] | None = None) -> list[PairReport]:
        """Bring the neighbour graph, candidates and pairs up to date (first finishing what
        an interrupted ingest left: vectors, and sentences a changed file displaced); only
        ``pairs`` (``"en-de"`` or a list), when given, each among those the database mines."""
        names = [pairs] if isinstance(pairs, str) else pairs or []
        if not isinstance(names, Sequence) or not all(isinstance(p, str) for p in names):
            raise InputError(f"Name language pairs as text such as 'de-en', not {pairs!r}.")
        chosen = list(dict.fromkeys(parse_pair(p) for p in names))  # en-de and de-en: once
        self._ingestor().resume(strict=False)
        self._remove_displaced()
        self._check_minable(chosen)
        return self.miner().mine(chosen or None)

    def _check_minable(self, chosen: list[tuple[str, str]]) -> None:
        """Each pair between two languages the database holds, among those it mines."""
        minable = self.language_pairs()
        with self.db.session() as s:
            held = graph.languages(s)
        for a, b in chosen:
            for lang in (a, b):
                if lang not in held:
                    raise InputError(
                        f"The database has no {lang} sentences to mine (languages: "
                        f"{', '.join(held) or 'none yet'})."
                    )
            if (a, b) not in minable:
                raise InputError(
                    f"{pair_name(a, b)} is not among the pairs this database mines "
                    f"({', '.join(self.settings.pairs or [])}); add it with "
                    "`bitextdb config --pairs`."
                )

    # -- sources -------------------------------------------------------------------------
    def sources(self, lang: str | None = None) -> list[dict[str, Any]]:
        """The sources ingested, with their counts; see :func:`bitextdb.remove.list_sources`."""
        return list_sources(self, lang)

    def remove(
        self, lang: str, sources: str | Sequence[str], *, dry_run: bool = False
    ) -> dict[str, Any]:
        """Forget sources of ``lang`` and what only they brought, as if never ingested; see
        :func:`bitextdb.remove.remove_sources`."""
        return remove_sources(self, lang, _names(sources, "sources"), dry_run=dry_run)

    def remove_missing(
        self, lang: str | None = None, *, dry_run: bool = False
    ) -> list[dict[str, Any]]:
        """Forget the sources (of ``lang``, or of every language) whose file was deleted;
        see :func:`bitextdb.remove.remove_missing`."""
        return remove_missing(self, lang, dry_run=dry_run)

    # -- queries ---------------------------------------------------------------------------
    def translate(self, text: str, src: str, tgt: str, *, top: int = 5) -> Translation:
        """Ranked translations of one sentence (it need not be in the database)."""
        return translate_many(self, [text], src, tgt, top=top)[0]

    def translate_many(
        self, texts: str | Sequence[str], src: str, tgt: str, *, top: int = 5
    ) -> list[Translation]:
        """Ranked translations of several sentences, encoded in one batch."""
        return translate_many(self, _one_or_many(texts, "sentences"), src, tgt, top=top)

    def export(self, pair: str, **options: Any) -> dict[str, Any]:
        """Write the pairs of ``pair`` (``"en-de"``); see ``bitextdb.export.export_pairs``."""
        from .export import export_pairs

        _refuse_unknown(options, export_pairs, "export")
        return export_pairs(self, pair, **options)

    def evaluate(self, pair: str, gold: str | os.PathLike[str], **options: Any) -> dict[str, Any]:
        """Precision, recall and F1 against gold pairs; see :func:`bitextdb.evaluate.evaluate`."""
        from .evaluate import evaluate

        _refuse_unknown(options, evaluate, "evaluate")
        return evaluate(self, pair, gold, **options)

    # -- consistency -------------------------------------------------------------------------
    def check(
        self, *, repair: bool = False, deep: bool = False, sample: int = DEFAULT_SAMPLE
    ) -> CheckReport:
        """Compare SQL and the vector store; ``deep`` also derives every candidate, pair
        row and the selection again from the stored lists and searches ``sample`` lists
        of each side again exactly; ``repair`` fixes what disagrees."""
        if isinstance(sample, bool) or not isinstance(sample, int) or sample < 0:
            raise InputError(f"The sample is a whole number of lists, 0 or more, not {sample!r}.")
        return check(self, repair=repair, deep=deep, sample=sample)

    # -- settings and stats ----------------------------------------------------------------
    def configure(self, **changes: Any) -> Settings:
        """Change mutable settings (threshold, pairs, exact_limit, ...) and store them."""
        self._require_open()
        for key in changes:
            if key not in Settings.MUTABLE:
                known = key in {f.name for f in dataclasses.fields(Settings)}
                raise ConfigError(
                    f"{key} is fixed when the database is created."
                    if known
                    else f"There is no setting {key!r}; those that can change: "
                    + ", ".join(Settings.MUTABLE)
                    + "."
                )
        check_device(changes.get("device"))
        data = self.settings.to_dict() | changes
        self.settings = Settings.from_dict(data).validate()
        self.db.save_settings(self.settings)
        return self.settings

    def relocate_model(self, model: str) -> dict[str, Any]:
        """Take ``model`` (a folder) as the database's model, moved: only if it encodes
        stored sentences to their stored vectors; see :mod:`bitextdb.relocate`."""
        from .relocate import relocate_model  # torch: imported by the commands that encode

        self._require_open()
        self._drop_encoder()  # the old folder's, if loaded
        return relocate_model(self, model)

    def language_pairs(self) -> list[tuple[str, str]]:
        with self.db.session() as s:
            return pairs_to_mine(graph.languages(s), self.settings.pairs)

    def stats(self) -> dict[str, Any]:
        """Counts and settings; the JSON shape is documented in the README."""
        s = self.settings
        with self.db.session() as session:
            langs = corpus.language_counts(session)
            pairs: dict[str, Any] = {}
            names = sorted(langs)
            wanted = None if s.pairs is None else set(s.pairs)
            for a, b in itertools.combinations(names, 2):
                name = pair_name(a, b)
                if wanted is not None and name not in wanted:
                    continue
                counts = graph.pair_counts(session, a, b, s.threshold)
                # nothing is mined against a side without vectors (a language whose
                # sources all emptied): no work waits there
                pending = {
                    x: graph.count_pending(session, x, y) if langs[y]["indexed"] else 0
                    for x, y in ((a, b), (b, a))
                }
                # how each side's collection is searched when the other side's sentences
                # are added (the miner decides per side, by the size of the one searched)
                searched = {
                    x: "hnsw"
                    if langs[x]["indexed"] > s.exact_limit and s.mine_path != "scan"
                    else "exact"
                    for x in (a, b)
                }
                pairs[name] = counts | {
                    "threshold": s.threshold,
                    "pending": pending,
                    # left by a run stopped between its steps: `mine` finishes them
                    "candidates_waiting": consistency.count_dirty(session, [(a, b)]),
                    "search": searched[a] if searched[a] == searched[b] else "mixed",
                    "searched": searched,
                }
            exports = {
                "cursors": len(export_sql.list_cursors(session)),
                "withdrawn_records": sum(export_sql.withdrawn_pairs_held(session).values()),
            }
        return {
            "languages": langs,
            "pairs": pairs,
            "pairs_mined": "all" if s.pairs is None else s.pairs,
            "exports": exports,
            "model": {
                "name": s.model,
                "dim": s.dim,
                "revision": s.revision,
                "trust_remote_code": s.trust_remote_code,
                "max_seq_length": s.max_seq_length,
                "backend": s.backend,
            },
            "settings": {
                "k": s.k,
                "threshold": s.threshold,
                "exact_limit": s.exact_limit,
                "hnsw_m": s.hnsw_m,
                "hnsw_ef_construct": s.hnsw_ef_construct,
                "hnsw_ef": s.hnsw_ef,
                "min_chars": s.min_chars,
                "max_chars": s.max_chars,
            },
            "stores": self.locations.describe() | {"schema": self.db.current_revision()},
        }


def _one_or_many(value: Any, what: str, single: tuple[type, ...] = (str,)) -> list[Any]:
    """``value`` as a list: one item (of the kinds ``single``) is a list of one, as a single
    string where a list is expected is everywhere; None, bytes or a non-iterable is one
    clear sentence."""
    if isinstance(value, single):
        return [value]
    if value is None or isinstance(value, bytes) or not isinstance(value, Iterable):
        hint = " (decode them first)" if isinstance(value, bytes) else ""
        raise InputError(f"Give the {what} as text in a list, not {type(value).__name__}{hint}.")
    return list(value)


def _names(value: Any, what: str) -> list[str]:
    """One name or several (``str`` or ``os.PathLike`` each) as a list of ``str``."""
    items = _one_or_many(value, what, single=(str, os.PathLike))
    names = []
    for item in items:
        name = os.fspath(item) if isinstance(item, (str, os.PathLike)) else item
        if not isinstance(name, str):
            raise InputError(f"Give the {what} as text (or paths), not {type(name).__name__}.")
        if not encodable(name):  # a lone surrogate: the database cannot be asked for it
            raise InputError(
                f"{name!r} among the {what} is not valid Unicode (a file name that is not "
                "UTF-8?); no source can be named so."
            )
        names.append(name)
    return names


def _float_rows(vectors: Any) -> np.ndarray:
    """``vectors`` as float32 rows, or one clear sentence on what they are instead."""
    array = np.asarray(vectors)
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise InputError(
            f"Give the vectors as an array of real numbers (float32), not of {array.dtype}."
        )
    return array.astype(np.float32, copy=False)


def _refuse_unknown(options: dict[str, Any], function: Callable[..., Any], what: str) -> None:
    """An option ``function`` does not take is one clear sentence, not a ``TypeError``."""
    import inspect

    known = [
        name
        for name, parameter in inspect.signature(function).parameters.items()
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY
    ]
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise InputError(
            f"{what} takes no option {', '.join(unknown)}; its options: {', '.join(known)}."
        )


def _acquire(loc: Locations, wait: float, on_wait: Callable[[str], None] | None):  # type: ignore[no-untyped-def]
    stack = contextlib.ExitStack()
    # Qdrant Edge shards belong to one process, and SQLite has one writer; with a Qdrant
    # server and PostgreSQL several workers may run (mining takes a lock per language pair)
    if not loc.qdrant or not loc.db.startswith("postgresql"):
        stack.enter_context(writer_lock(loc.lock_path, wait=wait, on_wait=on_wait))
    return stack


class _Closed:
    """Stands for the stores of a closed :class:`BitextDB`: any use says so."""

    def __init__(self, home: Path) -> None:
        self._home = home

    def __getattr__(self, name: str) -> Any:
        raise ClosedError(
            f"This BitextDB ({self._home}) is closed; open it again with bitextdb.open()."
        )


def _refuse_old_spellings(langs: Sequence[str]) -> None:
    """Stop at a database that stores a language code as ``check_lang`` no longer spells
    it (``pt-br``, made before codes were spelled as BCP 47 does): every command would
    now name that language ``pt-BR``, a language of its own beside it."""
    old = [f"{lang} (now {check_lang(lang)})" for lang in langs if check_lang(lang) != lang]
    if old:
        raise ConfigError(
            f"This database stores language codes that bitextdb now spells otherwise: "
            f"{', '.join(old)}. It was made by a development version; export its pairs with "
            "that version and ingest its corpora into a new home."
        )


def open(
    home: str | os.PathLike[str] | None = None,
    *,
    db: str | None = None,
    qdrant: str | None = None,
    qdrant_prefix: str | None = None,
    model: str | None = None,
    wait: float = 0.0,
    progress: Progress | None = None,
    on_wait: Callable[[str], None] | None = None,
    **run_options: Any,
) -> BitextDB:
    """Open an initialised database. ``model`` only checks it is the database's model."""
    loc = resolve_locations(home, db, qdrant, qdrant_prefix)
    _refuse_another_homes_file(loc)
    database_file = sqlite_file(loc.db)
    if database_file is not None and not database_file.exists():
        where = loc.home if loc.db == embedded_db_url(loc.home) else database_file
        raise NotInitializedError(f"No bitextdb database in {where}; run `bitextdb init` first.")
    database = Database(loc.db)
    database.require_schema()
    settings = database.load_settings()
    if settings is None:
        raise NotInitializedError(
            f"The database at {loc.describe()['db']} has no settings; run `bitextdb init`."
        )
    with database.session() as s:
        _refuse_old_spellings(corpus.source_languages(s))
    if model is not None and not same_model(model, settings.model):
        raise ModelMismatchError(
            f"This database was built with {settings.model!r}, not {model!r}: vectors of two "
            "models cannot be compared. Use another --home for the other model."
        )
    try:
        settings.validate()
    except ConfigError as exc:  # as stored: not the caller's doing
        raise ConfigError(
            f"This database's stored settings do not hold: {exc} `bitextdb init` with the "
            "setting given again (such as --pairs) stores it anew."
        ) from exc
    for key, value in run_options.items():
        if key not in RUN_OPTIONS:
            raise ConfigError(f"Unknown option {key}.")
        if value is not None:
            setattr(settings, key, value)
    check_device(run_options.get("device"))
    settings.validate()
    lock = _acquire(loc, wait, on_wait)
    try:
        index = open_index(loc, settings)
        try:
            _claim_store(database, index)
        except BaseException:
            index.close()
            raise
    except BaseException:
        lock.close()
        raise
    return BitextDB(loc, database, index, settings, progress=progress, lock=lock)


#: the key under which the SQL database keeps the name of its Qdrant Edge store
EDGE_STORE_NOTE = "edge_store"
#: the key under which it keeps the name its Qdrant server collections carry
SERVER_OWNER_NOTE = "qdrant_owner"


def _claim_store(database: Database, index: VectorIndex, *, name: bool = True) -> None:
    """Refuse a home whose Qdrant Edge store is not the one the SQL database belongs to:
    two homes given one ``--db`` (PostgreSQL, or another home's SQLite file), or a home
    given a second database, would mix the vectors of two. Both keep the store's name,
    given at first use (unless ``name`` is false: only the refusals, before ``init``
    writes anything)."""
    if not isinstance(index, EdgeIndex):
        # a Qdrant server is shared by every worker of the database, and by other databases
        # under other prefixes: its collections name the database they belong to
        server = cast("ServerIndex", index)
        owner = database.note(SERVER_OWNER_NOTE)
        if owner is None and name:
            owner = database.claim_note(SERVER_OWNER_NOTE, uuid.uuid4().hex)
        if owner is not None:
            server.claim(str(owner))
        lacking = "" if name else _lacking(database, server)  # init again, perhaps elsewhere
        if lacking:
            raise ConfigError(
                f"The Qdrant collections under {server.prefix!r} at {mask_url(server.url)} "
                f"lack vectors this database has stored ({lacking}): give the --qdrant and "
                "--qdrant-prefix it was made with."
            )
        return
    kept, here = database.note(EDGE_STORE_NOTE), index.store_id()
    if kept is not None and kept == here:
        return
    where = mask_url(database.url)
    if kept is not None:
        raise _another_homes_database(where, index, kept)
    # the database names no store yet: it is new, or older than the names
    holds = _refuse_a_filled_store(index, where)
    said = _lacking(database, index, holds)
    if said:  # not the home it was filled from (or half of one that shared it)
        raise ConfigError(
            f"This home's Qdrant Edge store ({index.root}) lacks vectors the SQL database "
            f"{where} has stored ({said}): it is not the home the database was filled from. "
            "Open the database from that home, or give this home its own --db."
        )
    if name:
        if here is None:
            here = uuid.uuid4().hex
            index.name_store(here)
        # written only where none is: of two homes opening the database at once, one wins
        won = database.claim_note(EDGE_STORE_NOTE, here)
        if won != here:
            raise _another_homes_database(where, index, won)


def _refuse_another_homes_file(loc: Locations) -> None:
    """Refuse, before anything changes, a SQLite file that is another home's own database
    (its folder holds a vectors store): its sentences' vectors are in that home. The store
    names cannot tell them apart where one home is a copy of the other."""
    file = sqlite_file(loc.db)
    if loc.qdrant or file is None or file.name != EMBEDDED_DB_FILE:
        return  # with a Qdrant server no vectors live in a home
    other = file.resolve().parent
    if other == loc.home.resolve() or not Locations(other, loc.db).vectors_dir.is_dir():
        return
    raise ConfigError(
        f"{file} is the database of the home {other}, whose vectors are in that home, not in "
        f"{loc.home}: open {other} itself, or give this home its own --db (or none: its own "
        "SQLite file)."
    )


def _refuse_a_filled_store(index: EdgeIndex, where: str) -> dict[str, int]:
    """A home whose named store holds vectors belongs to the database it was made with: a
    database that names no store (a new one) is not it. Returns the store's counts."""
    holds = {lang: index.count(lang) for lang in index.languages()}
    if index.store_id() is not None and any(holds.values()):
        raise ConfigError(
            f"This home's vectors ({index.root}) belong to another SQL database than {where}: "
            "a home keeps the database it was made with. Give it that --db again, or make a "
            "new home for this database."
        )
    return holds


def _lacking(database: Database, index: VectorIndex, holds: dict[str, int] | None = None) -> str:
    """The languages whose stored sentences ``index`` holds fewer vectors of than SQL says
    it should (``holds``: its counts, when known), as ``en 0 of 1,200``; empty if none."""
    if holds is None:
        holds = {lang: index.count(lang) for lang in index.languages()}
    with database.session() as s:
        indexed = {lang: c["indexed"] for lang, c in corpus.language_counts(s).items()}
    lacking = {lang: n for lang, n in indexed.items() if holds.get(lang, 0) < n}
    return ", ".join(f"{lang} {holds.get(lang, 0):,} of {n:,}" for lang, n in lacking.items())


def _another_homes_database(where: str, index: EdgeIndex, kept: object) -> ConfigError:
    # the way back fits only a home whose store has no name of its own (its folder lost);
    # told to one with a store, it would tie that store to the other home's database
    if index.store_id() is None:  # this home's own, whose name (or whole folder) was lost?
        return ConfigError(
            f"The SQL database {where} belongs to the vector store named {kept}, and this "
            f"home's ({index.root}) has no name: it is another home's database, or this "
            f"home's store lost its {STORE_ID_FILE} file or its whole folder. If it is this "
            f"home's: `mkdir -p {index.root}`, write {kept} into "
            f"{index.root / STORE_ID_FILE}, and `bitextdb check --repair` (which encodes "
            "again whatever vectors are gone). Else give each home its own --db."
        )
    return ConfigError(
        f"The SQL database {where} was filled from the vectors of another home, not this "
        f"one's ({index.root}). Give each home its own --db (or none: its own SQLite "
        "file); to share one database between machines, use a Qdrant server (--qdrant) "
        "from the start."
    )


def _new_settings(
    model: str | None, dim: int | None, k: int | None, options: dict[str, Any]
) -> Settings:
    """The settings of a new database: the options given over the defaults, and the
    dimension its model makes (the model is loaded on the CPU to ask)."""
    settings = Settings.from_dict({key: v for key, v in options.items() if v is not None})
    settings.model = model_name(model) if model else settings.model
    settings.k = settings.k if k is None else k
    settings.validate()
    # a hub name with --dim is taken at its word (a database of given vectors names a model
    # it never loads); a local folder is asked, so --dim cannot contradict it, and a path
    # that names no folder is said so, as without --dim
    if dim and not names_a_path(settings.model) and not Path(settings.model).is_dir():
        settings.dim = dim
        settings.validate()  # a dimension of the wrong kind, or below 1
        return settings
    # only the dimension is wanted: on the CPU, so no GPU memory stays cached in this
    # process beside the copy an encoder process would load
    encoder = Encoder(
        settings.model,
        device="cpu",
        revision=settings.revision,
        trust_remote_code=settings.trust_remote_code,
    )
    if dim and encoder.dim != dim:
        raise ModelMismatchError(
            f"The model in {settings.model} makes {encoder.dim}-dimensional vectors, not "
            f"{dim}: leave --dim out, or give {encoder.dim}."
        )
    settings.dim = encoder.dim
    return settings


def init(
    home: str | os.PathLike[str] | None = None,
    *,
    db: str | None = None,
    qdrant: str | None = None,
    qdrant_prefix: str | None = None,
    model: str | None = None,
    dim: int | None = None,
    k: int | None = None,
    wait: float = 0.0,
    progress: Progress | None = None,
    **options: Any,
) -> BitextDB:
    """Create or upgrade a database and fix its settings; harmless to repeat."""
    unknown = sorted(set(options) - set(Settings.__dataclass_fields__))
    if unknown:
        raise ConfigError(f"Unknown setting(s): {', '.join(unknown)}.")
    check_device(options.get("device"))
    loc = resolve_locations(home, db, qdrant, qdrant_prefix)
    if loc.home.exists() and not loc.home.is_dir():
        raise ConfigError(f"{loc.home} is a file, not a folder: give a folder for the home.")
    _refuse_another_homes_file(loc)
    # a new database's settings (its model loaded) are made before anything is written, so
    # a model that cannot be loaded leaves no half-made home or schema behind
    prepared = _new_settings(model, dim, k, options) if never_initialised(loc.db) else None
    loc.home.mkdir(parents=True, exist_ok=True)
    with _acquire(loc, wait, None):
        database = Database(loc.db)
        # an unreachable vector store fails before the schema is written, and one the
        # database does not belong to before the settings are
        index = open_index(loc)
        try:
            if isinstance(index, EdgeIndex) and database.current_revision() is None:
                # refused before the new database gains a schema
                _refuse_a_filled_store(index, mask_url(database.url))
            database.upgrade()
            _claim_store(database, index, name=False)
        finally:
            index.close()
        current = database.load_settings()
        if current is None:
            settings = prepared or _new_settings(model, dim, k, options)
        else:
            settings = current
            if model is not None and same_model(model, settings.model):
                model = None  # the same folder, however it is written
            fixed = {"model": model, "dim": dim, "k": k} | {
                key: v for key, v in options.items() if key not in Settings.MUTABLE
            }
            for key, value in fixed.items():
                if value is not None and getattr(settings, key) != value:
                    raise ModelMismatchError(
                        f"This database was created with {key}={getattr(settings, key)!r}; "
                        f"it cannot become {value!r}. Use another --home."
                    )
            for key, value in options.items():
                if key in Settings.MUTABLE and value is not None:
                    setattr(settings, key, value)
            settings.validate()
        database.save_settings(settings)
        write_locations_file(loc)
        database.dispose()
    return open(
        loc.home,
        db=loc.db,
        qdrant=loc.qdrant,
        qdrant_prefix=loc.qdrant_prefix,
        wait=wait,
        progress=progress,
    )
