"""``check --deep`` benchmark: deriving every candidate and the selection again, against the
plain ``check`` and against mining the same vectors, in one run.

    .venv/bin/python benchmarks/deep_check.py               # 50k x 50k, dim 256, k 4

Vectors are planted pairs (half of each side), injected through
``BitextDB.ingest_embeddings``; the first mine of the whole corpus is the baseline (what a
batch tool pays). Then ``check`` and ``check --deep`` run on the mined home, and the
deep one again after one accepted pair row is deleted by hand, which it must find.
Peak memory is the process's (``VmHWM``) after each step.
"""

from __future__ import annotations

import functools
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import corpus_arguments, machine, peak_rss_mb, planted, seconds_to_mine

import bitextdb

say = functools.partial(print, flush=True)


def timed_check(db: bitextdb.BitextDB, deep: bool) -> tuple[float, dict]:  # type: ignore[type-arg]
    started = time.perf_counter()
    report = db.check(deep=deep).as_dict()
    return time.perf_counter() - started, report


def main() -> None:
    parser = corpus_arguments(__doc__ or "", size=50_000, dim=256, share="unused")
    args = parser.parse_args()
    say(f"machine: {machine()}")
    say(f"size {args.size} a side, dim {args.dim}, k {args.k}")
    a, b, _ = planted(args.size, args.size, args.size // 2, args.dim, 0.3, seed=7)
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        bitextdb.init(home, model="synthetic", dim=args.dim, k=args.k).close()
        with bitextdb.open(home) as db:
            for lang, vecs in (("xa", a), ("xb", b)):
                for start in range(0, len(vecs), 20_000):
                    rows = vecs[start : start + 20_000]
                    texts = [f"{lang} {i}" for i in range(start, start + len(rows))]
                    db.ingest_embeddings(lang, texts, rows, mine=False)
            mine = seconds_to_mine(db)
            say(f"mine (baseline): {mine:.1f} s, peak RSS {peak_rss_mb():.0f} MB")
            plain, report = timed_check(db, deep=False)
            assert report["ok"], report
            say(f"check: {plain:.2f} s ({plain / mine:.3f}x the mine)")
            deep, report = timed_check(db, deep=True)
            assert report["ok"], report
            pair = report["deep"][0]
            say(
                f"check --deep: {deep:.2f} s ({deep / mine:.3f}x the mine, "
                f"{deep / plain:.2f}x the plain check); {pair['lists']} lists, "
                f"{pair['pairs']} pair rows; peak RSS {peak_rss_mb():.0f} MB"
            )
            first = "SELECT MIN(rowid) FROM pairs WHERE accepted"
            with db.db.session() as s:
                s.execute(sa.text(f"DELETE FROM pairs WHERE rowid = ({first})"))
            _, report = timed_check(db, deep=True)
            pair = report["deep"][0]
            assert pair["pairs_missing"] == 1 and not report["ok"], pair
            say("an accepted pair row deleted by hand: found (pairs_missing 1)")


if __name__ == "__main__":
    main()
