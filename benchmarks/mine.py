"""Mining benchmark (issue 3). Run by hand:

    .venv/bin/python benchmarks/mine.py                    # 50k x 50k, dim 768, then +1%
    .venv/bin/python benchmarks/mine.py --size 0 --hnsw-size 200000   # (c) only

(a) first full mine of N x N injected vectors versus the numpy reference on the same vectors
    (time ratio, agreement of accepted pairs); (b) add 1% to each side and mine again
    (incremental time as a share of (a)); (c) optionally, at a larger size: after an exact bulk
    mine, the database is copied; the same 1% addition is mined through HNSW queries in one
    copy and exactly (blocked scan) in the other, and the two are compared (accepted pairs,
    neighbour lists, time). Each phase is printed as it ends.
"""

from __future__ import annotations

import argparse
import functools
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from sqlalchemy import text

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import agreement, machine, numpy_mine, peak_rss_mb, planted, timed

import bitextdb

say = functools.partial(print, flush=True)


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


def neighbour_rows(db: bitextdb.BitextDB) -> set[tuple[int, str, int]]:
    """Every stored neighbour-list entry: (sentence, other language, neighbour)."""
    with db.db.session() as s:
        rows = s.execute(text("SELECT sentence_id, other_lang, neighbour_id FROM neighbours"))
        return {tuple(r) for r in rows}  # type: ignore[misc]


def accepted_ids(db: bitextdb.BitextDB, threshold: float) -> set[tuple[int, int]]:
    """Accepted pairs with a margin of at least ``threshold``: since the greedy walk goes
    down the margins, these are exactly the pairs a database at that threshold accepts."""
    with db.db.session() as s:
        rows = s.execute(
            text("SELECT src_id, tgt_id FROM pairs WHERE accepted AND margin >= :t"),
            {"t": threshold},
        ).all()
    return {(int(a), int(b)) for a, b in rows}


def mine_addition(
    where: Path, a: np.ndarray, b: np.ndarray, n: int, path: str, ef: int
) -> tuple[float, str, tuple[set, set, set]]:
    """Ingest rows n.. of both sides into the database at ``where`` and mine them."""
    db = bitextdb.open(where)
    try:
        load(db, "xa", a, n, len(a))
        load(db, "xb", b, n, len(b))
        db.settings.mine_path = path
        db.settings.hnsw_ef = ef
        started = time.perf_counter()
        reports = db.mine()
        seconds = time.perf_counter() - started
        used = ",".join(sorted(set(reports[0].paths)))
        return seconds, used, (accepted_ids(db, 1.0), accepted_ids(db, 1.2), neighbour_rows(db))
    finally:
        db.close()


def run_hnsw(
    n: int, dim: int, k: int, add: float, efs: list[int], graph: tuple[int, int], home: Path
) -> dict[str, object]:
    """(c): one addition mined exactly and through HNSW (per ``ef``), from copies of one
    database, and compared."""
    n_add = round(n * add)
    total = n + n_add
    a, b, _ = planted(total, total, total // 2, dim, noise=1.0, seed=2)
    hnsw_m, ef_construct = graph
    out: dict[str, object] = {
        "n": n,
        "dim": dim,
        "k": k,
        "added_per_side": n_add,
        "hnsw_m": hnsw_m,
        "hnsw_ef_construct": ef_construct,
    }
    times: dict[str, float] = {}
    say(
        f"[hnsw] {n} x {n}, dim {dim}, k {k}, exact_limit {n // 2},"
        f" hnsw_m {hnsw_m}, hnsw_ef_construct {ef_construct}"
    )
    base = home / "base"
    bitextdb.init(
        base,
        model="synthetic",
        dim=dim,
        k=k,
        exact_limit=n // 2,
        hnsw_m=hnsw_m,
        hnsw_ef_construct=ef_construct,
    ).close()
    db = bitextdb.open(base)
    try:
        with timed(times, "ingest_s"):
            load(db, "xa", a, 0, n)
            load(db, "xb", b, 0, n)
        say(f"  ingest (vectors injected)        {times['ingest_s']:8.1f} s")
        with timed(times, "first_mine_s"):
            first = db.mine()
        used = ",".join(sorted(set(first[0].paths)))
        say(f"  first mine via {used:5s}            {times['first_mine_s']:8.1f} s")
        with timed(times, "hnsw_build_s"):
            for lang in ("xa", "xb"):
                db.index.build_index(lang)
        indexed = db.index.indexed_count("xa") + db.index.indexed_count("xb")
        say(
            f"  HNSW build, both sides           {times['hnsw_build_s']:8.1f} s"
            f"  ({indexed} points indexed)"
        )
        with db.db.session() as s:
            last_old_id = int(s.execute(text("SELECT max(id) FROM sentences")).scalar_one())
    finally:
        db.close()
    for ef in efs:
        shutil.copytree(base, home / f"ef{ef}")
    exact_s, used, exact = mine_addition(base, a, b, n, "scan", 0)
    times["exact_add_s"] = exact_s
    say(f"  +{n_add} a side, exact ({used})          {exact_s:8.2f} s")
    exact_pairs, exact_12, exact_lists = exact
    out["accepted"] = len(exact_pairs)  # margin >= 1.0
    out["accepted_1.2"] = len(exact_12)
    per_ef: dict[int, dict[str, float]] = {}
    for ef in efs:
        seconds, used, (pairs, pairs_12, lists) = mine_addition(
            home / f"ef{ef}", a, b, n, "query", ef
        )
        touched = {p for p in exact_pairs | pairs if max(p) > last_old_id}
        r = per_ef[ef] = {
            "add_s": seconds,
            "vs_exact_time": seconds / exact_s,
            "agreement": agreement(pairs, exact_pairs),
            "agreement_1.2": agreement(pairs_12, exact_12),
            "agreement_touching_new": agreement(pairs & touched, exact_pairs & touched),
            "pairs_touching_new": len(exact_pairs & touched),
            "neighbour_recall": len(lists & exact_lists) / max(1, len(exact_lists)),
        }
        say(
            f"  +{n_add} a side, HNSW ef {ef:<4d} ({used})  {seconds:8.2f} s"
            f"  = {r['vs_exact_time']:.2f}x exact"
        )
        say(
            f"    accepted pairs agreeing, >= 1.0  {100 * r['agreement']:8.2f} %"
            f"  of {out['accepted']} (target >= 99.5%)"
        )
        say(
            f"    accepted pairs agreeing, >= 1.2  {100 * r['agreement_1.2']:8.2f} %"
            f"  of {out['accepted_1.2']}"
        )
        say(
            f"    >= 1.0 and touching the added    {100 * r['agreement_touching_new']:8.2f} %"
            f"  of {r['pairs_touching_new']}"
        )
        say(f"    neighbour-list entries recalled  {100 * r['neighbour_recall']:8.2f} %")
    out |= {"times": times, "per_ef": per_ef, "peak_rss_mb": peak_rss_mb()}
    say(f"  peak RSS                           {out['peak_rss_mb']:8.0f} MB")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--add", type=float, default=0.01)
    parser.add_argument("--hnsw-size", type=int, default=0, help="also run (c) at this size")
    parser.add_argument("--hnsw-dim", type=int, default=256)
    parser.add_argument("--hnsw-add", type=float, default=0.01)
    defaults = bitextdb.Settings()
    parser.add_argument("--hnsw-ef", type=int, nargs="+", default=[defaults.hnsw_ef, 512])
    parser.add_argument("--hnsw-m", type=int, default=defaults.hnsw_m)
    parser.add_argument("--hnsw-ef-construct", type=int, default=defaults.hnsw_ef_construct)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    results = {"machine": machine()}
    root = Path(tempfile.mkdtemp(prefix="bitextdb-bench-"))
    try:
        if args.size:
            results["exact"] = run(args.size, args.dim, args.k, args.add, "auto", 10**9, root / "a")
        if args.hnsw_size:
            results["hnsw"] = run_hnsw(
                args.hnsw_size,
                args.hnsw_dim,
                args.k,
                args.hnsw_add,
                args.hnsw_ef,
                (args.hnsw_m, args.hnsw_ef_construct),
                root / "c",
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"machine: {results['machine']}")
    for name, r in results.items():
        if name != "exact":
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
