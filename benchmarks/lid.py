"""Language identification at ingest (``ingest --lid``): how well, and at what cost. Run by hand:

    .venv/bin/python benchmarks/lid.py                    # 100,000 sentences
    .venv/bin/python benchmarks/lid.py --size 10000       # a quick check
    .venv/bin/python benchmarks/lid.py --boilerplate 0.5  # half the lines repeated boilerplate

1. How well, on the hand-written example corpora (``examples/{en,de,es}.txt``, 165 real
   sentences): for thresholds from 0.5 to 0.99, how many sentences of each corpus the
   check of their own language drops (each should be kept) and how many it drops when
   they are given as one of the other two languages (each should be dropped).
2. At what cost: ``language_check`` alone (best of three), in sentences per second on one
   thread; then the whole ingest (read, dedup, SQL, upserts into Qdrant Edge; no mining)
   of SIZE sentences (the example sentences, each with a number to keep them apart) with
   vectors ready at once (``InstantEncoder``, a stand-in for a GPU fast enough that the
   rest shows), without and with ``--lid``, best of three each, into a fresh home each
   time. With ``--boilerplate F`` a fraction F of the lines are instead the 165 example
   sentences over and over (a crawl's repeated boilerplate), and ``language_check`` alone
   is also timed without the answers it remembers (``__wrapped__``), in the same run.
3. Worker processes (``BITEXTDB_LID_WORKERS``; ``--workers 0,1,2`` the counts tried): the
   stream of verdicts a reader takes (``ParallelCheck.verdicts``) and the ingest with
   ``--lid``, for each count, best of three.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import instant_ingest, machine  # noqa: E402

import bitextdb  # noqa: E402
from bitextdb.language_id import language_check  # noqa: E402

LANGS = ("en", "de", "es")


def examples() -> dict[str, list[str]]:
    return {
        lang: [x for x in (ROOT / "examples" / f"{lang}.txt").read_text("utf-8").splitlines() if x]
        for lang in LANGS
    }


def quality(corpora: dict[str, list[str]]) -> None:
    print("threshold | own sentences dropped | others' sentences dropped")
    for threshold in (0.5, 0.8, 0.9, 0.95, 0.99):
        checks = {lang: language_check(lang, threshold) for lang in LANGS}
        own = sum(not checks[lang](s) for lang, texts in corpora.items() for s in texts)
        total = sum(len(texts) for texts in corpora.values())
        others = [
            (checks[other], s)
            for lang, texts in corpora.items()
            for other in LANGS
            if other != lang
            for s in texts
        ]
        dropped = sum(not check(s) for check, s in others)
        print(
            f"{threshold:9} | {own:3d} of {total} ({own / total:6.1%})   "
            f"| {dropped:3d} of {len(others)} ({dropped / len(others):6.1%})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--boilerplate", type=float, default=0.0)
    parser.add_argument(
        "--workers", default="0,1,2", help="worker process counts to time (comma-separated)"
    )
    args = parser.parse_args()
    bitextdb.tune_allocator()  # as the command line does
    corpora = examples()
    print(f"machine: {machine()}")
    quality(corpora)

    pool = [s for texts in corpora.values() for s in texts]
    texts = [f"{s} {i}" for i, s in zip(range(args.size), itertools.cycle(pool))]
    every = round(1 / args.boilerplate) if args.boilerplate else 0
    for n in range(0, len(texts), every or len(texts) + 1):
        texts[n] = pool[n % len(pool)]  # the same few sentences, over and over
    print(f"{len(texts):,} lines, {len(set(texts)):,} distinct")
    for label, remembered in (("remembered", True), ("each one classified", False)):
        if not remembered and not args.boilerplate:
            continue
        alone = float("inf")
        for _ in range(args.runs):
            check = language_check("en")  # a fresh memory every run
            classify = check if remembered else check.keep.__wrapped__  # type: ignore[attr-defined]
            started = time.perf_counter()
            kept = sum(classify(s) for s in texts)
            alone = min(alone, time.perf_counter() - started)
        print(
            f"language_check alone ({label}), best of {args.runs}: {len(texts):,} sentences "
            f"in {alone:.2f} s = {len(texts) / alone:,.0f} /s on one thread "
            f"({kept:,} kept as English)"
        )

    workers = [int(w) for w in args.workers.split(",")]
    for count in workers:  # the stream of verdicts a reader takes, judged by N processes
        best = float("inf")
        for _ in range(args.runs):
            check = language_check("en", workers=count)
            started = time.perf_counter()
            kept = sum(keep for _, keep in check.verdicts(texts, str))
            best = min(best, time.perf_counter() - started)
        print(
            f"verdicts with {count} worker processes, best of {args.runs}: {len(texts):,} "
            f"sentences in {best:.2f} s = {len(texts) / best:,.0f} /s ({kept:,} kept)"
        )

    root = Path(tempfile.mkdtemp(prefix="bitextdb-lid-"))
    try:
        path = root / "mixed.txt"
        path.write_text("\n".join(texts) + "\n", encoding="utf-8")
        # imported here: worker processes (spawned) import this script again, and torch
        # with it would add seconds to their start that the command line does not pay
        from tests.models import build_tiny_bert

        model = build_tiny_bert(root / "model", dim=args.dim)
        base = 0.0
        variants: list[tuple[str, dict, int]] = [("without --lid", {}, 0)]
        variants += [(f"--lid, {n} workers", {"lid": 0.5}, n) for n in workers]
        for label, options, count in variants:
            os.environ["BITEXTDB_LID_WORKERS"] = str(count)
            runs = [
                instant_ingest(root / "home", model, args.dim, path, "en", **options)
                for _ in range(args.runs)
            ]
            took, report = min(runs, key=lambda run: run[0])
            base = base or took
            stored = report["new"]
            print(
                f"ingest {label:18s} {took:6.2f} s = {len(texts) / took:>9,.0f} sentences "
                f"read/s, {stored:,} stored, skipped {report['skipped'] or 'none'}, reading "
                f"stage {report['stage_seconds']['read']:.2f} s"
                + ("" if took == base else f" ({took / base:.2f}x the time)")
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
