"""The Qdrant Edge writer process alone, fed as an ingest feeds it. Run by hand:

    .venv/bin/python benchmarks/writer.py [--repo PATH] [--size 61440] [--dim 768] [--rounds 3]

An ingest on a GPU hands each batch's vectors to the writer process (``EdgeWriter``) and
goes on; the writer must keep up with the GPU. This submits batches of 8,192 unit vectors
two ahead of the confirmations, as the ingest's upsert and marking stages do, into a fresh
shard, and prints the writer's rate. In the same run, the same batches are upserted in this
process (``EdgeIndex.upsert``: points, store, flush, mirror), the baseline, split into the
mirror's append (a file write, which lets go of the interpreter lock; timed by wrapping it)
and the rest, which holds the lock (building the points, the shard's ``update``, the
flush). Each way is timed once per round, in turn, in a fresh home; the best round counts.

``--repo`` runs another checkout's ``bitextdb`` (to compare two versions of the writer).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BATCH = 8192
Parts = list[tuple[np.ndarray, np.ndarray]]


def batches(rows: np.ndarray) -> Parts:
    """``rows`` as the ingest hands them over: (ids, vectors) in batches of ``BATCH``."""
    return [
        (
            np.arange(start, min(start + BATCH, len(rows)), dtype=np.int64),
            rows[start : start + BATCH],
        )
        for start in range(0, len(rows), BATCH)
    ]


def through_writer(work: Path, parts: Parts, dim: int) -> float:
    """Seconds to store ``parts`` through the writer process, two batches ahead."""
    from bitextdb.vectors.edge import EdgeIndex
    from bitextdb.vectors.edge_writer import EdgeWriter

    index = EdgeIndex(work)
    index.ensure("en", dim)
    writer = EdgeWriter(index)
    try:
        writer._hand_over()  # the child's start and imports are not timed
        started = time.perf_counter()
        pending = 0  # handed over, not yet confirmed
        for ids, vectors in parts:
            writer.submit("en", ids, vectors)
            pending += 1
            if pending > 2:
                writer.confirm()
                pending -= 1
        for _ in range(pending):
            writer.confirm()
        return time.perf_counter() - started
    finally:
        writer.close()


def in_process(work: Path, parts: Parts, dim: int) -> dict[str, float]:
    """Seconds for ``EdgeIndex.upsert`` in this process, and the part of them its mirror
    append took (the rest, points, store and flush, holds the interpreter lock)."""
    from bitextdb.vectors.edge import EdgeIndex, Mirror

    append = Mirror.append
    appended = [0.0]

    def timed_append(mirror: Mirror, ids: np.ndarray, vectors: np.ndarray) -> None:
        started = time.perf_counter()
        append(mirror, ids, vectors)
        appended[0] += time.perf_counter() - started

    index = EdgeIndex(work)
    index.ensure("en", dim)
    Mirror.append = timed_append  # type: ignore[method-assign]
    try:
        started = time.perf_counter()
        for ids, vectors in parts:
            index.upsert("en", ids, vectors)
        whole = time.perf_counter() - started
    finally:
        Mirror.append = append  # type: ignore[method-assign]
        index.close()
    return {
        "upsert": whole,
        "points_update_flush": whole - appended[0],
        "mirror_append": appended[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repo", type=Path, default=ROOT)
    parser.add_argument("--size", type=int, default=61_440)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    sys.path.insert(0, str(args.repo.resolve()))
    sys.path.insert(1, str(ROOT / "benchmarks"))
    from common import machine, unit

    import bitextdb

    print(machine())
    print(f"bitextdb from {Path(bitextdb.__file__).parent}")
    bitextdb.tune_allocator()  # as the command line does
    parts = batches(unit(np.random.default_rng(0).standard_normal((args.size, args.dim))))
    best: dict[str, float] = {}
    for round_ in range(args.rounds):
        work = Path(tempfile.mkdtemp(prefix="bitextdb-writer-"))
        try:
            took = {"writer": through_writer(work / "writer", parts, args.dim)}
            took.update(in_process(work / "local", parts, args.dim))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        print(f"round {round_ + 1}: " + ", ".join(f"{k} {v:.3f} s" for k, v in took.items()))
        for key, seconds in took.items():
            best[key] = min(best.get(key, float("inf")), seconds)
    n = args.size
    base = n / best["upsert"]
    print(f"\n{n:,} vectors of dim {args.dim}, batches of {BATCH:,}, best of {args.rounds}:")
    rows = [
        ("in process, EdgeIndex.upsert (baseline)", best["upsert"]),
        ("writer process, two batches ahead", best["writer"]),
        ("  of it, points + update + flush (the lock's share)", best["points_update_flush"]),
        ("  of it, the mirror append", best["mirror_append"]),
    ]
    for label, seconds in rows:
        rate = n / seconds
        print(f"{label:52s} {rate:9,.0f} vectors/s  {rate / base:5.2f}x")


if __name__ == "__main__":
    main()
