"""Compact vectors benchmark (issue 6). Run by hand:

    .venv/bin/python benchmarks/compact.py [--size 30000 --dim 768]

The same planted corpus (vectors injected) goes into one database per storage option:
float32 (the baseline), float16, Qdrant scalar (int8) and binary quantization. Each is mined
in full (bulk scan), its HNSW graph is built, and 1% more a side is mined through HNSW
queries (where quantization acts). Reported per option, against the float32 database of the
same run: bytes on disk (the Qdrant Edge shard and the scan mirror), resident memory of a
fresh process that opens the database and answers HNSW searches, search time, and the
share of accepted pairs (margin >= 1.0 and >= 1.2) that agree.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import agreement, in_child, machine, planted, rss_mb

import bitextdb

OPTIONS = {
    "float32": {"vector_dtype": "float32", "quantization": "none"},
    "float16": {"vector_dtype": "float16", "quantization": "none"},
    "scalar int8": {"vector_dtype": "float32", "quantization": "scalar"},
    "binary": {"vector_dtype": "float32", "quantization": "binary"},
}


def folder_mb(path: Path, pattern: str = "*") -> float:
    """Disk space in use (allocated blocks: Qdrant preallocates sparse files)."""
    return sum(f.stat().st_blocks * 512 for f in path.rglob(pattern) if f.is_file()) / 2**20


def accepted(db: bitextdb.BitextDB, threshold: float) -> set[tuple[str, str]]:
    """Accepted pairs as texts, so databases are compared whatever their ids."""
    sql = """SELECT a.text, b.text FROM pairs p
             JOIN sentences a ON a.id = p.src_id JOIN sentences b ON b.id = p.tgt_id
             WHERE p.accepted AND p.margin >= :t"""
    with db.db.session() as s:
        return {(x, y) for x, y in s.execute(text(sql), {"t": threshold})}


def build(home: str, option: str, n: int, dim: int, k: int, add: float, conn) -> None:  # type: ignore[no-untyped-def]
    """In a child process: fill, mine, index, add and mine again; send back the pairs."""
    n_add = round(n * add)
    a, b, _ = planted(n + n_add, n + n_add, (n + n_add) // 2, dim, noise=1.0, seed=3)
    bitextdb.init(
        home, model="synthetic", dim=dim, k=k, exact_limit=n // 2, **OPTIONS[option]
    ).close()
    db = bitextdb.open(home)
    try:
        for lang, vecs in (("xa", a), ("xb", b)):
            texts = [f"{lang} row {i}" for i in range(n)]
            db.ingest_embeddings(lang, texts, vecs[:n], mine=False)
        started = time.perf_counter()
        db.mine()
        first_s = time.perf_counter() - started
        for lang in ("xa", "xb"):
            db.index.build_index(lang)
        first = (accepted(db, 1.0), accepted(db, 1.2))
        for lang, vecs in (("xa", a), ("xb", b)):
            texts = [f"{lang} row {i}" for i in range(n, n + n_add)]
            db.ingest_embeddings(lang, texts, vecs[n:], mine=False)
        db.settings.mine_path = "query"
        started = time.perf_counter()
        db.mine()
        add_s = time.perf_counter() - started
        conn.send(
            {
                "first_mine_s": first_s,
                "add_mine_s": add_s,
                "first": first,
                "after": (accepted(db, 1.0), accepted(db, 1.2)),
            }
        )
    finally:
        db.close()


def serve(home: str, dim: int, queries: int, conn) -> None:  # type: ignore[no-untyped-def]
    """In a fresh child process: open the database and answer HNSW searches."""
    before = rss_mb()
    db = bitextdb.open(home)
    rng = np.random.default_rng(9)
    q = rng.standard_normal((queries, dim)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    db.index.search("xb", q[:50], 10, exact=False, ef=128, with_vectors=False)  # warm up
    started = time.perf_counter()
    db.index.search("xb", q, 10, exact=False, ef=128, with_vectors=False)
    seconds = time.perf_counter() - started
    conn.send({"rss_mb": rss_mb() - before, "search_qps": queries / seconds})
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=30_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--add", type=float, default=0.01)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bitextdb-compact-"))
    rows: dict[str, dict[str, float]] = {}
    try:
        baseline = None
        for option in OPTIONS:
            home = root / option.replace(" ", "-")
            built = in_child(build, str(home), option, args.size, args.dim, args.k, args.add)
            served = in_child(serve, str(home), args.dim, args.queries)
            vectors = home / "vectors"
            row = {
                "shard_mb": folder_mb(vectors) - folder_mb(vectors, "mirror.*"),
                "mirror_mb": folder_mb(vectors, "mirror.*"),
                "serving_rss_mb": served["rss_mb"],
                "search_qps": served["search_qps"],
                "first_mine_s": built["first_mine_s"],
                "add_mine_s": built["add_mine_s"],
            }
            if baseline is None:
                baseline = built
            for stage in ("first", "after"):
                for i, t in enumerate(("1.0", "1.2")):
                    row[f"agree_{stage}_{t}"] = agreement(built[stage][i], baseline[stage][i])
            row["pairs_after_1.2"] = len(built["after"][1])
            rows[option] = row
            print(f"{option}: {json.dumps(row)}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps({"machine": machine(), "args": vars(args), "options": rows}, indent=2))
        return
    print(f"machine: {machine()}")
    print(f"{args.size} x {args.size} vectors of dim {args.dim}, +{args.add:.0%} a side via HNSW")
    print(
        f"{'':12s} {'shard MB':>9s} {'mirror MB':>9s} {'serve RSS':>9s} {'search/s':>9s}"
        f" {'first mine':>10s} {'addition':>9s} {'agree 1.0':>9s} {'agree 1.2':>9s}"
    )
    for option, r in rows.items():
        print(
            f"{option:12s} {r['shard_mb']:9.0f} {r['mirror_mb']:9.0f} {r['serving_rss_mb']:9.0f}"
            f" {r['search_qps']:9.0f} {r['first_mine_s']:9.1f}s {r['add_mine_s']:8.2f}s"
            f" {100 * r['agree_after_1.0']:8.2f}% {100 * r['agree_after_1.2']:8.2f}%"
        )
    print("agreement: accepted pairs after the addition, versus float32 (first mine in --json)")


if __name__ == "__main__":
    main()
