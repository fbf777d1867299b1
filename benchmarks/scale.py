"""Scale benchmark (issue 6). Run by hand:

    .venv/bin/python benchmarks/scale.py [--sizes 10000 100000 1000000 --mine-limit 100000]

For each size N, in a fresh process: N injected vectors a side (planted pairs, generated a
chunk at a time so the corpus itself never sits in memory) are ingested, then, up to
``--mine-limit``, mined in full (bulk scan) and grown by ``--add`` sentences a side, which
are mined incrementally. Reports times, rates and memory: the peak resident set (which includes the
stores' mapped files, page cache the kernel can take back) and the peak of the process's own
anonymous memory. Ingest should grow linearly with N, memory should not, and the incremental
mine should cost a small share of the first one.

``--allocators tuned glibc`` runs each size with the allocator settings the command line
applies (``bitextdb.tune_allocator``) and with glibc's defaults. ``--memory-limit-mb`` runs
each size in a memory cgroup with that hard limit (root), page cache included: a run that
finishes shows what the store really needs, whatever the resident set grows to.
"""

from __future__ import annotations

import argparse
import contextlib
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
from common import AnonPeak, in_child, join_memory_cgroup, machine, memory_cgroup, rss_mb, unit

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


def one_size(  # type: ignore[no-untyped-def]
    home: str, n: int, dim: int, add: int, mine: bool, allocator: str, limit_mb: int, conn
) -> None:
    if limit_mb:
        join_memory_cgroup(limit_mb, f"bitextdb-scale-{n}")
    if allocator == "tuned":
        bitextdb.tune_allocator()
    out: dict[str, float] = {"n": n, "dim": dim, "allocator": allocator}  # type: ignore[dict-item]
    anon = AnonPeak()
    bitextdb.init(home, model="synthetic", dim=dim).close()
    db = bitextdb.open(home)
    try:
        out["open_rss_mb"] = peak_mb()
        out["open_anon_mb"] = rss_mb("RssAnon")
        started = time.perf_counter()
        for lang in ("xa", "xb"):
            for texts, vectors in chunks(lang, 0, n, dim):
                db.ingest_embeddings(lang, texts, vectors, mine=False)
        out["ingest_s"] = time.perf_counter() - started
        out["ingest_per_s"] = 2 * n / out["ingest_s"]
        out["ingest_peak_rss_mb"] = peak_mb()
        out["ingest_peak_anon_mb"] = anon.peak
        out["ingest_end_file_mb"] = rss_mb("RssFile")
        if mine:
            anon.reset()
            started = time.perf_counter()
            db.mine()
            out["first_mine_s"] = time.perf_counter() - started
            out["mine_peak_rss_mb"] = peak_mb()
            out["mine_peak_anon_mb"] = anon.peak
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


def summary(r: dict, add: int) -> str:
    line = (
        f"N={r['n']:>9,} a side, {r['allocator']} allocator: ingest {r['ingest_s']:7.1f} s"
        f" ({r['ingest_per_s']:6.0f}/s), peak RSS {r['ingest_peak_rss_mb']:6.0f} MB"
        f" (anonymous: {r['open_anon_mb']:.0f} MB open, peak {r['ingest_peak_anon_mb']:.0f} MB;"
        f" mapped files at the end {r['ingest_end_file_mb']:.0f} MB)"
    )
    if "first_mine_s" in r:
        line += (
            f"; first mine {r['first_mine_s']:7.1f} s (peak RSS {r['mine_peak_rss_mb']:.0f} MB,"
            f" anonymous {r['mine_peak_anon_mb']:.0f} MB); +{add} a side via {r['add_path']}"
            f" {r['add_mine_s']:.2f} s = {100 * r['add_share']:.2f} %"
        )
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--add", type=int, default=1_000, help="sentences a side added")
    parser.add_argument("--mine-limit", type=int, default=100_000)
    parser.add_argument("--allocators", nargs="+", choices=["tuned", "glibc"], default=["tuned"])
    parser.add_argument("--memory-limit-mb", type=int, default=0, help="cgroup limit (root)")
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    results = []
    for n in args.sizes:
        for allocator in args.allocators:
            root = Path(tempfile.mkdtemp(prefix="bitextdb-scale-"))
            home = str(root / "home")
            try:
                r = in_child(
                    one_size,
                    *(home, n, args.dim, args.add, n <= args.mine_limit),
                    *(allocator, args.memory_limit_mb),
                )
            except ChildProcessError as exc:  # killed at the memory limit, or a crash
                print(f"N={n:>9,} a side, {allocator} allocator: no result ({exc})", flush=True)
                continue
            finally:
                shutil.rmtree(root, ignore_errors=True)
                if args.memory_limit_mb:  # empty once its process is gone
                    with contextlib.suppress(OSError):
                        memory_cgroup(f"bitextdb-scale-{n}").rmdir()
            results.append(r)
            print(summary(r, args.add), flush=True)
    print(json.dumps(results))


if __name__ == "__main__":
    main()
