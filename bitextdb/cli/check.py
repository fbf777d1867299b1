"""``bitextdb check``: consistency of SQL and the vector store."""

from __future__ import annotations

import sys
from typing import Any

import click

from ..audit import DEFAULT_SAMPLE
from ..errors import InputError
from . import Context, cli, emit, friendly, json_option, pass_ctx


def _text(r: dict[str, Any]) -> str:
    lines = []
    for lang, c in sorted(r["languages"].items()):
        if lang in r["damaged"]:
            lines.append(f"{lang}: {c['sentences']} sentences; its vector store is damaged")
            continue
        lines.append(
            f"{lang}: {c['sentences']} sentences, {c['vectors']} vectors, "
            f"{c['missing_vectors']} missing, {c['orphan_vectors']} orphans, "
            f"{c['without_source']} held by no source"
        )
    for lang, why in sorted(r["damaged"].items()):
        lines.append(f"{lang}: the vector store is damaged: {why}")
    lines.append(f"wrong dimension: {', '.join(r['wrong_dimension']) or 'none'}")
    lines.append(f"sentences without a vector yet: {r['unindexed']}")
    lines.append(f"neighbour entries pointing at missing sentences: {r['dangling_neighbours']}")
    lines.append(f"pairs pointing at missing sentences: {r['dangling_pairs']}")
    lines.append(f"rows of missing sentences or lists: {r['stray_rows']}")
    lines.append(f"candidates waiting to be recomputed: {r['dirty_candidates']}")
    lines.append(f"sentences a changed file displaced, waiting: {r['displaced_waiting']}")
    for pair, n in sorted(r["unmined"].items()):
        lines.append(f"{pair}: {n} sentences not yet mined")
    for a in r["deep"] or ():
        if a["pending"]:
            lines.append(f"{a['pair']}: not derived again (mining has work waiting there)")
            continue
        lines.append(
            f"{a['pair']}: {a['lists']} lists and {a['pairs']} pair rows derived again: "
            f"{a['lists_wrong']} lists, {a['candidates_wrong']} candidates, "
            f"{a['pairs_missing']} pairs missing, {a['pairs_extra']} extra, "
            f"{a['pairs_wrong']} with another score, {a['selection_wrong']} selected otherwise; "
            f"{a['sampled_differ']} of {a['sampled']} lists searched again differ"
            + (" (HNSW: its recall, not a fault)" if a["approximate"] else "")
        )
    if r["repaired"]:
        lines.append("repaired: " + ", ".join(f"{k} {v}" for k, v in r["repaired"].items()))
    if r["repaired"].get("accepted_pairs_dropped_unrecorded"):
        lines.append(
            "accepted pairs of sentences that were gone were dropped with no withdrawal "
            "record (their texts were gone too): a copy kept by `export --cursor` still holds "
            "them, so export such a copy whole again"
        )
    if r["ok"]:
        lines.append("consistent")
    elif r["repaired"]:
        lines.append("NOT consistent after the repair: what is left is counted above")
    elif r["only_work_waiting"]:
        lines.append("NOT consistent: mining has work waiting (run `bitextdb mine`)")
    elif r["deep"] is not None:  # what only the deep check sees, only its repair mends
        lines.append("NOT consistent (run `bitextdb check --deep --repair`)")
    else:
        lines.append("NOT consistent (run `bitextdb check --repair`)")
    return "\n".join(lines)


@cli.command()
@click.option(
    "--repair",
    is_flag=True,
    help="Re-encode or re-upsert what is missing, remove orphans, re-mine what is stale.",
)
@click.option(
    "--deep",
    is_flag=True,
    help="Also derive every list's mean, every candidate, the pair rows and the selection "
    "again from the stored lists, and compare (reads every list once).",
)
@click.option(
    "--sample",
    type=click.IntRange(min=0),
    default=DEFAULT_SAMPLE,
    show_default=True,
    help="With --deep: lists of each side searched again exactly.",
)
@json_option
@pass_ctx
@friendly
def check(ctx: Context, repair: bool, deep: bool, sample: int, as_json: bool) -> None:
    """Compare SQL and the vector store; exit 0 only when they agree."""
    source = click.get_current_context().get_parameter_source("sample")
    if source is click.core.ParameterSource.COMMANDLINE and not deep:
        raise InputError("--sample says how many lists --deep searches again; add --deep.")
    with ctx.open() as db:
        report = db.check(repair=repair, deep=deep, sample=sample).as_dict()
    ctx.bars.close()
    emit(report, as_json, _text)
    sys.exit(0 if report["ok"] else 1)
