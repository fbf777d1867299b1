"""Scale benchmark (issue 6). Run by hand:

    .venv/bin/python benchmarks/scale.py [--sizes 10000 100000 1000000 --mine-limit 100000]

For each size N, in a fresh process: N injected vectors a side (planted pairs, generated a
chunk at a time so the corpus itself never sits in memory) are ingested, then, up to
``--mine-limit``, mined in full (bulk scan) and grown by ``--add`` sentences a side, which
are mined incrementally. Reports times, rates and the peak resident memory of each phase;
ingest should grow linearly with N, memory should not, and the incremental mine should cost
a small share of the first one.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import in_child, machine, unit

import bitextdb

CHUNK = 20_000


def chunks(lang: str, lo: int, hi: int, dim: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """Rows lo..hi of one side; in every chunk the first half of ``xb`` are noisy copies
    of the first half of ``xa`` (the planted pairs), the rest are unrelated."""
    for start in range(lo, hi, CHUNK):
        stop = min(hi, start + CHUNK)
        rng = np.random.default_rng(start)
        a = unit(rng.standard_normal((stop - start, dim)))
        if lang == "xa":
            vectors = a
        else:
            vectors = unit(rng.standard_normal((stop - start, dim)))
            half = (stop - start) // 2
            noise = rng.standard_normal((half, dim)) / np.sqrt(dim)
            vectors[:half] = unit(a[:half] + noise)
        yield [f"{lang} row {i}" for i in range(start, stop)], vectors


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def one_size(home: str, n: int, dim: int, add: int, mine: bool, conn) -> None:  # type: ignore[no-untyped-def]
    out: dict[str, float] = {"n": n, "dim": dim}
    bitextdb.init(home, model="synthetic", dim=dim).close()
    db = bitextdb.open(home)
    try:
        out["open_rss_mb"] = peak_mb()
        started = time.perf_counter()
        for lang in ("xa", "xb"):
            for texts, vectors in chunks(lang, 0, n, dim):
                db.ingest_embeddings(lang, texts, vectors, mine=False)
        out["ingest_s"] = time.perf_counter() - started
        out["ingest_per_s"] = 2 * n / out["ingest_s"]
        out["ingest_peak_rss_mb"] = peak_mb()
        if mine:
            started = time.perf_counter()
            db.mine()
            out["first_mine_s"] = time.perf_counter() - started
            out["mine_peak_rss_mb"] = peak_mb()
            for lang in ("xa", "xb"):
                for texts, vectors in chunks(lang, n, n + add, dim):
                    db.ingest_embeddings(lang, texts, vectors, mine=False)
            started = time.perf_counter()
            reports = db.mine()
            out["add_mine_s"] = time.perf_counter() - started
            out["add_share"] = out["add_mine_s"] / out["first_mine_s"]
            out["add_path"] = ",".join(sorted(set(reports[0].paths)))  # type: ignore[assignment]
            out["accepted"] = reports[0].accepted
            out["final_peak_rss_mb"] = peak_mb()
    finally:
        db.close()
    conn.send(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--add", type=int, default=1_000, help="sentences a side added")
    parser.add_argument("--mine-limit", type=int, default=100_000)
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    results = []
    for n in args.sizes:
        root = Path(tempfile.mkdtemp(prefix="bitextdb-scale-"))
        try:
            r = in_child(one_size, str(root / "home"), n, args.dim, args.add, n <= args.mine_limit)
        finally:
            shutil.rmtree(root, ignore_errors=True)
        results.append(r)
        line = (
            f"N={n:>9,} a side: ingest {r['ingest_s']:7.1f} s ({r['ingest_per_s']:6.0f}/s),"
            f" peak RSS {r['ingest_peak_rss_mb']:6.0f} MB"
        )
        if "first_mine_s" in r:
            line += (
                f"; first mine {r['first_mine_s']:7.1f} s (peak {r['mine_peak_rss_mb']:.0f} MB);"
                f" +{args.add} a side via {r['add_path']} {r['add_mine_s']:.2f} s"
                f" = {100 * r['add_share']:.2f} %"
            )
        print(line, flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
