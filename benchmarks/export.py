"""Export benchmark (issue 5). Run by hand:

    .venv/bin/python benchmarks/export.py                   # 1,000,000 planted pairs
    .venv/bin/python benchmarks/export.py --size 5000       # a quick check
    .venv/bin/python benchmarks/export.py --home DIR        # build once into DIR, reuse later

Builds a database of SIZE x SIZE injected random vectors with SIZE planted pairs (noisy
copies), mines it, then times ``export_pairs`` of every accepted pair to a .jsonl file and
to a .tsv.gz file (optionally also a re-derived distance-margin export, and one through
the export filters, ``--filters``, a TMX export, ``--tmx``, a Parquet one, ``--parquet``,
and a JSONL export with the
source names and external ids of each side, ``--provenance``): rows per second,
peak RSS (getrusage), how much the resident memory grew during each export (VmRSS sampled
in a thread) and the peak of Python allocations during a second, untimed run under
tracemalloc. A streaming export keeps both flat, whatever the size.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import machine, peak_rss_mb, planted, rss_mb  # noqa: E402

import bitextdb  # noqa: E402
from bitextdb.export import export_pairs  # noqa: E402

CHUNK = 20_000


class Sampler(threading.Thread):
    """Samples VmRSS every ``interval`` seconds until stopped; ``peak`` is the highest."""

    def __init__(self, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.interval = interval
        self.stop_event = threading.Event()
        self.peak = rss_mb()

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            self.peak = max(self.peak, rss_mb())

    def stop(self) -> float:
        self.stop_event.set()
        self.join()
        return max(self.peak, rss_mb())


def build(home: Path, size: int, dim: int, k: int, noise: float) -> dict[str, float]:
    """A database with ``size`` sentences a side and ``size`` planted pairs, mined."""
    a, b, _ = planted(size, size, size, dim, noise=noise, seed=1)
    bitextdb.init(home, model="synthetic", dim=dim, k=k, exact_limit=10**9).close()
    db = bitextdb.open(home)
    out: dict[str, float] = {}
    try:
        start = time.perf_counter()
        for lang, vecs in (("xa", a), ("xb", b)):
            for lo in range(0, size, CHUNK):
                hi = min(size, lo + CHUNK)
                texts = [f"{lang} sentence number {i} of the benchmark" for i in range(lo, hi)]
                db.ingest_embeddings(lang, texts, vecs[lo:hi], mine=False)
        out["ingest_s"] = time.perf_counter() - start
        del a, b
        start = time.perf_counter()
        reports = db.mine()
        out["mine_s"] = time.perf_counter() - start
        out["accepted"] = float(reports[0].accepted) if reports else 0.0
    finally:
        db.close()
    return out


def fill_directly(home: Path, size: int) -> dict[str, float]:
    """``size`` sentences a side and ``size`` accepted pairs written straight into the tables.

    For export figures at sizes whose mining would take hours on a small machine: the rows
    are what mining stores (through bitextdb's own SQL helpers), with random margins.
    """
    from bitextdb.db import corpus, graph
    from bitextdb.db.tables import utcnow
    from bitextdb.readers import text_hash

    bitextdb.init(home, model="synthetic", dim=4).close()
    db = bitextdb.open(home)
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    try:
        for lo in range(0, size, 50_000):
            hi = min(size, lo + 50_000)
            with db.db.session() as s:
                ids = {}
                for lang in ("xa", "xb"):
                    texts = {
                        text_hash(t): t
                        for t in (
                            f"{lang} sentence number {i} of the benchmark" for i in range(lo, hi)
                        )
                    }
                    ids[lang] = list(corpus.add_sentences(s, lang, texts).values())
                margins = rng.uniform(0.9, 1.6, hi - lo)
                now = utcnow()
                graph.upsert_pairs(
                    s,
                    [
                        {
                            "src_id": a,
                            "tgt_id": b,
                            "src_lang": "xa",
                            "tgt_lang": "xb",
                            "cosine": float(m) / 2,
                            "margin": float(m),
                            "src_r": 0.5,
                            "tgt_r": 0.5,
                            "forward": True,
                            "backward": True,
                            "accepted": True,
                            "updated_at": now,
                        }
                        for a, b, m in zip(ids["xa"], ids["xb"], margins)
                    ],
                )
    finally:
        db.close()
    return {"fill_s": time.perf_counter() - start, "accepted": float(size)}


def timed_export(home: Path, output: Path, fmt: str, trace: bool, **options: Any) -> dict[str, Any]:
    """One export of every accepted pair, with its rate and memory growth.

    With ``trace``, the export runs a second time (untimed) under tracemalloc to report
    the peak of Python allocations it made.
    """
    db = bitextdb.open(home)
    try:
        before = rss_mb()
        sampler = Sampler()
        sampler.start()
        start = time.perf_counter()
        summary = export_pairs(
            db, "xa-xb", output=str(output), fmt=fmt, min_score=float("-inf"), **options
        )
        seconds = time.perf_counter() - start
        peak = sampler.stop()
        traced = None
        if trace:
            tracemalloc.start()
            export_pairs(
                db, "xa-xb", output=str(output), fmt=fmt, min_score=float("-inf"), **options
            )
            traced = tracemalloc.get_traced_memory()[1] / 2**20
            tracemalloc.stop()
    finally:
        db.close()
    return {
        "traced_peak_mb": traced,
        "file": output.name,
        "rows": summary["rows"],
        "seconds": seconds,
        "rows_per_s": summary["rows"] / seconds if seconds else float("inf"),
        "bytes": sum(Path(f).stat().st_size for f in summary["files"]),
        "rss_before_mb": before,
        "rss_growth_mb": peak - before,
        "peak_rss_mb": peak_rss_mb(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=1_000_000, help="sentences a side (= pairs)")
    parser.add_argument("--dim", type=int, default=32)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--noise", type=float, default=0.5)
    parser.add_argument("--home", type=Path, help="build here (kept), or reuse a built one")
    parser.add_argument(
        "--computed", action="store_true", help="also a distance-margin export (in memory)"
    )
    parser.add_argument(
        "--filters",
        action="store_true",
        help="also a jsonl export through --skip-identical --max-length-ratio 2",
    )
    parser.add_argument("--tmx", action="store_true", help="also a TMX export")
    parser.add_argument("--parquet", action="store_true", help="also a Parquet export")
    parser.add_argument(
        "--provenance", action="store_true", help="also a jsonl export --with-sources --with-ids"
    )
    parser.add_argument(
        "--no-tracemalloc", action="store_true", help="skip the extra tracemalloc run per export"
    )
    parser.add_argument(
        "--direct",
        action="store_true",
        help="fill the tables directly instead of mining (for sizes mining cannot reach here)",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="bitextdb-export-"))
    home = args.home or root / "home"
    results: dict[str, Any] = {"machine": machine(), "size": args.size, "dim": args.dim}
    try:
        if (home / "bitextdb.sqlite").exists():
            results["build"] = "reused"
        elif args.direct:
            results["build"] = fill_directly(home, args.size)
        else:
            results["build"] = build(home, args.size, args.dim, args.k, args.noise)
        runs = [("pairs.jsonl", "jsonl", {}), ("pairs.tsv.gz", "tsv", {})]
        if args.computed:
            runs.append(("distance.jsonl", "jsonl", {"margin": "distance"}))
        if args.filters:
            filters = {"skip_identical": True, "max_length_ratio": 2.0}
            runs.append(("filtered.jsonl", "jsonl", filters))
        if args.tmx:
            runs.append(("pairs.tmx", "tmx", {}))
        if args.parquet:
            runs.append(("pairs.parquet", "parquet", {}))
        if args.provenance:
            runs.append(("provenance.jsonl", "jsonl", {"with_sources": True, "with_ids": True}))
        results["exports"] = [
            timed_export(home, root / name, fmt, not args.no_tracemalloc, **options)
            for name, fmt, options in runs
        ]
    finally:
        shutil.rmtree(root, ignore_errors=True)

    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"machine: {results['machine']}")
    build_info = results["build"]
    if isinstance(build_info, dict) and "fill_s" in build_info:
        print(f"filled {args.size} pairs directly into the tables in {build_info['fill_s']:.1f} s")
    elif isinstance(build_info, dict):
        print(
            f"built {args.size} x {args.size} (dim {args.dim}): ingest "
            f"{build_info['ingest_s']:.1f} s, mine {build_info['mine_s']:.1f} s, "
            f"{int(build_info['accepted'])} accepted pairs"
        )
    else:
        print(f"reused the database in {home}")
    for r in results["exports"]:
        print(
            f"{r['file']:15} {r['rows']:>10} rows {r['seconds']:8.2f} s "
            f"{r['rows_per_s']:>10.0f} rows/s {r['bytes'] / 2**20:8.1f} MiB  RSS "
            f"{r['rss_before_mb']:.0f} MB + {r['rss_growth_mb']:.1f} MB during export"
            f" (peak {r['peak_rss_mb']:.0f} MB)"
            + ("" if r["traced_peak_mb"] is None else f", traced {r['traced_peak_mb']:.1f} MB")
        )
    if not all(r["rows"] for r in results["exports"]):
        print("warning: an export wrote no rows", file=sys.stderr)


if __name__ == "__main__":
    main()
