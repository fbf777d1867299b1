"""The HTTP API (``bitextdb.serve``), over a real socket: uvicorn in a thread, httpx as client.

Two servers run for the whole module: one over a small database built with the static
cross-lingual test model (no API key), one over 5,000 planted pairs of injected random
vectors (a bring-your-own-vectors database, with an API key). ``bitextdb serve`` itself runs
in a subprocess.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import uvicorn
from click.testing import CliRunner
from sqlalchemy import text

import bitextdb
import bitextdb.serve as serve_module
from bitextdb.cli import cli
from bitextdb.db import export_sql
from bitextdb.export import export_pairs, iter_records
from bitextdb.serve import create_app
from tests.models import random_sentences, translate
from tests.reference import random_unit

KEY = "test-key-7f3a9c0e5d"
N_BIG = 5000
MAIN = "from bitextdb.cli import main; main()"


class LiveServer:
    """uvicorn serving ``app`` on a free loopback port, in a background thread."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive(), "the server thread died"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.01)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"

    def client(self, **headers: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
        assert not self.thread.is_alive()


@dataclass
class Served:
    db: bitextdb.BitextDB
    server: LiveServer
    data: dict[str, list[str]]


def _clean_env(mp: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("BITEXTDB_"):
            mp.delenv(name)


@pytest.fixture(scope="module")
def small(static_model: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """40 English sentences, their German translations and 20 German ones without."""
    english = random_sentences(60, seed=21)
    german = [translate(s, "de") for s in english]
    shuffled = german[:]
    random.Random(3).shuffle(shuffled)
    with pytest.MonkeyPatch.context() as mp:
        _clean_env(mp)
        db = bitextdb.init(tmp_path_factory.mktemp("serve") / "home", model=str(static_model))
        db.ingest_texts("en", english[:40])
        db.ingest_texts("de", shuffled)
    server = LiveServer(create_app(db, api_key=None))
    try:
        yield Served(db, server, {"en": english, "de": german})
    finally:
        server.stop()
        db.close()


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """5,000 planted pairs of injected vectors (model 'synthetic': nothing to load), keyed."""
    dim = 16
    rng = np.random.default_rng(7)
    en = random_unit(N_BIG, dim, 1)
    perm = rng.permutation(N_BIG)
    de = en[perm] + 0.15 * rng.standard_normal((N_BIG, dim)).astype(np.float32) / np.sqrt(dim)
    de /= np.linalg.norm(de, axis=1, keepdims=True)
    with pytest.MonkeyPatch.context() as mp:
        _clean_env(mp)
        home = tmp_path_factory.mktemp("serve-big") / "home"
        db = bitextdb.init(home, model="synthetic", dim=dim, k=4)
        db.ingest_embeddings("en", [f"english sentence {i}" for i in range(N_BIG)], en)
        db.ingest_embeddings("de", [f"deutscher satz {i}" for i in range(N_BIG)], de)
    server = LiveServer(create_app(db, api_key=KEY))  # its model cannot load: still starts
    try:
        yield Served(db, server, {})
    finally:
        server.stop()
        db.close()


@pytest.fixture(scope="module")
def client(small: Served) -> Iterator[httpx.Client]:
    with small.server.client() as c:
        yield c


@pytest.fixture(scope="module")
def keyed(big: Served) -> Iterator[httpx.Client]:
    with big.server.client(**{"X-API-Key": KEY}) as c:
        yield c


def error_of(response: httpx.Response, status: int | tuple[int, ...]) -> str:
    """The response is a JSON error with that status and no traceback; its message."""
    wanted = (status,) if isinstance(status, int) else status
    assert response.status_code in wanted, (response.status_code, response.text)
    assert response.headers["content-type"].startswith("application/json")
    assert "Traceback" not in response.text
    body = response.json()
    assert isinstance(body["error"], str) and body["error"]
    return body["error"]


# -- the small database ------------------------------------------------------------------------
def test_health_and_stats(client: httpx.Client, small: Served) -> None:
    assert client.get("/health").json() == {"status": "ok"}
    head = client.head("/health")
    assert head.status_code == 200 and head.content == b""
    stats = client.get("/stats").json()
    assert stats["languages"]["en"]["sentences"] == 40
    assert stats["languages"]["de"]["sentences"] == 60
    assert stats["pairs"]["de-en"]["accepted"] >= 40
    assert stats["model"]["name"] == small.db.settings.model
    assert stats == json.loads(json.dumps(small.db.stats(), default=str))


def test_a_query_parameter_given_twice_is_refused(client: httpx.Client, small: Served) -> None:
    """FastAPI answers for the last of two ``pair=`` without a word: an export of en-es
    where en-de was asked for first."""
    for query in ("pair=en-de&pair=en-es", "pair=en-de&min_score=1&min_score=2"):
        message = error_of(client.get(f"/export?{query}"), 422)
        assert "more than once" in message
    assert "pair, since" in error_of(
        client.get("/withdrawn?since=1&pair=de-en&pair=de-en&since=2"), 422
    )
    assert client.get("/export?pair=en-de&min_score=1").status_code == 200
    assert client.get("/health?probe=1&probe=2").status_code == 200  # never refused


def test_a_query_parameter_the_endpoint_does_not_take_is_refused(
    client: httpx.Client, small: Served
) -> None:
    """A misspelt filter (``min-score``) or one the endpoint lacks (``cursor``) was left
    out: a whole export came back, 200, for a filtered one."""
    for query, unknown in (
        ("pair=en-de&min-score=99", "min-score"),
        ("pair=en-de&cursor=x", "cursor"),
        ("pair=en-de&max-length-ratio=1&x=1", "max-length-ratio, x"),
    ):
        message = error_of(client.get(f"/export?{query}"), 422)
        assert f"no query parameter {unknown};" in message and "min_score" in message
    assert "lang" in error_of(client.get("/sources?language=en"), 422)
    assert "takes none" in error_of(client.get("/stats?verbose=1"), 422)
    body = {"text": "the house", "from": "en", "to": "de"}
    error_of(client.post("/translate?top=3", json=body), 422)
    assert client.get("/export?pair=en-de&min_score=99").text == ""
    assert client.get("/health?probe=1").status_code == 200  # never refused


def test_a_json_body_sent_as_text_is_told_its_content_type(client: httpx.Client) -> None:
    """It got 'Input should be a valid dictionary', which says nothing of the header."""
    body = '{"text": "the house", "from": "en", "to": "de"}'
    plain = client.post("/translate", content=body, headers={"content-type": "text/plain"})
    assert "Content-Type: application/json, not text/plain" in error_of(plain, 422)


def test_translate_one_and_many(client: httpx.Client, small: Served) -> None:
    en, de = small.data["en"], small.data["de"]
    body = client.post("/translate", json={"text": en[2], "from": "en", "to": "de", "top": 3})
    assert body.status_code == 200, body.text
    (result,) = body.json()["results"]
    assert result["query"] == en[2] and result["sentence_id"] is not None
    assert len(result["hits"]) == 3
    assert result["hits"][0]["text"] == de[2] and result["hits"][0]["accepted"] is True
    assert result["stored_pair"]["src"] == en[2] and result["stored_pair"]["tgt"] == de[2]
    assert result == small.db.translate(en[2], "en", "de", top=3).as_dict()

    # 20 sentences in the database and 20 new ones (German side only in the database)
    queries = en[:20] + en[40:]
    response = client.post("/translate", json={"texts": queries, "from": "en", "to": "de"})
    results = response.json()["results"]
    assert [r["query"] for r in results] == queries
    assert [r["hits"][0]["text"] for r in results] == de[:20] + de[40:]
    assert all(len(r["hits"]) == 5 for r in results)
    assert [r["sentence_id"] is None for r in results] == [False] * 20 + [True] * 20

    back = client.post("/translate", json={"text": de[1], "from": "de", "to": "en", "top": 1})
    assert back.json()["results"][0]["hits"][0]["text"] == en[1]


def test_ingest_then_stats_and_translate(client: httpx.Client, small: Served) -> None:
    es = [translate(s, "es") for s in small.data["en"][:12]]
    before = client.get("/stats").json()
    assert "es" not in before["languages"]
    response = client.post("/ingest", json={"lang": "es", "sentences": [*es, es[0], " "]})
    assert response.status_code == 200, response.text
    summary = response.json()
    (ingested,) = summary["ingested"]
    assert (ingested["lang"], ingested["source"], ingested["new"]) == ("es", "api", 12)
    assert ingested["duplicates"] == 1
    assert {"en-es", "de-es"} <= {m["pair"] for m in summary["mined"]}
    after = client.get("/stats").json()
    assert after["languages"]["es"]["sentences"] == 12
    assert after["pairs"]["en-es"]["accepted"] >= 12
    hit = client.post("/translate", json={"text": es[5], "from": "es", "to": "en", "top": 1})
    assert hit.json()["results"][0]["hits"][0]["text"] == small.data["en"][5]

    # without mining: stored, indexed, pending
    extra = [translate(s, "es") for s in small.data["en"][12:15]]
    response = client.post(
        "/ingest", json={"lang": "es", "sentences": extra, "source": "later", "mine": False}
    )
    assert "mined" not in response.json() and response.json()["ingested"][0]["new"] == 3
    pending = client.get("/stats").json()["pairs"]["en-es"]["pending"]
    assert pending["es"] == 3


def test_sources_whose_file_is_gone_are_removed(
    client: httpx.Client, small: Served, tmp_path: Path
) -> None:
    corpus = tmp_path / "fr.txt"
    corpus.write_text("\n".join(translate(s, "es") for s in small.data["en"][:8]) + "\n")
    small.db.ingest(corpus, "fr")  # a file's source: what the service's callers cannot add
    assert client.post("/remove", json={"missing": True}).json() == []  # none gone yet
    corpus.unlink()
    dry = client.post("/remove", json={"missing": True, "dry_run": True})
    assert dry.status_code == 200, dry.text
    assert [r["sentences_removed"] for r in dry.json()] == [8]
    assert client.post("/remove", json={"lang": "de", "missing": True}).json() == []
    done = client.post("/remove", json={"lang": "fr", "missing": True}).json()
    assert [(r["lang"], r["sentences_removed"]) for r in done] == [("fr", 8)]
    assert client.get("/sources", params={"lang": "fr"}).json() == []


def test_sources_are_listed_and_removed(client: httpx.Client, small: Served) -> None:
    it = [translate(s, "es") for s in small.data["en"][20:30]]  # Spanish words, tagged "it"
    before = datetime.now(timezone.utc).isoformat()
    response = client.post("/ingest", json={"lang": "it", "sentences": it, "source": "wrong"})
    assert response.status_code == 200, response.text
    listed = client.get("/sources", params={"lang": "it"}).json()
    assert [(s["name"], s["sentences"]) for s in listed] == [("wrong", 10)]
    assert "it" in {s["lang"] for s in client.get("/sources").json()}
    assert client.get("/stats").json()["pairs"]["en-it"]["accepted"] >= 10

    dry = client.post("/remove", json={"lang": "it", "sources": ["wrong"], "dry_run": True})
    assert dry.json()["sentences_removed"] == 10 and client.get("/sources?lang=it").json()
    assert "wrong" in error_of(client.post("/remove", json={"lang": "it", "sources": ["x"]}), 404)
    assert "missing" in error_of(client.post("/remove", json={"lang": "it", "sources": []}), 400)
    error_of(client.post("/remove", json={"sources": ["wrong"]}), 400)  # by name: lang needed
    error_of(client.post("/remove", json={"missing": "true", "dry_run": True}), 422)
    error_of(client.post("/remove", json={"missing": True, "dry_run": 1}), 422)
    both = {"lang": "it", "sources": ["wrong"], "missing": True}
    assert "not both" in error_of(client.post("/remove", json=both), 400)
    error_of(client.post("/remove", json={"lang": "??", "sources": ["wrong"]}), 400)
    lone = '{"lang": "it", "sources": ["s\\udc80ur"]}'  # a lone surrogate: it was a 500
    json_body = {"Content-Type": "application/json"}
    sent = client.post("/remove", content=lone, headers=json_body)
    assert "not valid Unicode" in error_of(sent, 400)

    done = client.post("/remove", json={"lang": "it", "sources": ["wrong"]})
    assert done.status_code == 200, done.text
    assert done.json()["sentences_removed"] == 10
    assert {p["pair"] for p in done.json()["pairs"]} >= {"en-it", "de-it"}
    assert client.get("/sources", params={"lang": "it"}).json() == []
    stats = client.get("/stats").json()
    assert "it" not in stats["languages"] and "en-it" not in stats["pairs"]
    gone = client.post("/translate", json={"text": "the dog", "from": "en", "to": "it"})
    assert "it" in error_of(gone, 404)
    # a copy of the en-it pairs learns that they all went
    dropped = client.get("/withdrawn", params={"pair": "it-en", "since": before, "min_score": 0})
    assert dropped.status_code == 200, dropped.text
    records = [json.loads(line) for line in dropped.text.splitlines()]
    assert len(records) >= 10 and {r["reason"] for r in records} == {"removed"}
    assert {r["src"] for r in records} <= set(it) and {r["src_lang"] for r in records} == {"it"}
    error_of(client.get("/withdrawn", params={"pair": "it-en"}), 422)  # no since
    for path in ("/withdrawn", "/export"):  # past the last datetime once in UTC: refused
        # (it used to fail inside the stream: 200 and an empty body)
        late = {"pair": "it-en", "since": "9999-12-31T23:59:59-01:00"}
        assert "outside the dates" in error_of(client.get(path, params=late), 400)
    assert "xx" in error_of(
        client.get("/withdrawn", params={"pair": "xx-en", "since": before}), 404
    )


def test_withdrawals_since_before_the_pruned_records_are_gone(
    client: httpx.Client, small: Served
) -> None:
    """A reader asking for the withdrawals since a moment older than what
    ``cursors prune`` kept learns that they are gone (410), not half of them."""
    pruned = datetime(2026, 1, 1, tzinfo=timezone.utc)
    with small.db.db.session() as s:
        export_sql.note_pruned(s, "de", "en", pruned)
    try:
        early = {"pair": "en-de", "since": (pruned - timedelta(days=1)).isoformat()}
        assert "were pruned" in error_of(client.get("/withdrawn", params=early), 410)
        later = {"pair": "en-de", "since": pruned.isoformat()}
        assert client.get("/withdrawn", params=later).status_code == 200
    finally:
        with small.db.db.session() as s:
            s.execute(text("DELETE FROM settings WHERE key LIKE 'withdrawn_pruned_before:%'"))


def test_as_of_chains_exports_without_gaps(client: httpx.Client, small: Served) -> None:
    """Each stream says the moment it is as of; asking with it next time gives what
    changed since, and nothing when nothing did."""
    everything = {"pair": "en-de", "min_score": -1e9}
    first = client.get("/export", params=everything)
    as_of = first.headers["X-Bitextdb-As-Of"]
    assert first.text and datetime.fromisoformat(as_of) <= datetime.now(timezone.utc)
    assert client.get("/export", params=everything | {"since": as_of}).text == ""
    dropped = client.get("/withdrawn", params={"pair": "en-de", "since": as_of})
    assert dropped.text == "" and dropped.headers["X-Bitextdb-As-Of"] >= as_of

    late = small.data["en"][45]  # its German translation is stored, unpaired
    response = client.post("/ingest", json={"lang": "en", "sentences": [late], "source": "late"})
    assert response.status_code == 200, response.text
    changed = client.get("/export", params=everything | {"since": as_of})
    rows = [json.loads(line) for line in changed.text.splitlines()]
    assert late in {r["src"] for r in rows}
    assert changed.headers["X-Bitextdb-As-Of"] > as_of
    assert len(rows) < len(first.text.splitlines())  # only what changed


def test_exports_stream_as_the_file_export_writes_them(
    client: httpx.Client, small: Served, tmp_path: Path
) -> None:
    """``format=tsv`` and ``format=tmx`` send what ``export --format tsv|tmx`` writes."""
    everything = {"pair": "en-de", "min_score": -1e9}
    for fmt, media in (("tsv", "text/tab-separated-values"), ("tmx", "application/x-tmx+xml")):
        response = client.get("/export", params=everything | {"format": fmt})
        assert response.status_code == 200 and response.headers["content-type"].startswith(media)
        export_pairs(small.db, "en-de", output=str(tmp_path / fmt), fmt=fmt, min_score=-1e9)
        written = (tmp_path / fmt).read_text(encoding="utf-8")
        assert response.text == written and written.count("\n") > 20
    # withdrawals: the pairs a removal took, as TMX units with their reason
    as_of = client.get("/export", params=everything).headers["X-Bitextdb-As-Of"]
    late = small.data["en"][46:50]  # their German translations are stored, unpaired
    assert client.post("/ingest", json={"lang": "en", "sentences": late, "source": "y"}).is_success
    assert client.post("/remove", json={"lang": "en", "sources": ["y"]}).is_success
    gone = client.get("/withdrawn", params={"pair": "en-de", "since": as_of, "format": "tmx"})
    assert gone.text.startswith("<?xml") and gone.text.rstrip().endswith("</tmx>")
    jsonl = client.get("/withdrawn", params={"pair": "en-de", "since": as_of}).text
    assert gone.text.count("<tu>") == len(jsonl.splitlines()) > 0
    assert gone.text.count('type="x-reason"') == gone.text.count("<tu>")
    error_of(client.get("/export", params=everything | {"format": "parquet"}), 422)


def test_bad_requests_are_json_errors(client: httpx.Client) -> None:
    translate_ok = {"text": "the dog", "from": "en", "to": "de"}
    # malformed JSON
    bad = client.post(
        "/translate", content=b'{"text": "the dog", ', headers={"content-type": "application/json"}
    )
    error_of(bad, 400)
    assert bad.json()["detail"]
    # missing and wrong fields
    missing = client.post("/translate", json={"from": "en"})
    error_of(missing, 422)
    assert {tuple(d["loc"]) for d in missing.json()["detail"]} == {("body", "to")}
    error_of(client.post("/translate", json={"from": "en", "to": "de"}), 422)  # no text
    error_of(client.post("/translate", json={**translate_ok, "texts": ["x"]}), 422)  # both
    error_of(client.post("/translate", json={**translate_ok, "top": 0}), 422)
    error_of(client.post("/translate", json={**translate_ok, "top": True}), 422)  # not 1
    error_of(client.post("/translate", json={**translate_ok, "top": "3"}), 422)
    error_of(client.post("/translate", json={"text": "x", "src": "en", "tgt": "de"}), 422)
    error_of(client.post("/ingest", json={"sentences": ["x"]}), 422)
    error_of(client.post("/ingest", json={"lang": "en", "sentences": "not a list"}), 422)
    error_of(client.get("/export"), 422)  # no pair
    # unknown languages and pairs
    assert "fr" in error_of(client.post("/translate", json={**translate_ok, "to": "fr"}), 404)
    # a language never held (fr and it were: a pair that lost a language exports empty)
    assert "sv" in error_of(client.get("/export", params={"pair": "en-sv"}), 404)
    # bad input the library refuses
    error_of(client.post("/translate", json={**translate_ok, "to": "en"}), 400)  # same language
    error_of(client.post("/translate", json={**translate_ok, "text": "  "}), 400)  # empty
    error_of(client.post("/translate", json={**translate_ok, "to": "not a code"}), 400)
    error_of(client.post("/ingest", json={"lang": "???", "sentences": ["x"]}), 400)
    error_of(client.get("/export", params={"pair": "english"}), 400)
    error_of(client.get("/export", params={"pair": "en-en"}), 400)
    assert "NaN" in error_of(
        client.get("/export", params={"pair": "en-de", "min_score": "nan"}), 400
    )
    tsv_sources = {"pair": "en-de", "format": "tsv", "with_sources": True}
    assert "no place" in error_of(client.get("/export", params=tsv_sources), 400)
    since = {"pair": "en-de", "since": "2026-01-01T00:00:00Z", "min_score": "nan"}
    error_of(client.get("/withdrawn", params=since), 400)
    # routing errors are JSON too
    error_of(client.get("/no/such/path"), 404)
    error_of(client.delete("/stats"), 405)


def test_unexpected_errors_are_500_without_internals(
    client: httpx.Client, small: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(small.db, "stats", broken)
    message = error_of(client.get("/stats"), 500)
    assert "secret internal detail" not in message
    monkeypatch.undo()
    assert client.get("/stats").status_code == 200  # the lock was released


def test_openapi_docs(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    assert {"/health", "/stats", "/translate", "/export", "/withdrawn", "/ingest"} <= set(
        spec["paths"]
    )
    body = spec["components"]["schemas"]["TranslateRequest"]["properties"]
    assert {"from", "to", "text", "texts", "top"} <= set(body)
    assert client.get("/docs").status_code == 200


# -- the big database: export and authentication -----------------------------------------------
def test_export_streams_every_pair_best_first(keyed: httpx.Client, big: Served) -> None:
    stats = keyed.get("/stats").json()["pairs"]["de-en"]
    assert stats["accepted"] > 0.9 * N_BIG

    def export(**params: Any) -> list[dict[str, Any]]:
        with keyed.stream("GET", "/export", params=params) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("application/x-ndjson")
            return [json.loads(line) for line in response.iter_lines() if line]

    rows = export(pair="en-de")
    assert len(rows) == stats["pairs"]  # at or above the threshold, the default
    assert list(rows[0]) == [
        "src", "tgt", "src_lang", "tgt_lang", "margin", "cosine", "src_id", "tgt_id"
    ]  # fmt: skip
    margins = [r["margin"] for r in rows]
    assert margins == sorted(margins, reverse=True)
    assert min(margins) >= big.db.settings.threshold
    assert {(r["src_lang"], r["tgt_lang"]) for r in rows} == {("en", "de")}
    assert all(r["src"].startswith("english") and r["tgt"].startswith("deutscher") for r in rows)
    assert len({r["src_id"] for r in rows}) == len({r["tgt_id"] for r in rows}) == len(rows)

    everything = export(pair="de-en", min_score=-1e9, with_sources="true")
    assert len(everything) == stats["accepted"]
    assert everything[0]["src_lang"] == "de"
    assert everything[0]["src_sources"] == everything[0]["tgt_sources"] == ["embeddings"]
    with_ids = export(pair="de-en", min_score=-1e9, with_ids="true")
    assert with_ids[0]["src_ext_ids"] == with_ids[0]["tgt_ext_ids"] == []  # none were given
    assert export(pair="en-de", since="2999-01-01T00:00:00Z") == []
    high = export(pair="en-de", min_score=margins[99])
    assert len(high) >= 100 and high == rows[: len(high)]


def test_export_is_sent_while_it_is_read(
    keyed: httpx.Client, big: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first lines reach the client before the server has read the rest of the pairs."""
    first_line_seen = threading.Event()
    waited: list[bool] = []
    real = serve_module.iter_records

    def paused(*args: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
        records = real(*args, **kwargs)

        def gen() -> Iterator[dict[str, Any]]:
            for n, record in enumerate(records):
                if n == N_BIG // 2:  # half-way: wait until the client has a line
                    waited.append(first_line_seen.wait(timeout=10))
                yield record

        return gen()

    monkeypatch.setattr(serve_module, "iter_records", paused)
    with keyed.stream("GET", "/export", params={"pair": "en-de", "min_score": -1e9}) as response:
        lines = response.iter_lines()
        first = json.loads(next(lines))
        first_line_seen.set()
        rest = [line for line in lines if line]
    assert waited == [True], "the server read the whole export before sending a line"
    assert 1 + len(rest) == big.db.stats()["pairs"]["de-en"]["accepted"]
    assert first["margin"] >= json.loads(rest[-1])["margin"]


def test_iter_records_is_the_jsonl_export_read_a_batch_at_a_time(
    big: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    db = big.db  # the server is idle: no request runs meanwhile
    out = tmp_path / "pairs.jsonl"
    export_pairs(db, "en-de", output=str(out), fmt="jsonl", with_sources=True)
    exported = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    records = list(iter_records(db, "en-de", with_sources=True))
    assert records == exported and len(records) > 0.9 * N_BIG
    assert [list(r) for r in records[:1]] == [list(exported[0])]

    lookups: list[int] = []
    real = export_sql.texts
    monkeypatch.setattr(
        export_sql, "texts", lambda s, ids: lookups.append(len(ids)) or real(s, ids)
    )
    stream = iter_records(db, "de-en", min_score=-1e9, batch=500)
    assert lookups == []  # nothing is read before the first record is asked for
    first = next(stream)
    assert lookups == [1000]  # one batch of 500 pairs: 1,000 texts
    rest = list(stream)
    assert len(lookups) == -(-(1 + len(rest)) // 500)
    assert first["src_lang"] == "de" and first["margin"] >= rest[0]["margin"]
    with pytest.raises(bitextdb.InputError):
        iter_records(db, "de-en", batch=0)
    with pytest.raises(bitextdb.InputError, match="fr"):
        iter_records(db, "de-fr")  # checked on the call, not on the first record


def test_api_key(big: Served) -> None:
    with big.server.client() as anonymous:
        assert anonymous.get("/health").json() == {"status": "ok"}  # always open
        assert anonymous.head("/health").status_code == 200
        for method, path in [("GET", "/stats"), ("GET", "/export?pair=en-de"), ("GET", "/docs")]:
            error_of(anonymous.request(method, path), 401)
        assert error_of(
            anonymous.post("/translate", json={"text": "x", "from": "en", "to": "de"}), 401
        ) and error_of(anonymous.post("/ingest", json={"lang": "en", "sentences": []}), 401)
        assert KEY not in anonymous.get("/stats").text
        wrong = [
            {"X-API-Key": KEY + "x"},
            {"X-API-Key": KEY[:-1]},
            {"Authorization": f"Bearer {KEY[:-1]}"},
            {"Authorization": f"Basic {KEY}"},
            {"Authorization": KEY},
        ]
        for headers in wrong:
            response = anonymous.get("/stats", headers=headers)
            error_of(response, 401)
            assert response.headers["www-authenticate"] == "Bearer"
        for headers in [{"X-API-Key": KEY}, {"Authorization": f"Bearer {KEY}"}]:
            response = anonymous.get("/stats", headers=headers)
            assert response.status_code == 200, response.text
            assert response.json()["languages"]["en"]["sentences"] == N_BIG
        assert anonymous.get("/openapi.json", headers={"X-API-Key": KEY}).status_code == 200


def test_translate_stored_sentence_without_a_model(keyed: httpx.Client) -> None:
    """A database of own vectors translates stored sentences; new ones fail cleanly."""
    stored = keyed.post(
        "/translate", json={"text": "english sentence 7", "from": "en", "to": "de", "top": 1}
    )
    assert stored.status_code == 200, stored.text
    assert stored.json()["results"][0]["stored_pair"]["src"] == "english sentence 7"
    new = keyed.post("/translate", json={"text": "not stored", "from": "en", "to": "de"})
    assert "synthetic" in error_of(new, 400)


# -- the command ---------------------------------------------------------------------------------
def test_cli_serve(tmp_path: Path, home: Path) -> None:
    db = bitextdb.init(home, model="synthetic", dim=8)
    db.ingest_embeddings("en", ["one", "two", "three"], random_unit(3, 8, 1))
    db.close()
    env = {**os.environ, "BITEXTDB_API_KEY": KEY, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-c", MAIN, "--home", str(home), "serve", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None
        banner = proc.stdout.readline()
        assert "http://127.0.0.1:" in banner and "API key required" in banner, banner
        url = banner.split(" at ", 1)[1].split()[0]
        deadline = time.monotonic() + 60
        while True:
            try:
                health = httpx.get(f"{url}/health", timeout=5)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline and proc.poll() is None
                time.sleep(0.1)
        assert health.json() == {"status": "ok"}
        assert httpx.get(f"{url}/stats").status_code == 401
        stats = httpx.get(f"{url}/stats", headers={"Authorization": f"Bearer {KEY}"}).json()
        assert stats["languages"]["en"]["sentences"] == 3
        with pytest.raises(bitextdb.BusyError):  # the server holds the home
            bitextdb.open(home)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert KEY not in banner + out + err
    assert "Traceback" not in err
    bitextdb.open(home).close()  # released on exit


def test_cli_serve_without_the_extra(monkeypatch: pytest.MonkeyPatch, home: Path) -> None:
    for missing in ("fastapi", "uvicorn"):
        with monkeypatch.context() as mp:
            mp.setitem(sys.modules, missing, None)  # the import fails as if not installed
            mp.delitem(sys.modules, "bitextdb.serve")
            result = CliRunner().invoke(cli, ["serve"])
        assert result.exit_code != 0
        assert "Traceback" not in result.output
        (line,) = [x for x in result.output.splitlines() if x.startswith("Error:")]
        assert "bitextdb[serve]" in line and missing in line


def test_cli_serve_port_in_use(home: Path) -> None:
    bitextdb.init(home, model="synthetic", dim=8).close()
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(cli, ["serve", "--port", str(port)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert f"Cannot listen on 127.0.0.1:{port}" in result.output
    bitextdb.open(home).close()  # the home was released


def test_the_home_is_released_only_when_the_work_of_requests_ends(home: Path) -> None:
    """uvicorn stops waiting for a request after its graceful shutdown, but the thread
    doing the request's work goes on: the home must stay held until it ends."""
    from bitextdb.cli.serve import close_when_idle

    db = bitextdb.init(home, model="synthetic", dim=8)
    app = create_app(db, api_key=None)
    events: list[str] = []
    app.state.lock.acquire()  # a request at work

    def finish_the_request() -> None:
        time.sleep(0.5)
        events.append("request done")
        app.state.lock.release()

    worker = threading.Thread(target=finish_the_request)
    worker.start()
    real_close = db.close
    db.close = lambda: (events.append("closed"), real_close())  # type: ignore[method-assign]
    close_when_idle(db, app.state.lock, events.append)
    worker.join()
    assert events[0].startswith("Waiting for the work of a request")
    assert events[1:] == ["request done", "closed"]
    bitextdb.open(home).close()  # released


def test_a_request_cancelled_at_shutdown_is_answered_in_json() -> None:
    """uvicorn cancels what still runs when its grace period ends: a CancelledError, which
    got past the catch-all and was answered in plain text, with a traceback in the log."""
    import asyncio

    from bitextdb.serve import CatchAllMiddleware

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise asyncio.CancelledError

    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/ingest", "headers": []}
    asyncio.run(CatchAllMiddleware(app)(scope, receive, send))
    assert sent[0]["status"] == 503
    assert (b"content-type", b"application/json") in sent[0]["headers"]
    assert "server stopped" in json.loads(sent[1]["body"])["error"]
