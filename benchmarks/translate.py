"""Translation latency benchmark, through the library and over HTTP. Run by hand:

    .venv/bin/python benchmarks/translate.py                # 5,000 a side, 1,000 queries
    .venv/bin/python benchmarks/translate.py --queries 50   # a quick check
    .venv/bin/python benchmarks/translate.py --home DIR     # build once into DIR, reuse later

Builds a database with the tiny static cross-lingual test model (tests/models.py; SIZE
English sentences and their German translations, mined), then times warm ``translate``
calls of one sentence each (en -> de, top 5): half of the queries are sentences of the
database (stored vectors), half are new sentences (encoded per call) made of the words of
stored ones. The same queries go
once through ``BitextDB.translate`` and once as ``POST /translate`` to the FastAPI app under
uvicorn (in a thread, on loopback) with one keep-alive httpx client. Prints p50/p95/mean
latency of each, the share of queries whose planted translation ranks first, and the
machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from common import machine  # noqa: E402

import bitextdb  # noqa: E402
from tests.models import build_static_crosslingual, random_sentences, translate  # noqa: E402

WARMUP = 20


def build(home: Path, size: int) -> dict[str, float]:
    """SIZE English sentences and their German translations, ingested and mined."""
    model = build_static_crosslingual(home.parent / "static-model")
    english = random_sentences(size, seed=1)
    german = [translate(s, "de") for s in english]
    out: dict[str, float] = {}
    start = time.perf_counter()
    db = bitextdb.init(home, model=str(model))
    try:
        db.ingest_texts("en", english, mine=False)
        db.ingest_texts("de", german, mine=False)
        out["ingest_s"] = time.perf_counter() - start
        start = time.perf_counter()
        reports = db.mine()
        out["mine_s"] = time.perf_counter() - start
        out["accepted"] = float(sum(r.accepted for r in reports))
    finally:
        db.close()
    return out


def queries(size: int, n: int) -> list[tuple[str, str]]:
    """``(English query, planted German translation)``, alternating stored and new queries.

    A new query is a stored English sentence with its words in reverse order: a text the
    database lacks (encoded per call) whose translation, word for word, is stored.
    """
    english = random_sentences(size, seed=1)
    stored = [(q, translate(q, "de")) for q in english[: (n + 1) // 2]]
    new = []
    for q in english[len(stored) :]:
        flipped = " ".join(q.split()[::-1])
        if flipped != q:
            new.append((flipped, translate(q, "de")))
    mixed = [q for pair in zip(stored, new) for q in pair]
    mixed += stored[len(new) :] + new[len(stored) :]
    return mixed[:n]


def summary(latencies: list[float], hits: int) -> dict[str, float]:
    ms = sorted(x * 1000 for x in latencies)
    return {
        "n": len(ms),
        "p50_ms": ms[len(ms) // 2],
        "p95_ms": ms[min(len(ms) - 1, int(0.95 * len(ms)))],
        "mean_ms": statistics.fmean(ms),
        "top1": hits / len(ms),
    }


def run_library(db: bitextdb.BitextDB, work: list[tuple[str, str]]) -> dict[str, float]:
    for query, _ in work[:WARMUP]:
        db.translate(query, "en", "de", top=5)
    latencies, hits = [], 0
    for query, want in work:
        start = time.perf_counter()
        result = db.translate(query, "en", "de", top=5)
        latencies.append(time.perf_counter() - start)
        hits += bool(result.hits) and result.hits[0].text == want
    return summary(latencies, hits)


def run_http(db: bitextdb.BitextDB, work: list[tuple[str, str]]) -> dict[str, float]:
    import httpx
    import uvicorn

    from bitextdb.serve import create_app

    server = uvicorn.Server(
        uvicorn.Config(create_app(db, api_key=None), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError("the server did not start")
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as client:

            def ask(query: str) -> dict[str, Any]:
                body = {"text": query, "from": "en", "to": "de", "top": 5}
                response = client.post("/translate", json=body)
                response.raise_for_status()
                return response.json()["results"][0]

            for query, _ in work[:WARMUP]:
                ask(query)
            latencies, hits = [], 0
            for query, want in work:
                start = time.perf_counter()
                result = ask(query)
                latencies.append(time.perf_counter() - start)
                hits += bool(result["hits"]) and result["hits"][0]["text"] == want
    finally:
        server.should_exit = True
        thread.join()
    return summary(latencies, hits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=5000, help="sentences a side")
    parser.add_argument("--queries", type=int, default=1000, help="timed queries per path")
    parser.add_argument("--home", type=Path, help="build here (kept), or reuse a built one")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.queries < 1:
        parser.error("--queries must be at least 1")

    root = Path(tempfile.mkdtemp(prefix="bitextdb-translate-"))
    home = args.home or root / "home"
    results: dict[str, Any] = {"machine": machine(), "size": args.size}
    try:
        if (home / "bitextdb.sqlite").exists():
            results["build"] = "reused"
        else:
            results["build"] = build(home, args.size)
        work = queries(args.size, args.queries)
        db = bitextdb.open(home)
        try:
            results["library"] = run_library(db, work)
            results["http"] = run_http(db, work)
        finally:
            db.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    if args.json:
        print(json.dumps(results, indent=2))
        return
    print(f"machine: {results['machine']}")
    build_info = results["build"]
    if isinstance(build_info, dict):
        print(
            f"built {args.size} en + {args.size} de sentences (static test model): ingest "
            f"{build_info['ingest_s']:.1f} s, mine {build_info['mine_s']:.1f} s, "
            f"{int(build_info['accepted'])} accepted pairs"
        )
    else:
        print(f"reused the database in {home}")
    print(f"warm translate, en -> de, top 5, {len(work)} queries (half stored, half new):")
    for name in ("library", "http"):
        r = results[name]
        print(
            f"  {name:8} p50 {r['p50_ms']:7.2f} ms  p95 {r['p95_ms']:7.2f} ms  "
            f"mean {r['mean_ms']:7.2f} ms  planted first {r['top1']:.1%}"
        )
    overhead = results["http"]["p50_ms"] - results["library"]["p50_ms"]
    print(f"  HTTP overhead at p50: {overhead:.2f} ms")


if __name__ == "__main__":
    main()
