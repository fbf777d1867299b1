"""``bitextdb translate``: ranked translations of sentences from the command line or a file."""

from __future__ import annotations

from typing import Any

import click

from ..config import MAX_SENTENCE_CHARS
from ..errors import InputError
from ..readers import ReadStats, read_lines
from . import Context, cli, emit, friendly, json_option, pass_ctx


def _text(results: list[dict[str, Any]]) -> str:
    out = []
    for t in results:
        out.append(f"{t['query']}  [{t['src_lang']} -> {t['tgt_lang']}, r={t['r']:.3f}]")
        for rank, h in enumerate(t["hits"], 1):
            margin = "   n/a" if h["margin"] is None else f"{h['margin']:6.3f}"
            mark = " *pair" if h["accepted"] else (" candidate" if h["mined"] else "")
            out.append(f"  {rank:>2}. margin {margin}  cos {h['cosine']:.3f}  {h['text']}{mark}")
        if t["stored_pair"]:
            p = t["stored_pair"]
            out.append(
                f"  stored pair: {p.get('src', '')} ||| {p.get('tgt', '')} "
                f"(margin {p['margin']:.3f})"
            )
    return "\n".join(out)


QUERY_LIMITS = {"min_chars": 1, "max_chars": MAX_SENTENCE_CHARS}


def _skips(stats: ReadStats) -> str:
    skipped = stats.skipped()
    if not skipped:
        return "no line has text"
    return ", ".join(f"{count} {reason.replace('_', ' ')}" for reason, count in skipped.items())


@cli.command()
@click.argument("text", required=False)
@click.option("--from", "src", required=True, help="Language of the query sentence(s).")
@click.option("--to", "tgt", required=True, help="Language to find translations in.")
@click.option("--top", type=int, default=5, show_default=True, help="Candidates per sentence.")
@click.option(
    "--file",
    "path",
    type=click.Path(),
    help="Translate every line of a file (- for stdin) and print TSV: query, rank, margin, "
    "cosine, candidate, mined; lines that are no sentence are skipped, and counted on stderr "
    "(--json gives each query its line number).",
)
@json_option
@pass_ctx
@friendly
def translate(
    ctx: Context, text: str | None, src: str, tgt: str, top: int, path: str | None, as_json: bool
) -> None:
    """Find the translations of a sentence among the ingested ones, ranked by margin."""
    if (text is None) == (path is None):
        raise InputError("Give either one TEXT or --file PATH.")
    stats = ReadStats()
    # a query line of any length, as a TEXT argument may be (the model cuts what is long)
    lines = [] if path is None else list(read_lines(path, "txt", **QUERY_LIMITS, stats=stats))
    queries = [text] if text is not None else [line.text for line in lines]
    if not queries:
        raise InputError(f"{path} holds no sentences ({_skips(stats)}).")
    with ctx.open() as db:
        results = [t.as_dict() for t in db.translate_many(queries, src, tgt, top=top)]
    for result, line in zip(results, lines):
        result["line"] = line.position + 1  # which line of the file each query is
    if stats.skipped():
        ctx.say(f"skipped {sum(stats.skipped().values())} lines of {path}: {_skips(stats)}")
    if path is not None and not as_json:
        for t in results:
            for rank, h in enumerate(t["hits"], 1):
                margin = "" if h["margin"] is None else f"{h['margin']:.6f}"
                click.echo(
                    f"{t['query']}\t{rank}\t{margin}\t{h['cosine']:.6f}\t{h['text']}\t"
                    f"{'accepted' if h['accepted'] else 'mined' if h['mined'] else ''}"
                )
        return
    emit(
        results if path is not None else results[0],
        as_json,
        lambda r: _text(r if isinstance(r, list) else [r]),
    )
