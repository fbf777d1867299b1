"""Small additions to a large database: the one-to-one selection followed from the pairs
that changed against a walk over every pair, in the same run. Run by hand:

    .venv/bin/python benchmarks/reselect.py                      # 20k and 80k a side
    .venv/bin/python benchmarks/reselect.py --sizes 200000 --dim 32

For each size, N x N injected unit vectors (half of them planted pairs) are mined once;
then rounds alternate two ways of mining the same kind of addition (200 sentences of one
side, each near a random sentence of the other): as `mine` does now (the selection
followed from the changed pairs) and with the pair marked for a walk over every pair, as
every mine did before. Each round's mine seconds are printed, and also an idle `mine`
(nothing new) both ways. At the end the stored selection is compared with a greedy walk
over every stored pair (it must be equal).
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, planted, unit

import bitextdb
from bitextdb.db import graph
from bitextdb.margin import greedy_one_to_one

say = functools.partial(print, flush=True)


def mine_seconds(db: bitextdb.BitextDB, walk_all: bool) -> tuple[float, int]:
    """Mine what waits; with ``walk_all`` the pair is first marked for a walk over every
    pair. The mine's seconds and the candidates it recomputed."""
    if walk_all:
        with db.db.session() as s:
            graph.mark_selection_stale(s, "xa", "xb")
    (report,) = db.mine()
    return report.seconds, report.candidates_recomputed


def run(size: int, dim: int, rounds: int, addition: int, seed: int) -> None:
    a, b, _ = planted(size, size, size // 2, dim, 0.3, seed)
    rng = np.random.default_rng(seed + 1)
    with tempfile.TemporaryDirectory() as tmp:
        db = bitextdb.init(Path(tmp) / "home", model="synthetic", dim=dim, k=4)
        started = time.perf_counter()
        for lang, vectors in (("xa", a), ("xb", b)):
            for lo in range(0, size, 20_000):
                texts = [f"{lang} row {i}" for i in range(lo, min(size, lo + 20_000))]
                db.ingest_embeddings(lang, texts, vectors[lo : lo + 20_000], mine=False)
        db.mine()
        say(f"\n{size:,} x {size:,}, dim {dim}: first mine {time.perf_counter() - started:.1f} s")
        times: dict[str, list[float]] = {"followed": [], "walk over every pair": []}
        recomputed: list[int] = []
        for r in range(rounds * 2):
            way = "followed" if r % 2 == 0 else "walk over every pair"
            near = b[rng.integers(0, size, addition)]
            new = unit(near + 0.3 * rng.standard_normal(near.shape).astype(np.float32) / dim**0.5)
            texts = [f"xa new {r} {i}" for i in range(addition)]
            db.ingest_embeddings("xa", texts, new, mine=False)
            seconds, changed = mine_seconds(db, way != "followed")
            times[way].append(seconds)
            recomputed.append(changed)
            say(f"  round {r + 1}: +{addition} xa, {way}: {seconds:.3f} s ({changed:,} candidates)")
        idle = {way: mine_seconds(db, way != "followed")[0] for way in times}
        idle |= {way + " (again)": mine_seconds(db, way != "followed")[0] for way in times}
        with db.db.session() as s:
            src, tgt, margin, accepted = graph.load_selection(s, "xa", "xb")
        equal = bool((greedy_one_to_one(src, tgt, margin) == accepted).all())
        db.close()
    followed = statistics.median(times["followed"])
    walked = statistics.median(times["walk over every pair"])
    say(f"  +{addition} a round, median mine: followed {followed:.3f} s, walk over every pair "
        f"{walked:.3f} s ({walked / followed:.2f}x); candidates recomputed "
        f"{min(recomputed):,}-{max(recomputed):,}")  # fmt: skip
    say("  idle mine: " + ", ".join(f"{way} {t:.3f} s" for way, t in idle.items()))
    say(f"  stored selection equal to a walk over every pair: {equal} ({len(src):,} pairs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[20_000, 80_000])
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each way")
    parser.add_argument("--addition", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    say(machine())
    for size in args.sizes:
        run(size, args.dim, args.rounds, args.addition, args.seed)


if __name__ == "__main__":
    main()
