"""The given-vectors ingest alone (``--embeddings``), timed, for the code of any checkout:

    .venv/bin/python benchmarks/given.py [--repo PATH] [--size 100000] [--dim 768]

Ingests SIZE synthetic lines with given random vectors, once with the upserts in the
ingesting process and once in the Edge writer process, and prints both times. ``--repo``
imports bitextdb from another checkout (a ``git worktree`` of an older commit), so that two
versions can be run alternately in the same hour: this VM's speed drifts between hours.
"""

from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=ROOT)
    parser.add_argument("--size", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=768)
    args = parser.parse_args()
    sys.path.insert(0, str(args.repo.resolve()))
    import bitextdb

    rng = random.Random(0)
    words = [
        "the",
        "a",
        "house",
        "dog",
        "cat",
        "sleeps",
        "reads",
        "book",
        "friend",
        "car",
        "tree",
        "river",
    ]
    root = Path(tempfile.mkdtemp(prefix="bitextdb-given-"))
    try:
        corpus, given = root / "corpus.txt", root / "given.npy"
        corpus.write_text(
            "".join(f"{' '.join(rng.choices(words, k=10))} {i}\n" for i in range(args.size))
        )
        vectors = np.random.default_rng(0).standard_normal((args.size, args.dim))
        np.save(given, vectors.astype(np.float32))
        bitextdb.tune_allocator()  # as the command line does
        seconds = []
        for index_process in (False, True):
            home = root / f"home-{index_process}"
            db = bitextdb.init(home, model="given", dim=args.dim, index_process=index_process)
            started = time.perf_counter()
            db.ingest(str(corpus), "en", mine=False, embeddings=str(given))
            seconds.append(time.perf_counter() - started)
            db.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"{bitextdb.__file__}: {args.size} lines, dim {args.dim}: "
        f"upserts in process {seconds[0]:.2f} s, in the writer process {seconds[1]:.2f} s"
    )


if __name__ == "__main__":
    main()
