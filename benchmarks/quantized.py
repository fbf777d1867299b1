"""Quantized HNSW search on a database grown by small additions (issue 6). Run by hand:

    .venv/bin/python benchmarks/quantized.py [--size 2000 --dim 768 --chunk 20]

Planted vectors (half of side B noisy copies of side A): half of them a side go in at once,
the rest ``--chunk`` a side at a time, into a database with int8 or 1-bit quantization and
an exact limit of 10, so every addition after the first (under the 5 % bulk ratio) is mined
through the quantized HNSW index, as the documented settings do for small additions. The
accepted pairs (margin >= 1.0 and >= 1.2) are compared with the exact batch reference over
everything (numpy), for the search as it is now (every candidate the graph walk visits,
``hnsw_ef`` of them, rescored with the stored vectors) and for the baseline it replaced,
measured in the same run: twice ``k`` rescored.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine, numpy_mine_scored, planted

import bitextdb
from bitextdb.export import iter_records
from bitextdb.vectors import edge

RESCORING = {
    "twice k (before)": lambda limit, ef: 2.0,
    "every walked candidate (now)": edge.rescore_oversampling,
}


def run(quantization: str, rescoring: str, args: argparse.Namespace) -> dict[str, float]:
    a, b, _ = planted(args.size, args.size, args.size // 2, args.dim, noise=0.6, seed=0)
    want = numpy_mine_scored(a, b, args.k)
    edge.rescore_oversampling = RESCORING[rescoring]  # type: ignore[assignment]
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        bitextdb.init(
            home, model="synthetic", dim=args.dim, k=args.k, quantization=quantization
        ).close()
        with bitextdb.open(home) as db:
            db.configure(exact_limit=10)
            started = time.perf_counter()
            first = args.size // 2
            for start, stop in [(0, first)] + [
                (s, min(s + args.chunk, args.size)) for s in range(first, args.size, args.chunk)
            ]:
                db.ingest_embeddings("xa", [f"a{i}" for i in range(start, stop)], a[start:stop])
                db.ingest_embeddings("xb", [f"b{i}" for i in range(start, stop)], b[start:stop])
            seconds = time.perf_counter() - started
            got = {
                (int(r["src"][1:]), int(r["tgt"][1:])): float(r["margin"])
                for r in iter_records(db, "xa-xb", min_score=-float("inf"))
            }
    out: dict[str, float] = {"seconds": round(seconds, 1)}
    for cut in (1.0, 1.2):
        w = {p for p, m in want.items() if m >= cut}
        g = {p for p, m in got.items() if m >= cut}
        out[f"equal_{cut}"] = round(100 * len(w & g) / max(1, len(w | g)), 2)
        out[f"missing_{cut}"] = len(w - g)
        out[f"extra_{cut}"] = len(g - w)
    same = [p for p in want if p in got and abs(want[p] - got[p]) < 1e-6]
    out["margins_equal"] = round(100 * len(same) / max(1, len(want)), 2)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--chunk", type=int, default=20)
    parser.add_argument("-k", type=int, default=4)
    parser.add_argument("--quantization", nargs="+", default=["binary", "scalar"])
    args = parser.parse_args()
    results = {}
    for quantization in args.quantization:
        for rescoring in RESCORING:
            results[f"{quantization}, {rescoring}"] = row = run(quantization, rescoring, args)
            print(f"{quantization}, {rescoring}: {json.dumps(row)}", flush=True)
    print(json.dumps({"machine": machine(), "args": vars(args), "results": results}, indent=2))


if __name__ == "__main__":
    main()
