"""Keeping a copy in sync: a cursor export with its withdrawals after a round of changes,
against exporting everything again.

    .venv/bin/python benchmarks/sync.py          # 50k x 50k, dim 256; +1 % a side, -1 % of xa

Side A is a bulk source and a small one (``--share``, 1 %), side B one source; vectors are
planted pairs, injected through ``BitextDB.ingest_embeddings``. After the first mine a
cursor export writes every pair (the copy starts from it). Then one round of changes: 1 %
more sentences a side (whose planted partners are partly among the old ones) are ingested
and mined, and the small source is removed. The cursor export with ``withdrawn`` is then
timed against a full export of the same moment, and the copy (first export, withdrawals
dropped, new rows added) must equal that full export. The time the round spent recording
withdrawals (the miner's selection and the removal) is measured by wrapping those calls.
"""

from __future__ import annotations

import functools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import Stopwatch, corpus_arguments, machine, peak_rss_mb, planted, seconds_to_mine

import bitextdb
from bitextdb.db import graph
from bitextdb.export import export_pairs

say = functools.partial(print, flush=True)
Copy = dict[tuple[str, str], float]


def load(db: bitextdb.BitextDB, lang: str, source: str, vecs, lo: int, hi: int) -> None:  # type: ignore[no-untyped-def]
    for start in range(lo, hi, 20_000):
        stop = min(hi, start + 20_000)
        texts = [f"{lang} row {i}" for i in range(start, stop)]
        db.ingest_embeddings(lang, texts, vecs[start:stop], source=source, mine=False)


def read(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def export(db: bitextdb.BitextDB, out: Path, **options: Any) -> tuple[dict[str, Any], float]:
    started = time.perf_counter()
    summary = export_pairs(db, "xa-xb", output=str(out), fmt="jsonl", **options)
    return summary, time.perf_counter() - started


def main() -> None:
    parser = corpus_arguments(
        __doc__.splitlines()[0],
        size=50_000,
        dim=256,
        share="added a side; removed of xa",
        size_help="sentences a side at first",
    )
    parser.add_argument("--min-score", type=float, default=1.0)
    args = parser.parse_args()
    n, add = args.size, max(1, int(args.size * args.share))
    say(f"machine: {machine()}")
    say(
        f"{n:,} x {n:,}, dim {args.dim}, k {args.k}, min score {args.min_score}; "
        f"round: +{add:,} a side, a source of {add:,} removed from xa"
    )
    a, b, _ = planted(n + add, n + add, (n + add) // 2, args.dim, noise=0.6, seed=0)
    watch = Stopwatch(graph, ["withdraw_pairs", "withdraw_orphans", "withdraw_sentences"])
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bitextdb.init(root / "home", model="synthetic", dim=args.dim, k=args.k).close()
        db = bitextdb.open(root / "home", progress=None)
        load(db, "xa", "a-bulk", a, 0, n - add)
        load(db, "xa", "a-small", a, n - add, n)
        load(db, "xb", "b", b, 0, n)
        say(f"first mine {seconds_to_mine(db):.1f} s")
        options = {"min_score": args.min_score}
        first, first_s = export(db, root / "first.jsonl", cursor="copy", **options)
        copy: Copy = {(r["src"], r["tgt"]): r["margin"] for r in read(root / "first.jsonl")}
        say(f"first cursor export (whole): {first['rows']:,} pairs, {first_s:.2f} s")

        watch.seconds = 0.0
        started = time.perf_counter()
        load(db, "xa", "a-new", a, n, n + add)
        load(db, "xb", "b-new", b, n, n + add)
        db.mine()
        db.remove("xa", "a-small")
        round_s = time.perf_counter() - started
        say(
            f"round (ingest, mine, remove): {round_s:.2f} s, of which recording withdrawals "
            f"{watch.seconds:.3f} s ({100 * watch.seconds / round_s:.2f} %)"
        )

        delta, delta_s = export(
            db,
            root / "delta.jsonl",
            cursor="copy",
            withdrawn=str(root / "dropped.jsonl"),
            **options,
        )
        whole, whole_s = export(db, root / "whole.jsonl", **options)
        for r in read(root / "dropped.jsonl"):
            copy.pop((r["src"], r["tgt"]), None)
        for r in read(root / "delta.jsonl"):
            copy[(r["src"], r["tgt"])] = r["margin"]
        now: Copy = {(r["src"], r["tgt"]): r["margin"] for r in read(root / "whole.jsonl")}
        reasons: dict[str, int] = {}
        for r in read(root / "dropped.jsonl"):
            reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
        say(
            f"cursor export with withdrawals: {delta['rows']:,} pairs written and "
            f"{delta['withdrawn_rows']:,} withdrawn ({reasons}), {delta_s:.2f} s"
        )
        say(f"full export of the same moment: {whole['rows']:,} pairs, {whole_s:.2f} s")
        say(f"ratio (sync / full export): {delta_s / whole_s:.3f}")
        say(
            f"the copy equals the full export: {copy == now} "
            f"({len(copy):,} pairs in the copy, {len(now):,} in the export)"
        )
        say(f"peak RSS {peak_rss_mb():.0f} MB")
        db.close()
    if copy != now:
        raise SystemExit("the copy differs from the full export")


if __name__ == "__main__":
    main()
