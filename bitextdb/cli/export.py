"""``bitextdb export``, ``bitextdb cursors`` and ``bitextdb evaluate``."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

import click

from bitextdb.cli import Context, cli, emit, friendly, json_option, pass_ctx
from bitextdb.cursors import drop_cursor, list_cursors, prune_withdrawn
from bitextdb.errors import InputError
from bitextdb.evaluate import evaluate as evaluate_pairs
from bitextdb.export import FORMATS, RETRIEVALS, export_pairs, parse_since
from bitextdb.filters import PairFilter
from bitextdb.margin import MARGINS

F = TypeVar("F", bound=Callable[..., Any])
#: ``cursors prune --keep-days`` beyond this is kept forever in all but name
MAX_KEEP_DAYS = 36_500


def _parse_since(
    _ctx: click.Context, _param: click.Parameter, value: str | None
) -> datetime | None:
    try:
        return parse_since(value)
    except InputError as exc:
        raise click.BadParameter(str(exc)) from None


def filter_options(fn: F) -> F:
    """The pair filters' options (:class:`bitextdb.filters.PairFilter`)."""
    fn = click.option(
        "--skip-identical",
        is_flag=True,
        help="Leave out pairs whose two sides are the same text (but for case).",
    )(fn)
    return click.option(
        "--max-length-ratio",
        type=float,
        metavar="R",
        help="Leave out pairs whose longer side has more than R times the shorter's characters.",
    )(fn)


def _export_text(summary: dict[str, Any]) -> str:
    files = ", ".join(summary["files"])
    how = "" if summary["margin"] == "ratio" else f" {summary['margin']} margin,"
    how += "" if summary["retrieval"] == "max" else f" {summary['retrieval']} retrieval,"
    score = "" if summary["min_score"] is None else f" score >= {summary['min_score']:g},"
    text = (
        f"exported {summary['rows']} {summary['pair']} pairs ({summary['format']},{how}{score}"
        f" {summary['seconds']:.1f} s) to {files}"
    )
    if summary["filtered"]:
        text += f"; {summary['filtered']} filtered out"
    if summary["withdrawn_files"] is not None:
        text += (
            f"; {summary['withdrawn_rows']} withdrawn pairs to "
            f"{', '.join(summary['withdrawn_files'])}"
        )
    if summary["candidates_waiting"]:
        text += (
            f"\nnote: {summary['candidates_waiting']} candidates wait to be recomputed (a run "
            "was stopped between its steps): their margins are those of before until "
            "`bitextdb mine`"
        )
    if summary["sentences_pending"]:
        text += (
            f"\nnote: {summary['sentences_pending']} sentences of the pair are not mined yet "
            "(ingested with --no-mine, or while the pair was left out): `bitextdb mine`"
        )
    return text


@cli.command("export")
@click.option("--pair", required=True, help="Language pair; the first language is the src side.")
@click.option(
    "-o",
    "--output",
    default="-",
    show_default=True,
    help="File to write (- for stdout); .gz/.bz2/.xz compress. For moses: a PREFIX.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    help="tsv (score, src, tgt), jsonl, moses (PREFIX.LANG, a file a language), tmx (TMX 1.4), "
    "or parquet (to a file; extra parquet). [the output's extension: .jsonl or .ndjson, "
    ".tmx, .parquet; else tsv]",
)
@click.option(
    "--min-score",
    type=float,
    help="Keep pairs scoring at least this [the database threshold for the ratio margin].",
)
@click.option(
    "--since",
    callback=_parse_since,
    metavar="ISO-TIMESTAMP",
    help="Only pairs changed at or after this time (UTC unless a zone is given).",
)
@click.option(
    "--cursor",
    metavar="NAME",
    help="Only pairs changed since the last export under this name (not with --since); "
    "remembered on success.",
)
@click.option(
    "--withdrawn",
    metavar="PATH",
    help="With --cursor or --since: also write the pairs to drop since then (same format).",
)
@filter_options
@click.option(
    "--with-sources", is_flag=True, help="jsonl, parquet: add the source names of each side."
)
@click.option(
    "--with-ids",
    is_flag=True,
    help="jsonl, parquet: add the external ids of each side (ingest --id-column / --id-field).",
)
@click.option(
    "--margin",
    type=click.Choice(list(MARGINS)),
    default="ratio",
    show_default=True,
    help="Margin function (others than ratio are re-derived from the stored neighbours).",
)
@click.option(
    "--retrieval",
    type=click.Choice(RETRIEVALS),
    default="max",
    show_default=True,
    help="Selection as in LASER: max (one-to-one), intersect, fwd, bwd.",
)
@json_option
@pass_ctx
@friendly
def export_cmd(
    ctx: Context,
    pair: str,
    output: str,
    fmt: str | None,
    min_score: float | None,
    since: datetime | None,
    cursor: str | None,
    withdrawn: str | None,
    max_length_ratio: float | None,
    skip_identical: bool,
    with_sources: bool,
    with_ids: bool,
    margin: str,
    retrieval: str,
    as_json: bool,
) -> None:
    """Write the mined pairs of a language pair (TSV, JSONL, Moses, TMX or Parquet), best
    first.

    The summary goes to stdout when the pairs go to a file, to stderr when they go to
    stdout (with --json as JSON there too).
    """
    try:
        with ctx.open() as db:
            summary = export_pairs(
                db,
                pair,
                output=output,
                fmt=fmt,
                min_score=min_score,
                since=since,
                cursor=cursor,
                with_sources=with_sources,
                with_ids=with_ids,
                margin=margin,
                retrieval=retrieval,
                withdrawn=withdrawn,
                max_length_ratio=max_length_ratio,
                skip_identical=skip_identical,
            )
    finally:
        ctx.bars.close()
    if "-" in (output, withdrawn):  # stdout holds the pairs: the summary goes to stderr
        if as_json:
            emit(summary, as_json, _export_text, err=True)
        else:
            ctx.say(_export_text(summary))
    else:
        emit(summary, as_json, _export_text)


def _evaluate_text(result: dict[str, Any]) -> str:
    out = [
        f"{result['pair']}: {result['gold_pairs']} gold pairs matched "
        f"({result['gold_unmatched']} gold lines unmatched), {result['accepted']} accepted of "
        f"{result['candidates']} candidates"
        + (f" ({result['filtered']} more filtered out)" if result["filtered"] else ""),
        f"{'threshold':>10} {'pairs':>8} {'correct':>8} {'P':>7} {'R':>7} {'F1':>7}",
    ]
    for row in result["table"]:
        out.append(
            f"{row['threshold']:10.4f} {row['pairs']:8d} {row['correct']:8d} "
            f"{row['precision']:7.4f} {row['recall']:7.4f} {row['f1']:7.4f}"
        )
    best = result["best"]
    if best["threshold"] is None:
        out.append("best: no correct pair found")
    else:
        out.append(
            f"best: F1 {best['f1']:.4f} (P {best['precision']:.4f}, R {best['recall']:.4f}) "
            f"at margin >= {best['threshold']:.4f}"
        )
    if result.get("plot"):
        out.append(f"plot written to {result['plot']}")
    return "\n".join(out)


@cli.command("evaluate")
@click.option("--pair", required=True, help="Language pair in the gold file's column order.")
@click.option(
    "--gold",
    required=True,
    type=click.Path(),
    help="TSV of gold pairs (src, tgt): external ids or sentence texts.",
)
@click.option(
    "--plot", type=click.Path(dir_okay=False), help="Write a margin histogram (.png, .pdf or .svg)."
)
@click.option("--steps", type=int, default=20, show_default=True, help="Thresholds in the table.")
@filter_options
@json_option
@pass_ctx
@friendly
def evaluate_cmd(
    ctx: Context,
    pair: str,
    gold: str,
    plot: str | None,
    steps: int,
    max_length_ratio: float | None,
    skip_identical: bool,
    as_json: bool,
) -> None:
    """Precision, recall and F1 of the mined pairs against a gold standard (BUCC style)."""
    with ctx.open() as db:
        result = evaluate_pairs(
            db,
            pair,
            gold,
            plot=plot,
            steps=steps,
            max_length_ratio=max_length_ratio,
            skip_identical=skip_identical,
        )
    emit(result, as_json, _evaluate_text)


def _cursor_line(r: dict[str, Any]) -> str:
    line = f"{r['name']:20} {r['pair']:12} last export {r['last_exported_at']}"
    if r["min_score"] is not None:
        line += f"  min score {r['min_score']:g}"
    keep = PairFilter.from_dict(r["filters"])
    return line + (f"  filters {keep.describe()}" if keep.active else "")


def _cursors_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no export cursors"
    return "\n".join(_cursor_line(r) for r in rows)


def _prune_text(r: dict[str, Any]) -> str:
    what = "would delete" if r["dry_run"] else "deleted"
    out = [f"{what} {r['deleted']} withdrawal records, kept {r['kept']}"]
    out += [
        f"  {p['pair']:12} {p['deleted']:>8} older than {p['before']}, {p['kept']:>8} kept"
        for p in r["pairs"]
    ]
    return "\n".join(out)


@cli.group("cursors")
def cursors_group() -> None:
    """Export cursors (export --cursor) and the withdrawal records they read."""


@cursors_group.command("list")
@json_option
@pass_ctx
@friendly
def cursors_list(ctx: Context, as_json: bool) -> None:
    """Every export cursor: name, pair, time of its last export, min score, filters."""
    with ctx.open() as db:
        rows = list_cursors(db)
    emit(rows, as_json, _cursors_text)


@cursors_group.command("drop")
@click.argument("name")
@json_option
@pass_ctx
@friendly
def cursors_drop(ctx: Context, name: str, as_json: bool) -> None:
    """Forget the cursor NAME: its next export is whole again."""
    with ctx.open() as db:
        drop_cursor(db, name)
    emit({"dropped": name}, as_json, lambda r: f"dropped the export cursor {r['dropped']!r}")


@cursors_group.command("prune")
@click.option(
    "--keep-days",
    type=float,
    default=7.0,
    show_default=True,
    help="Keep records younger than this, for --since readers, whatever the cursors.",
)
@click.option("--dry-run", is_flag=True, help="Count what would go; change nothing.")
@json_option
@pass_ctx
@friendly
def cursors_prune(ctx: Context, keep_days: float, dry_run: bool, as_json: bool) -> None:
    """Delete the withdrawal records every cursor of their pair has passed."""
    if not 0 <= keep_days <= MAX_KEEP_DAYS:  # also refuses NaN
        raise click.BadParameter(
            f"give a number of days from 0 to {MAX_KEEP_DAYS}.", param_hint="--keep-days"
        )
    with ctx.open() as db:
        report = prune_withdrawn(db, keep=timedelta(days=keep_days), dry_run=dry_run)
    emit(report, as_json, _prune_text)
