"""Mining benchmark (issue 3). Run by hand:

    .venv/bin/python benchmarks/mine.py                    # 50k x 50k, dim 768, then +1%
    .venv/bin/python benchmarks/mine.py --hnsw-size 200000 --hnsw-dim 256

(a) first full mine of N x N injected vectors versus the numpy reference on the same vectors
    (time ratio, agreement of accepted pairs); (b) add 1% to each side and mine again
    (incremental time as a share of (a)); (c) optionally, at a larger size, an addition mined
    through HNSW queries versus the exact result.
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
from common import machine, numpy_mine, peak_rss_mb, planted

import bitextdb


def accepted_rows(db: bitextdb.BitextDB, a_ids: dict[int, int], b_ids: dict[int, int]) -> set:
    """Accepted pairs mapped back to (row in A, row in B)."""
    with db.db.session() as s:
        rows = s.execute(text("SELECT src_id, tgt_id FROM pairs WHERE accepted")).all()
    return {(a_ids[src], b_ids[tgt]) for src, tgt in rows}


def id_maps(db: bitextdb.BitextDB) -> tuple[dict[int, int], dict[int, int]]:
    with db.db.session() as s:
        rows = s.execute(text("SELECT id, lang, text FROM sentences")).all()
    maps: dict[str, dict[int, int]] = {"xa": {}, "xb": {}}
    for sid, lang, t in rows:
        maps[lang][sid] = int(t.rsplit(" ", 1)[1])
    return maps["xa"], maps["xb"]


def load(db: bitextdb.BitextDB, lang: str, vecs: np.ndarray, lo: int, hi: int) -> None:
    for start in range(lo, hi, 20_000):
        stop = min(hi, start + 20_000)
        db.ingest_embeddings(
            lang, [f"{lang} row {i}" for i in range(start, stop)], vecs[start:stop], mine=False
        )


def agreement(got: set, want: set) -> float:
    return len(got & want) / max(1, len(got | want))


def run(
    n: int, dim: int, k: int, add: float, mine_path: str, exact_limit: int, home: Path
) -> dict[str, float]:
    n_add = round(n * add)
    total = n + n_add
    a, b, _ = planted(total, total, total // 2, dim, noise=1.0, seed=1)
    out: dict[str, float] = {"n": n, "dim": dim, "k": k, "added_per_side": n_add}
    bitextdb.init(home, model="synthetic", dim=dim, k=k, exact_limit=exact_limit).close()
    db = bitextdb.open(home)
    try:
        t = time.perf_counter()
        load(db, "xa", a, 0, n)
        load(db, "xb", b, 0, n)
        out["ingest_s"] = time.perf_counter() - t
        t = time.perf_counter()
        db.mine()
        out["first_mine_s"] = time.perf_counter() - t
        t = time.perf_counter()
        ref = numpy_mine(a[:n], b[:n], k)
        out["reference_s"] = time.perf_counter() - t
        out["first_ratio"] = out["first_mine_s"] / out["reference_s"]
        a_map, b_map = id_maps(db)
        out["first_agreement"] = agreement(accepted_rows(db, a_map, b_map), ref)

        load(db, "xa", a, n, total)
        load(db, "xb", b, n, total)
        db.settings.mine_path = mine_path
        t = time.perf_counter()
        reports = db.mine()
        out["incremental_mine_s"] = time.perf_counter() - t
        out["incremental_share"] = out["incremental_mine_s"] / out["first_mine_s"]
        out["incremental_paths"] = ",".join(sorted(set(reports[0].paths)))  # type: ignore[assignment]
        t = time.perf_counter()
        ref_all = numpy_mine(a, b, k)
        out["reference_all_s"] = time.perf_counter() - t
        a_map, b_map = id_maps(db)
        out["incremental_agreement"] = agreement(accepted_rows(db, a_map, b_map), ref_all)
        out["accepted"] = len(ref_all)
        out["peak_rss_mb"] = peak_rss_mb()
    finally:
        db.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--add", type=float, default=0.01)
    parser.add_argument("--hnsw-size", type=int, default=0, help="also run (c) at this size")
    parser.add_argument("--hnsw-dim", type=int, default=256)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {"machine": machine()}
    root = Path(tempfile.mkdtemp(prefix="bitextdb-bench-"))
    try:
        results["exact"] = run(args.size, args.dim, args.k, args.add, "auto", 10**9, root / "a")
        if args.hnsw_size:
            results["hnsw"] = run(
                args.hnsw_size,
                args.hnsw_dim,
                args.k,
                args.add,
                "query",
                args.hnsw_size // 2,
                root / "c",
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"machine: {results['machine']}")
    for name, r in results.items():
        if name == "machine":
            continue
        print(f"[{name}] {r['n']} x {r['n']}, dim {r['dim']}, k {r['k']}")
        print(f"  ingest (vectors injected)  {r['ingest_s']:8.1f} s")
        print(f"  first mine                 {r['first_mine_s']:8.1f} s")
        print(
            f"  numpy reference            {r['reference_s']:8.1f} s   "
            f"ratio {r['first_ratio']:.2f}x"
            f"  (target <= 2x)"
        )
        print(f"  agreement (first)          {100 * r['first_agreement']:8.2f} %")
        print(
            f"  +{r['added_per_side']} a side, mined via {r['incremental_paths']}:"
            f" {r['incremental_mine_s']:.2f} s = {100 * r['incremental_share']:.1f} % of the "
            f"first mine (target <= 5%)"
        )
        print(
            f"  agreement (after addition) {100 * r['incremental_agreement']:8.2f} %"
            f"  of {r['accepted']} reference pairs"
        )
        print(f"  peak RSS                   {r['peak_rss_mb']:8.0f} MB")


if __name__ == "__main__":
    main()
