"""Qdrant Edge's upserts in a writer process: same points, clear failures, nothing lost."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy

import bitextdb
import bitextdb.ingest as ingest
from bitextdb.config import Settings
from bitextdb.db import corpus
from bitextdb.errors import StoreUnavailableError
from bitextdb.vectors.edge import EdgeIndex
from bitextdb.vectors.edge_writer import EdgeWriter
from tests.cli_helpers import mine_small_corpus


def unit_rows(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def test_the_writer_stores_what_the_index_would(tmp_path: Path) -> None:
    index = EdgeIndex(tmp_path / "vectors")
    index.ensure("en", 8)
    vectors = unit_rows(300)
    index.upsert("en", np.arange(1, 101), vectors[:100])
    with EdgeWriter(index) as writer:
        writer.upsert("en", np.arange(101, 301), vectors[100:])
        writer.upsert("en", np.array([5]), vectors[299:300])  # a re-upsert: the last wins
    expected = vectors.copy()
    expected[4] = vectors[299]
    assert index.count("en") == 300
    few_ids, few = index.retrieve("en", np.array([5, 150, 300]))  # from the shard
    assert few_ids.tolist() == [5, 150, 300]
    assert np.allclose(few, expected[[4, 149, 299]], atol=1e-6)
    scanned_ids, scanned = next(index.scan("en"))  # from the mirror
    order = np.argsort(scanned_ids)
    assert scanned_ids[order].tolist() == list(range(1, 301))
    assert np.allclose(scanned[order], expected, atol=1e-6)
    index.close()
    assert not list((tmp_path / "vectors").glob(".writer-*"))  # its spool folder is gone


def test_an_error_in_the_writer_is_the_store_s_own_and_it_goes_on(tmp_path: Path) -> None:
    index = EdgeIndex(tmp_path / "vectors")
    index.ensure("en", 8)
    with EdgeWriter(index) as writer:
        with pytest.raises(StoreUnavailableError, match="no de vector collection"):
            writer.upsert("de", np.arange(3), unit_rows(3))
        with pytest.raises(StoreUnavailableError, match=r"vector shard at .* failed"):
            writer.upsert("en", np.arange(3), unit_rows(3, dim=5))  # the shard refuses
        writer.upsert("en", np.arange(3), unit_rows(3))
    assert index.count("en") == 3
    index.close()


def test_submitted_batches_are_confirmed_in_order_with_their_own_errors(
    tmp_path: Path,
) -> None:
    index = EdgeIndex(tmp_path / "vectors")
    index.ensure("en", 8)
    vectors = unit_rows(30)
    with EdgeWriter(index) as writer:
        writer.submit("en", np.arange(1, 11), vectors[:10])
        writer.submit("de", np.arange(11, 21), vectors[10:20])  # no such collection
        writer.submit("en", np.arange(21, 31), vectors[20:])
        writer.confirm()
        with pytest.raises(StoreUnavailableError, match="no de vector collection"):
            writer.confirm()
        writer.confirm()
        writer.submit("en", np.arange(11, 21), vectors[10:20])  # left unconfirmed: close
    assert index.count("en") == 30  # waits for it before it closes the shards
    assert not list((tmp_path / "vectors").glob(".writer-*/*"))
    index.close()


def test_a_writer_that_dies_is_one_clear_error_and_keeps_what_it_stored(
    tmp_path: Path,
) -> None:
    index = EdgeIndex(tmp_path / "vectors")
    index.ensure("en", 8)
    writer = EdgeWriter(index)
    writer.upsert("en", np.arange(1, 11), unit_rows(10))
    assert writer._child is not None
    os.kill(writer._child.pid, signal.SIGINT)  # Ctrl-C reaches the child too: ignored
    writer.upsert("en", np.arange(11, 21), unit_rows(10, seed=1))
    os.kill(writer._child.pid, signal.SIGKILL)
    writer._child.wait()
    with pytest.raises(StoreUnavailableError, match="writer process stopped unexpectedly"):
        writer.upsert("en", np.arange(21, 31), unit_rows(10, seed=2))
    writer.close()
    assert index.count("en") == 20  # Qdrant's write-ahead log kept what was acknowledged
    index.close()


def ingest_vectors(
    home: Path, db_url: str | None, texts: list[str], vectors: np.ndarray, **options: object
) -> dict[str, np.ndarray]:
    """Ingest ``texts`` with their given ``vectors``; ``text -> stored vector``."""
    with bitextdb.init(home, db=db_url, model="laser-like", dim=8, **options) as db:
        db.ingest_embeddings("en", texts, vectors, mine=False)
        with db.db.session() as s:
            assert not corpus.unindexed(s, "en", 10)
            stored = corpus.texts(s, list(range(1, len(texts) + 1)))
        ids, found = db.index.retrieve("en", np.array(sorted(stored)))
        return {stored[int(i)][1]: v for i, v in zip(ids, found)}


def test_an_ingest_through_the_writer_stores_the_same_vectors(
    home: Path, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "BATCH", 40)  # several full batches: the writer takes them
    started: list[EdgeIndex] = []
    monkeypatch.setattr(ingest.edge_writer, "EdgeWriter", _counting(started))
    texts = [f"sentence {i}" for i in range(150)] + ["sentence 3", "sentence 7"]
    vectors = unit_rows(len(texts))
    by_writer = ingest_vectors(home / "writer", db_url, texts, vectors, index_process=True)
    assert len(started) == 1
    in_process = ingest_vectors(home / "plain", None, texts, vectors, index_process=False)
    assert len(started) == 1
    assert sorted(by_writer) == sorted(in_process) == sorted(set(texts))
    for text in texts:
        assert np.allclose(by_writer[text], in_process[text], atol=1e-6)


def test_one_batch_stays_in_process(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    started: list[EdgeIndex] = []
    monkeypatch.setattr(ingest.edge_writer, "EdgeWriter", _counting(started))
    texts = [f"sentence {i}" for i in range(30)]
    assert len(ingest_vectors(home, None, texts, unit_rows(30), index_process=True)) == 30
    assert started == []


def test_a_full_batch_with_nothing_new_starts_no_writer(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "BATCH", 40)
    started: list[EdgeIndex] = []
    monkeypatch.setattr(ingest.edge_writer, "EdgeWriter", _counting(started))
    texts = [f"sentence {i}" for i in range(80)]
    vectors = unit_rows(80)
    with bitextdb.init(home, model="laser-like", dim=8, index_process=True) as db:
        db.ingest_embeddings("en", texts, vectors, mine=False)
        assert len(started) == 1
        db.ingest_embeddings("en", texts, vectors, mine=False)  # all known: nothing to store
        assert len(started) == 1
        assert db.index.count("en") == 80


def _counting(started: list[EdgeIndex]) -> type[EdgeWriter]:
    class Counting(EdgeWriter):
        def __init__(self, index: EdgeIndex) -> None:
            started.append(index)
            super().__init__(index)

    return Counting


def test_a_writer_that_dies_mid_ingest_loses_nothing(
    home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ingest fails with the writer's sentence; running it again stores the rest."""
    monkeypatch.setattr(ingest, "BATCH", 40)

    class Dying(EdgeWriter):
        def submit(self, lang: str, ids: np.ndarray, vectors: np.ndarray) -> None:
            if self._count:  # dies before its second batch, maybe before storing the first
                assert self._child is not None
                self._child.kill()
                self._child.wait()
            super().submit(lang, ids, vectors)

    monkeypatch.setattr(ingest.edge_writer, "EdgeWriter", Dying)
    texts = [f"sentence {i}" for i in range(150)]
    vectors = unit_rows(150)
    with bitextdb.init(home, model="laser-like", dim=8, index_process=True) as db:
        with pytest.raises(StoreUnavailableError, match="stopped unexpectedly"):
            db.ingest_embeddings("en", texts, vectors, mine=False)
        assert db.index.count("en") in (0, 40)
        with db.db.session() as s:  # nothing is marked indexed that was not stored
            marked = [
                row[0]
                for row in s.execute(sqlalchemy.text("SELECT id FROM sentences WHERE indexed"))
            ]
        found, _ = db.index.retrieve("en", np.array(marked, dtype=np.int64))
        assert sorted(found.tolist()) == sorted(marked)
        monkeypatch.setattr(ingest.edge_writer, "EdgeWriter", EdgeWriter)
        db.ingest_embeddings("en", texts, vectors, mine=False)
        with db.db.session() as s:
            assert not corpus.unindexed(s, "en", 10)
            stored = corpus.texts(s, list(range(1, 151)))
        ids, found = db.index.retrieve("en", np.array(sorted(stored)))
    assert len(ids) == 150
    by_text = {stored[int(i)][1]: v for i, v in zip(ids, found)}
    for text, vector in zip(texts, vectors):
        assert np.allclose(by_text[text], vector, atol=1e-6)


class NotEdge:
    """Any store other than Qdrant Edge (a server's client)."""


@pytest.mark.parametrize(
    ("chosen", "encoder_child", "edge", "expected"),
    [
        (None, False, True, False),  # follows the encoder: no child there, none here
        (None, True, True, True),
        (True, False, True, True),
        (False, True, True, False),
        (True, True, False, False),  # a server's client waits on the network already
    ],
)
def test_when_the_writer_is_used(
    tmp_path: Path, chosen: bool | None, encoder_child: bool, edge: bool, expected: bool
) -> None:
    settings = Settings(device="cpu", index_process=chosen, encoder_process=encoder_child)
    index = EdgeIndex(tmp_path) if edge else NotEdge()
    ingestor = ingest.Ingestor(None, index, settings, None)  # type: ignore[arg-type]
    assert ingestor._wants_index_process() is expected


def test_the_command_line_ingests_through_the_writer(
    home: Path, static_model: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "BATCH", 2)  # three lines a language: two batches
    started: list[EdgeIndex] = []
    monkeypatch.setattr(ingest.edge_writer, "EdgeWriter", _counting(started))
    by_writer = mine_small_corpus(home / "writer", static_model, "--index-process")
    assert started
    assert mine_small_corpus(home / "plain", static_model, "--no-index-process") == by_writer
    assert len(by_writer) == 3


@pytest.mark.slow
def test_killing_an_ingest_while_its_writer_works_loses_nothing(tmp_path: Path) -> None:
    """SIGKILL the ingesting process while the writer process is storing its batches:
    the writer goes away with it, and running the same ingest again stores every sentence
    with its own vector, `check` finds nothing wrong and no spool folder is left."""
    import json
    import subprocess
    import sys
    import time

    n = 30_000  # four batches
    texts = [f"sentence {i}" for i in range(n)]
    vectors = unit_rows(n, seed=5)
    text_file = tmp_path / "en.txt"
    text_file.write_text("".join(f"{t}\n" for t in texts))
    np.save(tmp_path / "en.npy", vectors)
    home = tmp_path / "home"
    env = {**os.environ, "BITEXTDB_HOME": str(home)}
    command = [sys.executable, "-m", "bitextdb", "-q"]
    init = [*command, "init", "--model", "given", "--dim", "8", "--index-process"]
    subprocess.run(init, env=env, check=True, capture_output=True)
    ingest_cmd = [*command, "ingest", str(text_file), "--lang", "en", "--no-mine"]
    ingest_cmd += ["--embeddings", str(tmp_path / "en.npy")]
    parent = subprocess.Popen(ingest_cmd, env=env, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not list((home / "vectors").glob(".writer-*/*.npy")):  # the writer has work
        assert parent.poll() is None, parent.stderr.read().decode() if parent.stderr else ""
        assert time.monotonic() < deadline
        time.sleep(0.005)
    parent.kill()
    parent.wait()
    rerun = subprocess.run(ingest_cmd, env=env, capture_output=True)
    assert rerun.returncode == 0, rerun.stderr.decode()
    check = subprocess.run([*command, "check", "--json"], env=env, capture_output=True)
    assert check.returncode == 0 and json.loads(check.stdout)["ok"] is True
    assert not list((home / "vectors").glob(".writer-*"))
    with bitextdb.open(home) as db:
        with db.db.session() as s:
            assert not corpus.unindexed(s, "en", 10)
            stored = {i: text for i, (_, text) in corpus.texts(s, list(range(1, n + 1))).items()}
        ids, found = db.index.retrieve("en", np.array(sorted(stored)))
        assert len(ids) == n and db.index.count("en") == n
    by_text = {stored[int(i)]: v for i, v in zip(ids, found)}
    for text, vector in zip(texts, vectors):
        assert np.allclose(by_text[text], vector, atol=1e-6)


def test_shards_wait_for_a_writer_that_still_holds_them(tmp_path: Path) -> None:
    """A writer left running by a killed ingest keeps the writer lock until it has closed
    the shards; opening them meanwhile waits for it (and gives up clearly in the end)."""
    import subprocess
    import sys
    import time

    from bitextdb.vectors.edge import WRITER_LOCK

    index = EdgeIndex(tmp_path)
    index.ensure("en", 8)
    index.upsert("en", np.arange(1, 6), unit_rows(5))
    index.close()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time\n"
            f"fd = os.open({str(tmp_path / WRITER_LOCK)!r}, os.O_RDWR | os.O_CREAT)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "print('locked', flush=True)\n"
            "time.sleep(1.5)\n",
        ],
        stdout=subprocess.PIPE,
    )
    assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
    waiting = EdgeIndex(tmp_path)
    with pytest.raises(StoreUnavailableError, match="writer process still holds"):
        waiting._wait_for_writer(seconds=0.2)
    started = time.monotonic()
    assert waiting.count("en") == 5  # opens the shard once the holder has gone
    assert time.monotonic() - started > 0.5
    assert holder.wait() == 0
    waiting.close()


@pytest.mark.parametrize(
    "compact", [{"vector_dtype": "float16"}, {"quantization": "scalar"}, {"quantization": "binary"}]
)
def test_compact_vectors_go_through_the_writer_as_they_are_stored_in_process(
    home: Path, monkeypatch: pytest.MonkeyPatch, compact: dict[str, str]
) -> None:
    """The writer opens the shards with the home's own options: a float16 home gets a
    float16 mirror from it, and both the shard and the mirror equal the in-process ones."""
    monkeypatch.setattr(ingest, "BATCH", 40)
    texts = [f"sentence {i}" for i in range(130)]
    vectors = unit_rows(len(texts), seed=9)
    scans = {}
    for writer in (True, False):
        where = home / str(writer)
        with bitextdb.init(where, model="laser-like", dim=8, index_process=writer, **compact) as db:
            db.ingest_embeddings("en", texts, vectors, mine=False)
            ids, scanned = next(db.index.scan("en"))  # the mirror
            shard_ids, from_shard = db.index.retrieve("en", np.arange(1, 11))  # the shard
            scans[writer] = (ids, scanned, shard_ids, from_shard)
    assert all(np.array_equal(a, b) for a, b in zip(scans[True], scans[False]))
    if compact.get("vector_dtype") == "float16":
        mirror = home / "True" / "vectors" / "en" / "mirror.vec"
        assert mirror.stat().st_size == len(texts) * 8 * 2
