"""The ``bitextdb`` command: parses flags, calls ``BitextDB``, prints. Nothing else."""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import signal
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click
import sqlalchemy.exc

from .. import api
from ..allocator import tune_allocator
from ..config import BACKENDS, DEFAULT_MODEL, ENV_PREFIX, sqlite_file
from ..db.engine import failure_reason
from ..errors import BitextDBError, InputError, NotInitializedError
from ..interrupts import finish_once_committed
from ..language_id import DEFAULT_LID_THRESHOLD
from ..progress import ProgressBars
from .stdout import use_whole_writes

F = TypeVar("F", bound=Callable[..., Any])


class Context:
    """What the group's options resolve to, shared by every command."""

    def __init__(self, options: dict[str, Any]) -> None:
        self.home = options["home"]
        self.db = options["db"]
        self.qdrant = options["qdrant"]
        self.qdrant_prefix = options["qdrant_prefix"]
        self.wait = options["wait"]
        self.quiet = options["quiet"]
        self.bars = ProgressBars(disable=self.quiet)

    def stores(self) -> dict[str, Any]:
        return {
            "db": self.db,
            "qdrant": self.qdrant,
            "qdrant_prefix": self.qdrant_prefix,
            "wait": self.wait,
            "on_wait": self.say,
        }

    def open(self, **options: Any) -> api.BitextDB:
        return api.open(self.home, progress=self.bars.update, **self.stores(), **options)

    def say(self, message: str) -> None:
        if not self.quiet:
            click.echo(message, err=True)


pass_ctx = click.make_pass_decorator(Context)


def friendly(fn: F) -> F:
    """Turn domain errors into one sentence on stderr and their exit code; no traceback."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except BitextDBError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            click.echo("Interrupted; what was committed is kept, rerun to resume.", err=True)
            sys.exit(143 if isinstance(exc, Terminated) else 130)
        except click.ClickException:
            raise
        except BrokenPipeError:  # the reader went (`... | head`): stop quietly, as cat does
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            sys.exit(141)
        except Exception as exc:  # traceback only when asked
            if os.environ.get(ENV_PREFIX + "DEBUG"):
                raise
            message, code = _said(exc)
            click.echo(f"Error: {message}", err=True)
            sys.exit(code)

    return wrapper  # type: ignore[return-value]


def _said(exc: Exception) -> tuple[str, int]:
    """One sentence and an exit status for a failure no bitextdb code put in words."""
    if isinstance(exc, sqlalchemy.exc.OperationalError):  # the database went, met outside
        return f"The database failed: {failure_reason(exc)}", 3  # a session (a lock's query)
    if isinstance(exc, OSError):  # the machine refused (a full disk, a read-only folder)
        where = f": {exc.filename}" if exc.filename else ""
        return f"{exc.strerror or exc}{where}.", 1
    # a bug
    return f"unexpected {type(exc).__name__}: {exc} (set {ENV_PREFIX}DEBUG=1 for the traceback)", 1


def json_option(fn: F) -> F:
    return click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")(fn)


def emit(data: Any, as_json: bool, text: Callable[[Any], str], *, err: bool = False) -> None:
    """Print ``data`` as JSON (``--json``) or as ``text`` renders it (on stderr with ``err``)."""
    if as_json:
        dumped = json.dumps(json_safe(data), indent=2, default=str, ensure_ascii=False)
        click.echo(dumped, err=err)
    else:
        click.echo(text(data), err=err)


def json_safe(data: Any) -> Any:
    """``data`` with infinite and NaN floats as the strings ``"inf"``, ``"-inf"``, ``"nan"``
    (``--min-score -inf`` is a fair request; ``-Infinity`` is not JSON)."""
    if isinstance(data, float) and not math.isfinite(data):
        return str(data)
    if isinstance(data, dict):
        return {key: json_safe(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_safe(value) for value in data]
    return data


# only the options below read the environment: a BITEXTDB_EXPORT_MIN_SCORE left set in a
# shell would silently change what every later export writes
@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--home",
    envvar="BITEXTDB_HOME",
    metavar="DIR",
    help="The database's home folder [env BITEXTDB_HOME; default ~/.local/share/bitextdb].",
)
@click.option(
    "--db",
    envvar="BITEXTDB_DB",
    metavar="URL",
    help="SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db [env BITEXTDB_DB; "
    "default SQLite in the home].",
)
@click.option(
    "--qdrant",
    envvar="BITEXTDB_QDRANT",
    metavar="URL",
    help="Qdrant server URL [env BITEXTDB_QDRANT; default Qdrant Edge in the home]. "
    "API key from BITEXTDB_QDRANT_API_KEY.",
)
@click.option(
    "--qdrant-prefix",
    envvar="BITEXTDB_QDRANT_PREFIX",
    metavar="PREFIX",
    help="Collection name prefix on a shared Qdrant server [env BITEXTDB_QDRANT_PREFIX; "
    "default bitextdb_].",
)
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=0.0,
    envvar="BITEXTDB_WAIT",
    show_default=True,
    help="Seconds to wait for another writer on the same home [env BITEXTDB_WAIT].",
)
@click.option(
    "-q",
    "--quiet",
    is_flag=True,
    help="No progress bars or progress messages (results still print).",
)
@click.version_option(package_name="bitextdb")
@click.pass_context
def cli(ctx: click.Context, **options: Any) -> None:
    """Mine parallel sentences incrementally: ingest corpora, mine pairs, export them."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if options["quiet"]:  # a retry of a Qdrant call is progress, not a result
        logging.getLogger("bitextdb.vectors.server").setLevel(logging.ERROR)
    tune_allocator()
    ctx.obj = Context(options)


# -- init / config -------------------------------------------------------------------------
encoder_process_option = click.option(
    "--encoder-process/--no-encoder-process",
    default=None,
    help="Run the model in a child process, apart from storage work [on for one GPU].",
)
index_process_option = click.option(
    "--index-process/--no-index-process",
    default=None,
    help="Store ingested vectors in Qdrant Edge from a child process [on with --encoder-process].",
)


def model_options(fn: F) -> F:
    for option in reversed(
        [
            click.option(
                "--trust-remote-code",
                is_flag=True,
                default=None,
                help="Allow the model's own code (some hub models need it).",
            ),
            click.option("--revision", help="Model revision (branch, tag or commit)."),
            click.option(
                "--max-seq-length", type=int, help="Truncate sentences to this many tokens."
            ),
            click.option(
                "--device",
                help="cpu, cuda, cuda:1, a list (cuda:0,cuda:1) or all GPUs (all) "
                "[default: cuda when present].",
            ),
            click.option("--batch-size", type=int, help="Sentences per encoder batch [64]."),
            click.option(
                "--backend",
                type=click.Choice(BACKENDS),
                help="Encoder runtime: onnx (ONNX Runtime) or openvino on the CPU [torch].",
            ),
            encoder_process_option,
            index_process_option,
        ]
    ):
        fn = option(fn)
    return fn


@cli.command()
@click.option(
    "--model", help=f"sentence-transformers model name or local folder [{DEFAULT_MODEL}]."
)
@click.option("--dim", type=int, help="Embedding dimension (read from the model when left out).")
@click.option("-k", "--k", "k", type=int, help="Neighbours per sentence for the margin [4].")
@click.option("--threshold", type=float, help="Margin threshold for exports and stats [1.0].")
@click.option(
    "--pairs", help="Language pairs to mine, e.g. en-de,en-fr; 'all' for every pair [all]."
)
@click.option(
    "--exact-limit", type=int, help="Search exactly up to this many sentences a side [1000000]."
)
@click.option("--hnsw-m", type=int, help="HNSW edges per node [32].")
@click.option("--hnsw-ef-construct", type=int, help="HNSW build candidates [256].")
@click.option("--hnsw-ef", type=int, help="HNSW search candidates [512].")
@click.option(
    "--vector-dtype",
    type=click.Choice(["float32", "float16"]),
    help="How vectors are stored: float16 halves their size [float32].",
)
@click.option(
    "--quantization",
    type=click.Choice(["none", "scalar", "binary"]),
    help="Qdrant quantization for HNSW search, with exact rescoring [none].",
)
@click.option("--min-chars", type=int, help="Skip shorter sentences [2].")
@click.option("--max-chars", type=int, help="Skip longer sentences [1000].")
@model_options
@json_option
@pass_ctx
@friendly
def init(ctx: Context, as_json: bool, pairs: str | None, **options: Any) -> None:
    """Create or upgrade the database and fix its settings (safe to repeat)."""
    if pairs is not None:  # "all" as config takes it: every pair
        options["pairs"] = (
            "all" if pairs.strip() == "all" else [p for p in pairs.split(",") if p.strip()]
        )
    stores = ctx.stores()
    del stores["on_wait"]  # api.init has no such argument: it would be taken for a setting
    db = api.init(ctx.home, **stores, **options)
    try:
        stats = db.stats()
    finally:
        db.close()
    emit(
        stats,
        as_json,
        lambda s: (
            f"Database ready at {s['stores']['home']}\n"
            f"  model {s['model']['name']} (dim {s['model']['dim']}), k={s['settings']['k']}\n"
            f"  sql     {s['stores']['db']}\n  vectors {s['stores']['vectors']}"
        ),
    )


@cli.command("config")
@click.option("--threshold", type=float, help="Margin threshold for exports and stats.")
@click.option("--pairs", help="Language pairs to mine, e.g. en-de,en-fr; 'all' for every pair.")
@click.option("--exact-limit", type=int, help="Search exactly up to this many sentences a side.")
@click.option("--hnsw-ef", type=int, help="HNSW search candidates.")
@click.option("--backend", type=click.Choice(BACKENDS), help="Encoder runtime.")
@click.option("--device", help="Encoder device(s), as for init.")
@click.option("--batch-size", type=int, help="Sentences per encoder batch.")
@encoder_process_option
@index_process_option
@click.option("--min-chars", type=int, help="Skip shorter sentences.")
@click.option("--max-chars", type=int, help="Skip longer sentences.")
@click.option(
    "--model",
    "moved_model",
    metavar="PATH",
    help="The database's model, moved to this folder: taken only if it encodes stored "
    "sentences to their stored vectors.",
)
@json_option
@pass_ctx
@friendly
def config_cmd(
    ctx: Context, as_json: bool, pairs: str | None, moved_model: str | None, **changes: Any
) -> None:
    """Show or change the settings that may change after init."""
    changes = {key: value for key, value in changes.items() if value is not None}
    if pairs is not None:
        changes["pairs"] = None if pairs == "all" else [p for p in pairs.split(",") if p.strip()]
    with ctx.open() as db:
        moved = None if moved_model is None else db.relocate_model(moved_model)
        settings = db.configure(**changes) if changes else db.settings
    shown = settings.to_dict() | ({"model_check": moved} if moved else {})

    def text(d: dict[str, Any]) -> str:
        lines = [
            f"{key}: {_setting_text(key, value)}"
            for key, value in d.items()
            if key not in ("extra", "model_check")
        ]
        if moved and moved["checked"]:
            lines.append(
                f"model moved to {moved['model']}: {moved['checked']} stored sentences "
                f"encoded again, lowest cosine {moved['lowest_cosine']:.4f}"
            )
        elif moved and moved["model"] != moved["previous"]:
            lines.append(
                f"model now {moved['model']}: no stored vector to compare it with, so it "
                "was taken on its dimension alone"
            )
        return "\n".join(lines)

    emit(shown, as_json, text)


def _setting_text(key: str, value: Any) -> str:
    """A setting as the text output shows it: lists joined, None as what it stands for."""
    if value is None:
        return "every pair" if key == "pairs" else "(default)"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(item) for item in value)
    return str(value)


# -- ingest / mine ---------------------------------------------------------------------------
def _ingest_text(result: dict[str, Any], *, vectors_given: bool = False) -> str:
    """The ingest summary; ``vectors_given``: the vectors came from ``--embeddings``."""
    stored = "stored with the given vectors" if vectors_given else "encoded"
    lines = []
    if result.get("dry_run"):
        lines.append("dry run: what the ingest would do; nothing was changed")
    for r in result["ingested"]:
        skipped = ", ".join(f"{n} {why}" for why, n in r["skipped"].items()) or "none"
        split = "" if r.get("sentences") is None else f" records ({r['sentences']} sentences)"
        # a file ingested again after it changed
        synced = (
            f", changed {r['changed']}, dropped {r['dropped']}, "
            f"sentences removed {r['sentences_removed']}"
            if r["changed"] or r["dropped"]
            else ""
        )
        loading = r.get("stage_seconds", {}).get("load_model", 0.0)
        lines.append(
            f"{r['source']} [{r['lang']}]: read {r['read']}{split}, new {r['new']}, "
            f"duplicates {r['duplicates']}, skipped {skipped}{synced}, {stored} {r['encoded']}"
            + (f" (and {r['resumed']} an earlier run left)" if r.get("resumed") else "")
            + f" in {r['seconds']:.1f} s"
            + (f" (loading the model {loading:.1f} s)" if loading >= 0.5 else "")
        )
    lines += [
        f"removed from {p['pair']}: {p['changed_lists']} lists searched again without the "
        "sentences changed files left"
        for p in result.get("removed", [])
    ]
    lines += [_mine_line(m) for m in result.get("mined", [])]
    return "\n".join(lines)


def _search_text(pair: dict[str, Any]) -> str:
    if pair["search"] != "mixed":
        return f"{pair['search']} search"
    return ", ".join(f"{mode} search of {lang}" for lang, mode in pair["searched"].items())


def _mine_line(m: dict[str, Any]) -> str:
    new = ", ".join(f"{n} {lang}" for lang, n in m["new"].items())
    return (
        f"mined {m['pair']}: new {new}; {m['changed_lists']} lists updated, "
        f"{m['candidates_recomputed']} candidates recomputed; {m['accepted']} pairs "
        f"accepted of {m['pairs']} candidates in {m['seconds']:.1f} s"
    )


@cli.command()
@click.argument("paths", nargs=-1, required=True)
@click.option("--lang", required=True, help="Language code of the sentences (en, de, zh-Hant...).")
@click.option("--source", help="Name to remember the source by [the file's absolute path].")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["auto", "txt", "tsv", "jsonl"]),
    default="auto",
    show_default=True,
    help="Input format (auto: from the extension).",
)
@click.option("--column", help="TSV text column: a header name or a 1-based number [1].")
@click.option("--id-column", help="TSV id column: a header name or a 1-based number.")
@click.option("--field", help="JSONL text field (a.b for nested) [text].")
@click.option("--id-field", help="JSONL id field.")
@click.option(
    "--embeddings",
    type=click.Path(),
    help="Vectors for the lines: .npy, or raw float32 with --dim.",
)
@click.option("--dim", type=int, help="Dimension of a raw float32 --embeddings file.")
@click.option(
    "--split-sentences",
    is_flag=True,
    help="Split every record (a paragraph or document) into sentences, by the rules of --lang.",
)
@click.option(
    "--dry-run",
    is_flag=True,
    help="Read the files and count what would change (new, changed, dropped, removed); "
    "change nothing.",
)
@click.option(
    "--append",
    is_flag=True,
    help="Keep what earlier reads of the file gave: this read is a source of its own "
    "(NAME@time), as standard input is.",
)
@click.option(
    "--lid",
    is_flag=True,
    help="Skip sentences that language identification (py3langid) puts in another language.",
)
@click.option(
    "--lid-threshold",
    type=click.FloatRange(0, 1, min_open=True),
    help=f"How sure it must be of the other language (implies --lid) [{DEFAULT_LID_THRESHOLD}].",
)
@click.option(
    "--lid-accept",
    metavar="CODES",
    help="Languages that count as --lang for --lid, comma-separated (e.g. bs,sr for hr).",
)
@click.option("--model", help="Refuse to run unless the database was built with this model.")
@click.option(
    "--no-mine", is_flag=True, help="Store and index only; mine later with `bitextdb mine`."
)
@click.option("--device", help="Encoder device(s) for this run, as for init.")
@click.option("--batch-size", type=int, help="Encoder batch size for this run.")
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    help="Encoder runtime for this run (onnx: ONNX Runtime, openvino: OpenVINO, on the CPU).",
)
@encoder_process_option
@index_process_option
@json_option
@pass_ctx
@friendly
def ingest(
    ctx: Context,
    paths: tuple[str, ...],
    lang: str,
    model: str | None,
    no_mine: bool,
    device: str | None,
    batch_size: int | None,
    backend: str | None,
    encoder_process: bool | None,
    index_process: bool | None,
    as_json: bool,
    column: str | None,
    id_column: str | None,
    lid: bool,
    lid_threshold: float | None,
    lid_accept: str | None,
    **options: Any,
) -> None:
    """Read corpus files (txt, tsv, jsonl, optionally .gz/.bz2/.xz; - for stdin) and mine."""
    text = functools.partial(_ingest_text, vectors_given=bool(options.get("embeddings")))
    if lid or lid_threshold is not None or lid_accept:
        options["lid"] = DEFAULT_LID_THRESHOLD if lid_threshold is None else lid_threshold
        options["lid_accept"] = [c.strip() for c in (lid_accept or "").split(",") if c.strip()]
    with ctx.open(
        model=model,
        device=device,
        batch_size=batch_size,
        backend=backend,
        encoder_process=encoder_process,
        index_process=index_process,
    ) as db:
        try:
            result = db.ingest(
                list(paths),
                lang,
                column=_column(column),
                id_column=_column(id_column),
                mine=not no_mine,
                **options,
            )
        except InputError as exc:
            if as_json and exc.partial is not None:  # what the files before the bad one did
                ctx.bars.close()
                emit(exc.partial, as_json, text)
            raise
    ctx.bars.close()
    emit(result, as_json, text)


def _column(value: str | None) -> str | int | None:
    # ASCII digits only: str.isdigit() also takes '²', which int() refuses
    return int(value) if value is not None and value.isascii() and value.isdigit() else value


@cli.command()
@click.option(
    "--pair",
    "pairs",
    multiple=True,
    help="Only this pair, e.g. en-de (repeatable, or several with commas as for config).",
)
@json_option
@pass_ctx
@friendly
def mine(ctx: Context, pairs: tuple[str, ...], as_json: bool) -> None:
    """Bring neighbours, candidates and pairs up to date for everything not yet mined."""
    chosen = [pair.strip() for value in pairs for pair in value.split(",") if pair.strip()]
    if pairs and not chosen:  # not "every pair", which no --pair means
        raise InputError(f"--pair {', '.join(map(repr, pairs))} names no language pair.")
    with ctx.open() as db:
        reports = [r.as_dict() for r in db.mine(chosen or None)]
    ctx.bars.close()
    emit(reports, as_json, lambda rs: "\n".join(_mine_line(m) for m in rs) or "nothing to mine")


@cli.command()
@json_option
@pass_ctx
@friendly
def stats(ctx: Context, as_json: bool) -> None:
    """Languages, sentence and pair counts, model, settings and stores."""
    with ctx.open() as db:
        data = db.stats()
    emit(data, as_json, _stats_text)


def _stats_text(s: dict[str, Any]) -> str:
    out = [
        f"home     {s['stores']['home']}",
        f"sql      {s['stores']['db']}",
        f"vectors  {s['stores']['vectors']} ({s['stores']['vector_backend']})",
        f"model    {s['model']['name']} (dim {s['model']['dim']}), k={s['settings']['k']}",
        f"pairs    {_setting_text('pairs', s['pairs_mined'])}",
        "languages:",
    ]
    for lang, c in sorted(s["languages"].items()):
        unencoded = c["sentences"] - c["indexed"]  # an ingest stopped before their vectors
        out.append(
            f"  {lang:8} {c['sentences']:>10} sentences  {c['sources']:>5} sources"
            + (f"  ({unencoded} without a vector yet)" if unencoded else "")
        )
    if s["pairs"]:
        out.append("pairs:")
    for name, p in sorted(s["pairs"].items()):
        pending = sum(p["pending"].values())
        waiting = p["candidates_waiting"]
        out.append(
            f"  {name:10} {p['pairs']:>10} pairs >= {p['threshold']:g}  "
            f"({p['accepted']} accepted, {p['candidates']} candidates, "
            f"{_search_text(p)}{', ' + str(pending) + ' to mine' if pending else ''}"
            f"{', ' + str(waiting) + ' candidates to recompute' if waiting else ''})"
        )
    waiting = any(c["sentences"] > c["indexed"] for c in s["languages"].values()) or any(
        sum(p["pending"].values()) or p["candidates_waiting"] for p in s["pairs"].values()
    )
    if waiting:
        out.append("(bitextdb mine does the work waiting)")
    exports = s["exports"]
    if exports["cursors"] or exports["withdrawn_records"]:
        out.append(
            f"exports  {exports['cursors']} cursors, {exports['withdrawn_records']} withdrawal "
            "records (bitextdb cursors)"
        )
    return "\n".join(out)


# -- db -------------------------------------------------------------------------------------
@cli.group("db")
def db_group() -> None:
    """Schema migrations (Alembic)."""


@db_group.command("status")
@json_option
@pass_ctx
@friendly
def db_status(ctx: Context, as_json: bool) -> None:
    """Show the schema revision without changing anything."""
    from ..config import resolve_locations
    from ..db import Database

    loc = resolve_locations(ctx.home, ctx.db, ctx.qdrant, ctx.qdrant_prefix)
    database_file = sqlite_file(loc.db)
    current = None
    # a SQLite file that is not there is not made by asking (connecting makes it)
    if database_file is None or database_file.exists():
        database = Database(loc.db)
        current = database.current_revision()
        database.dispose()
    data = {"db": loc.describe()["db"], "current": current, "head": Database.head_revision()}
    data["up_to_date"] = data["current"] == data["head"]
    emit(data, as_json, lambda d: f"{d['db']}: revision {d['current']} (newest {d['head']})")


@db_group.command("upgrade")
@json_option
@pass_ctx
@friendly
def db_upgrade(ctx: Context, as_json: bool) -> None:
    """Upgrade the schema to the newest revision."""
    from ..config import resolve_locations
    from ..db import Database

    loc = resolve_locations(ctx.home, ctx.db, ctx.qdrant, ctx.qdrant_prefix)
    missing = NotInitializedError(
        f"No bitextdb database at {loc.describe()['db']}; run `bitextdb init`."
    )
    database_file = sqlite_file(loc.db)
    if database_file is not None and not database_file.exists():
        raise missing  # before the lock, whose file would be the first in the home
    # as a writer: a schema must not change under a running ingest or server
    with api._acquire(loc, ctx.wait, ctx.say):
        database = Database(loc.db)
        before = database.current_revision()
        if before is None:  # a schema without settings helps no one
            database.dispose()
            raise missing
        database.upgrade()
        data = {"db": loc.describe()["db"], "before": before, "current": None}
        data["current"] = database.current_revision()
        database.dispose()
    emit(data, as_json, lambda d: f"{d['db']}: at revision {d['current']}")


# Command groups that live in their own modules register themselves on `cli` here.
from . import commands  # noqa: E402, F401


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, ``timeout``, systemd), met as Ctrl-C is: what is being written is
    dropped (an export's temporary files), what was committed is kept; exit 143."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def main() -> None:
    """Console entry point."""
    use_whole_writes()
    signal.signal(signal.SIGTERM, _terminate)  # `serve` puts uvicorn's own while it runs
    finish_once_committed()
    cli(prog_name="bitextdb")


if __name__ == "__main__":
    main()
