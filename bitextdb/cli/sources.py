"""``bitextdb sources`` and ``bitextdb remove``: what was ingested, and taking it out again."""

from __future__ import annotations

from typing import Any

import click

from ..errors import InputError
from . import Context, cli, emit, friendly, json_option, pass_ctx


def _sources_text(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return "no sources"
    return "\n".join(
        f"{r['lang']:8} {r['sentences']:>10} sentences {r['occurrences']:>10} lines  {r['name']}"
        + ("  (split into sentences)" if r.get("split_sentences") else "")
        + ("  (file missing)" if r.get("missing") else "")
        for r in rows
    )


@cli.command()
@click.option("--lang", metavar="CODE", help="Only this language's sources.")
@json_option
@pass_ctx
@friendly
def sources(ctx: Context, lang: str | None, as_json: bool) -> None:
    """List the sources ingested: language, distinct sentences, lines stored, name."""
    with ctx.open() as db:
        rows = db.sources(lang)
    emit(rows, as_json, _sources_text)


def _counted(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _remove_text(r: dict[str, Any]) -> str:
    what = "would remove" if r["dry_run"] else "removed"
    kept = r["sentences_kept"]
    out = [
        f"{r['lang']}: {what} {_counted(len(r['sources']), 'source')}, "
        f"{_counted(r['occurrences'], 'line')}, {_counted(r['sentences_removed'], 'sentence')}"
        + (f" ({kept} more stay: other sources hold them too)" if kept else "")
    ]
    out += [
        f"{p['pair']}: {p['changed_lists']} lists searched again, "
        f"{p['candidates_recomputed']} candidates recomputed, {p['accepted']} accepted pairs"
        for p in r["pairs"]
    ]
    return "\n".join(out + [f"note: {note}" for note in r.get("notes", [])])


@cli.command()
@click.option("--lang", metavar="CODE", help="The sources' language (with --missing: only its).")
@click.option(
    "--source",
    "names",
    multiple=True,
    metavar="NAME",
    help="A source's name (repeatable): its --source at ingest, or the file's path.",
)
@click.option("--missing", is_flag=True, help="Every source whose file was deleted.")
@click.option("--dry-run", is_flag=True, help="Count what would go; change nothing.")
@json_option
@pass_ctx
@friendly
def remove(
    ctx: Context,
    lang: str | None,
    names: tuple[str, ...],
    missing: bool,
    dry_run: bool,
    as_json: bool,
) -> None:
    """Remove sources and what only they brought (sentences, vectors, pairs); the lists
    that held those sentences are searched again, so the pairs are those of a batch run
    over what remains."""
    if missing and names:
        raise InputError("Give --source NAMES or --missing, not both.")
    if not missing and not names:
        raise InputError("Name the sources to remove with --source, or give --missing.")
    if names and lang is None:
        raise InputError("--source needs the sources' --lang.")
    with ctx.open() as db:
        if missing:
            reports = db.remove_missing(lang, dry_run=dry_run)
        else:
            reports = [db.remove(str(lang), list(names), dry_run=dry_run)]
    ctx.bars.close()
    if missing:
        emit(reports, as_json, lambda rs: "\n".join(map(_remove_text, rs)) or _NONE_MISSING)
    else:
        emit(reports[0], as_json, _remove_text)


_NONE_MISSING = "no source's file is missing"
