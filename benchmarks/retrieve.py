"""Bulk vector retrieval from Qdrant Edge (issue 6). Run by hand:

    .venv/bin/python benchmarks/retrieve.py [--points 131072 --dim 768 --ask 65536]

The miner fetches the vectors of each group of new sentences (up to 65,536) before scanning.
This times one such fetch read from the flat mirror (what ``EdgeIndex.retrieve`` does for
``MIRROR_RETRIEVE`` ids or more) against the baseline in the same run: the same ids asked of
the shard through the binding in pieces just under that size, which hands vectors over as
Python lists. Both must give the same ids and vectors.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, unit

from bitextdb.vectors import EdgeIndex
from bitextdb.vectors.edge import MIRROR_RETRIEVE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--points", type=int, default=131_072)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--ask", type=int, default=65_536)
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="bitextdb-retrieve-") as root:
        index = EdgeIndex(Path(root))
        index.ensure("xx", args.dim)
        for start in range(0, args.points, 16_384):
            stop = min(args.points, start + 16_384)
            index.upsert(
                "xx", np.arange(start, stop), unit(rng.standard_normal((stop - start, args.dim)))
            )
        wanted = rng.permutation(args.points)[: args.ask]

        started = time.perf_counter()
        ids, vectors = index.retrieve("xx", wanted)
        mirror_s = time.perf_counter() - started

        started = time.perf_counter()
        step = MIRROR_RETRIEVE - 1
        parts = [index.retrieve("xx", wanted[i : i + step]) for i in range(0, len(wanted), step)]
        binding_s = time.perf_counter() - started
        same = np.array_equal(ids, np.concatenate([p[0] for p in parts])) and np.array_equal(
            vectors, np.concatenate([p[1] for p in parts])
        )
        index.close()
    print(
        f"{args.ask:,} of {args.points:,} vectors (dim {args.dim}): mirror {mirror_s:.2f} s,"
        f" binding lists {binding_s:.2f} s (baseline), {binding_s / mirror_s:.1f}x faster;"
        f" identical: {same}"
    )


if __name__ == "__main__":
    main()
