"""The two vector store adapters behave alike; a server that is down fails fast and clearly."""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

import bitextdb
from bitextdb.errors import ConfigError, ModelMismatchError, StoreUnavailableError
from bitextdb.vectors import EdgeIndex, ServerIndex, VectorIndex
from bitextdb.vectors import edge as edge_module
from bitextdb.vectors.server import OWNER_KEY, is_transient
from tests.reference import random_unit

# read at import: the autouse fixture clears BITEXTDB_* variables before each test
QDRANT_URL = os.environ.get("BITEXTDB_QDRANT_URL")

DIM = 8
N = 60


def unit(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, dim)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[EdgeIndex, ServerIndex]]:
    edge = EdgeIndex(tmp_path / "edge")
    server = ServerIndex(client=QdrantClient(path=str(tmp_path / "local")))
    yield edge, server
    edge.close()
    server.close()


def fill(index: VectorIndex, ids: np.ndarray, vectors: np.ndarray) -> None:
    index.ensure("en", DIM)
    index.ensure("zh-Hant", DIM)
    index.upsert("en", ids, vectors)
    index.upsert("zh-Hant", ids[:5], vectors[:5])


def scanned(index: VectorIndex, lang: str, batch_size: int) -> dict[int, np.ndarray]:
    out: dict[int, np.ndarray] = {}
    for ids, vectors in index.scan(lang, batch_size=batch_size):
        assert len(ids) == len(vectors)
        for i, v in zip(ids.tolist(), vectors):
            assert i not in out, f"scan returned {i} twice"
            out[i] = v
    return out


def assert_congruent(a: VectorIndex, b: VectorIndex) -> None:
    """Fill both stores alike and compare everything the interface offers."""
    ids = np.arange(1, N + 1, dtype=np.int64) * 7
    vectors = unit(N, seed=1)
    for index in (a, b):
        assert index.dimension("en") is None
        assert index.count("en") == 0
        assert index.search("en", vectors[:2], 3, exact=True) == [[], []]
        fill(index, ids, vectors)
        assert index.count("en") == N
        assert index.count("zh-Hant") == 5
        assert index.languages() == ["en", "zh-Hant"]
        assert index.dimension("en") == DIM
        assert index.dimension("de") is None
        index.ensure("en", DIM)  # again: harmless
        with pytest.raises(ModelMismatchError):
            index.ensure("en", DIM + 1)

    # retrieve: in the order asked, unknown ids left out
    wanted = np.array([ids[5], 999_999, ids[0], ids[-1]])
    ra, va = a.retrieve("en", wanted)
    rb, vb = b.retrieve("en", wanted)
    assert ra.tolist() == rb.tolist() == [ids[5], ids[0], ids[-1]]
    assert np.allclose(va, vb, atol=1e-6)
    assert np.allclose(va, vectors[[5, 0, N - 1]], atol=1e-6)
    for index in (a, b):  # none found, or none asked: an empty matrix of the right width
        for none in (np.array([999_999]), np.array([], dtype=np.int64)):
            found, got = index.retrieve("en", none)
            assert found.shape == (0,) and got.shape == (0, DIM)

    # scan covers every id exactly once, whatever the batch size
    for batch_size in (7, 1000):
        sa, sb = scanned(a, "en", batch_size), scanned(b, "en", batch_size)
        assert set(sa) == set(sb) == set(ids.tolist())
        for i in sa:
            assert np.allclose(sa[i], sb[i], atol=1e-6)

    # exact search: same ids in the same order, same scores
    queries = unit(6, seed=2)
    ha = a.search("en", queries, 10, exact=True)
    hb = b.search("en", queries, 10, exact=True)
    expected = queries @ vectors.T
    for q, (xa, xb) in enumerate(zip(ha, hb)):
        assert [h.id for h in xa] == [h.id for h in xb]
        assert len(xa) == 10
        assert np.allclose([h.score for h in xa], [h.score for h in xb], atol=1e-5)
        best = np.argsort(-expected[q])[:10]
        assert [h.id for h in xa] == ids[best].tolist()
        assert np.allclose([h.score for h in xa], expected[q][best], atol=1e-5)
        for h in xa:
            assert h.vector is not None
            assert np.allclose(h.vector, vectors[np.where(ids == h.id)[0][0]], atol=1e-6)
    no_vectors = a.search("en", queries[:1], 3, exact=True, with_vectors=False)
    assert all(h.vector is None for h in no_vectors[0])

    # bands and score thresholds
    low, high = ids[: N // 2], ids[N // 2 :]
    for index in (a, b):
        assert index.bands("en", "band_de") == set() == index.bands("xx", "band_de")
        index.set_band("en", "band_de", 3, low)
        index.set_band("en", "band_de", 5, high)
        assert index.bands("en", "band_de") == {3, 5}
    for band, members in ((3, set(low.tolist())), (5, set(high.tolist()))):
        ba = a.search("en", queries, 8, exact=True, band=("band_de", band))
        bb = b.search("en", queries, 8, exact=True, band=("band_de", band))
        for xa, xb in zip(ba, bb):
            assert [h.id for h in xa] == [h.id for h in xb]
            assert len(xa) == 8
            assert {h.id for h in xa} <= members
    assert a.search("en", queries, 8, exact=True, band=("band_de", 9)) == [[]] * 6
    assert b.search("en", queries, 8, exact=True, band=("band_de", 9)) == [[]] * 6
    ta = a.search("en", queries, N, exact=True, score_threshold=0.3)
    tb = b.search("en", queries, N, exact=True, score_threshold=0.3)
    for q, (xa, xb) in enumerate(zip(ta, tb)):
        assert [h.id for h in xa] == [h.id for h in xb]
        assert all(h.score >= 0.3 - 1e-6 for h in xa)
        assert len(xa) == int((expected[q] >= 0.3).sum())

    # upsert replaces; delete removes (unknown ids ignored)
    for index in (a, b):
        index.upsert("en", ids[:1], vectors[1:2])
        index.delete("en", np.array([ids[1], ids[2], 424_242]))
        index.delete("de", np.array([1]))  # no such collection: nothing happens
        assert index.count("en") == N - 2
        found, got = index.retrieve("en", ids[:3])
        assert found.tolist() == [ids[0]]
        assert np.allclose(got[0], vectors[1], atol=1e-6)
        assert ids[1] not in {h.id for h in index.search("en", vectors[1:2], N, exact=True)[0]}
    assert set(scanned(a, "en", 100)) == set(scanned(b, "en", 100))
    assert a.count("zh-Hant") == b.count("zh-Hant") == 5


def test_edge_and_local_server_adapters_agree(pair: tuple[EdgeIndex, ServerIndex]) -> None:
    assert_congruent(*pair)


def test_edge_index_persists(tmp_path: Path) -> None:
    ids = np.arange(1, 11, dtype=np.int64)
    vectors = unit(10, seed=3)
    edge = EdgeIndex(tmp_path / "edge")
    edge.ensure("en", DIM)
    edge.upsert("en", ids, vectors)
    edge.close()
    again = EdgeIndex(tmp_path / "edge")
    try:
        assert again.languages() == ["en"]
        assert again.count("en") == 10
        assert again.dimension("en") == DIM
        found, got = again.retrieve("en", ids)
        assert found.tolist() == ids.tolist()
        assert np.allclose(got, vectors, atol=1e-6)
        with pytest.raises(ModelMismatchError):
            again.ensure("en", 16)
    finally:
        again.close()


def test_exact_and_hnsw_search_agree_on_small_collections(tmp_path: Path) -> None:
    ids = np.arange(1, 201, dtype=np.int64)
    vectors = unit(200, seed=4)
    edge = EdgeIndex(tmp_path / "edge", hnsw_m=8, hnsw_ef_construct=64)
    try:
        edge.ensure("en", DIM)
        edge.upsert("en", ids, vectors)
        assert edge.indexed_count("en") == 0
        edge.build_index("en")
        assert edge.indexed_count("en") == 200
        queries = unit(5, seed=5)
        exact = edge.search("en", queries, 5, exact=True)
        approx = edge.search("en", queries, 5, exact=False, ef=256)
        # 200 points in 8 dimensions: the graph search finds the true neighbours
        assert [[h.id for h in x] for x in exact] == [[h.id for h in x] for x in approx]
        # a few newcomers wait outside the graph, and searches still see them
        extra = unit(10, seed=6)
        edge.upsert("en", np.arange(201, 211, dtype=np.int64), extra)
        edge.build_index("en")
        assert edge.indexed_count("en") == 200
        found = edge.search("en", extra, 1, exact=False, ef=256)
        assert [x[0].id for x in found] == list(range(201, 211))
    finally:
        edge.close()


# -- a server that is not there ------------------------------------------------------------------
def test_nothing_listening_gives_store_unavailable_quickly() -> None:
    index = ServerIndex("http://127.0.0.1:1", retry_seconds=1, timeout=2)
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match=r"127\.0\.0\.1:1"):
        index.count("en")
    assert time.monotonic() - started < 8
    with pytest.raises(StoreUnavailableError):
        index.ensure("en", DIM)
    index.close()


@pytest.fixture
def hanging_up_server() -> Iterator[str]:
    """A TCP server that accepts every connection and closes it at once."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    listener.close()


def test_server_that_hangs_up_gives_store_unavailable(hanging_up_server: str) -> None:
    index = ServerIndex(hanging_up_server, retry_seconds=1, timeout=2)
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError, match="Cannot reach Qdrant"):
        index.languages()
    assert time.monotonic() - started < 8
    index.close()


def test_api_key_in_url_is_masked_in_errors() -> None:
    index = ServerIndex("http://user:hunter2@127.0.0.1:1", retry_seconds=0.2, timeout=1)
    with pytest.raises(StoreUnavailableError) as info:
        index.count("en")
    assert "hunter2" not in str(info.value)
    index.close()


def _response(status: int) -> UnexpectedResponse:
    return UnexpectedResponse(status, "reason", b"", httpx.Headers())


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (_response(503), True),
        (_response(500), True),
        (_response(429), True),
        (_response(404), False),
        (_response(400), False),
        (ResponseHandlingException(ValueError("bad")), True),
        (httpx.ConnectError("refused"), True),
        (httpx.ReadTimeout("slow"), True),
        (httpx.RemoteProtocolError("hung up"), True),
        (ConnectionRefusedError(), True),
        (ValueError("a bug"), False),
        (KeyError("x"), False),
        (ModelMismatchError("no"), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_is_transient(exc: BaseException, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_permanent_errors_are_not_retried(tmp_path: Path) -> None:
    index = ServerIndex(client=QdrantClient(path=str(tmp_path / "local")), retry_seconds=30)
    calls = {"n": 0}

    def broken(*args: object, **kwargs: object) -> None:
        calls["n"] += 1
        raise ValueError("a bug, not the network")

    started = time.monotonic()
    with pytest.raises(ValueError):
        index._call(broken)
    assert calls["n"] == 1
    assert time.monotonic() - started < 1

    def flaky(*args: object, **kwargs: object) -> str:
        calls["n"] += 1
        if calls["n"] < 3:
            raise httpx.ConnectError("refused")
        return "ok"

    calls["n"] = 0
    assert index._call(flaky) == "ok"
    assert calls["n"] == 3
    index.close()


# -- a real server, when one is offered ------------------------------------------------------
@pytest.mark.qdrant_server
@pytest.mark.skipif(not QDRANT_URL, reason="set BITEXTDB_QDRANT_URL to test a real Qdrant server")
def test_edge_and_real_server_agree(tmp_path: Path) -> None:
    assert QDRANT_URL is not None
    prefix = f"bitextdb_test_{uuid.uuid4().hex[:10]}_"
    server = ServerIndex(QDRANT_URL, prefix=prefix, retry_seconds=5)
    edge = EdgeIndex(tmp_path / "edge")
    try:
        assert_congruent(edge, server)
    finally:
        for name in server.client.get_collections().collections:
            if name.name.startswith(prefix):
                server.client.delete_collection(name.name)
        server.close()
        edge.close()


# -- the Qdrant Edge adapter's flat mirror (what scans read) ---------------------------------
def _scan_all(index: EdgeIndex, lang: str) -> dict[int, np.ndarray]:
    return {int(i): v for ids, vecs in index.scan(lang, 7) for i, v in zip(ids, vecs)}


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_edge_scan_equals_retrieve_through_the_mirror(tmp_path: Path, dtype: str) -> None:
    index = EdgeIndex(tmp_path / "edge", vector_dtype=dtype)
    index.ensure("en", 8)
    vecs = random_unit(30, 8, 1)
    index.upsert("en", np.arange(1, 31), vecs)
    index.upsert("en", np.arange(1, 6), vecs[:5])  # re-upserted ids: the last row wins
    scanned = _scan_all(index, "en")
    ids, stored = index.retrieve("en", np.arange(1, 31))
    assert sorted(scanned) == list(range(1, 31))
    assert all((scanned[int(i)] == v).all() for i, v in zip(ids, stored))
    # the older rows were dropped once, so the mirror maps again rather than copies
    assert (tmp_path / "edge" / "en" / "mirror.ids").stat().st_size == 30 * 8
    assert isinstance(index._mirror("en").load()[1], np.memmap)
    index.delete("en", np.array([3, 4]))
    assert sorted(_scan_all(index, "en")) == [i for i in range(1, 31) if i not in (3, 4)]
    index.close()


def test_edge_mirror_heals_after_a_torn_or_missing_append(tmp_path: Path) -> None:
    index = EdgeIndex(tmp_path / "edge")
    index.ensure("en", 8)
    vecs = random_unit(20, 8, 2)
    index.upsert("en", np.arange(1, 21), vecs)
    mirror = tmp_path / "edge" / "en" / "mirror.vec"
    with open(mirror, "ab") as f:  # a crash half-way through the next append
        f.write(b"\x00" * 13)
    assert sorted(_scan_all(index, "en")) == list(range(1, 21))
    (tmp_path / "edge" / "en" / "mirror.ids").unlink()  # lost: rebuilt from the shard
    scanned = _scan_all(index, "en")
    assert sorted(scanned) == list(range(1, 21))
    assert np.allclose(scanned[5], vecs[4])
    index.close()


@pytest.mark.parametrize("torn", [13, 8 * 4], ids=["part of a row", "a whole row, no id"])
def test_edge_mirror_appends_after_a_torn_append_stay_aligned(tmp_path: Path, torn: int) -> None:
    """Rows written after a crash mid-append must still pair each id with its own vector."""
    index = EdgeIndex(tmp_path / "edge")
    index.ensure("en", 8)
    vecs = random_unit(30, 8, 3)
    index.upsert("en", np.arange(1, 21), vecs[:20])
    with open(tmp_path / "edge" / "en" / "mirror.vec", "ab") as f:
        f.write(b"\x01" * torn)
    index.upsert("en", np.arange(21, 31), vecs[20:])
    scanned = _scan_all(index, "en")
    assert sorted(scanned) == list(range(1, 31))
    assert all(np.allclose(scanned[i], vecs[i - 1]) for i in range(1, 31))
    index.close()


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_edge_bulk_retrieve_reads_the_mirror_and_agrees_with_the_shard(
    tmp_path: Path, dtype: str
) -> None:
    n = edge_module.MIRROR_RETRIEVE + 200
    index = EdgeIndex(tmp_path / "edge", vector_dtype=dtype)
    index.ensure("en", 8)
    vecs = random_unit(n, 8, 4)
    index.upsert("en", np.arange(1, n + 1), vecs)
    index.upsert("en", np.arange(1, 11), vecs[-10:])  # re-upserted: the last vector wins
    index.delete("en", np.array([20, 21]))
    rng = np.random.default_rng(5)
    # unsorted, with ids asked twice, deleted ids and ids never stored
    wanted = np.concatenate([rng.permutation(np.arange(1, n + 1)), [7, 7, 20, n + 50, 0]])
    assert len(wanted) >= edge_module.MIRROR_RETRIEVE

    def by_shard(ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        step = edge_module.MIRROR_RETRIEVE - 1
        parts = [index.retrieve("en", ids[i : i + step]) for i in range(0, len(ids), step)]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    want_ids, want_vectors = by_shard(wanted)

    class NoListRetrieve:  # the shard, minus the binding's slow list hand-over
        def __init__(self, shard: object) -> None:
            self.shard = shard

        def __getattr__(self, name: str) -> object:
            if name == "retrieve":
                raise AssertionError("a bulk retrieve asked the shard")
            return getattr(self.shard, name)

    index._shards["en"] = NoListRetrieve(index._shards["en"])  # type: ignore[assignment]
    got_ids, got_vectors = index.retrieve("en", wanted)
    assert got_ids.tolist() == want_ids.tolist()
    assert 20 not in got_ids and n + 50 not in got_ids and list(got_ids).count(7) == 3
    assert got_vectors.dtype == np.float32
    assert np.array_equal(got_vectors, want_vectors)
    assert np.allclose(got_vectors[got_ids.tolist().index(3)], vecs[-8], atol=1e-3)

    (tmp_path / "edge" / "en" / "mirror.ids").unlink()  # lost: rebuilt from the shard
    again_ids, again_vectors = index.retrieve("en", wanted)
    assert again_ids.tolist() == want_ids.tolist()
    assert np.array_equal(again_vectors, want_vectors)
    index.close()


_KILLED_WRITER = """
import os, signal, sys
import numpy as np
from pathlib import Path
from bitextdb.vectors import EdgeIndex

index = EdgeIndex(Path(sys.argv[1]))
if sys.argv[2] == "old":  # a shard made with a write-ahead log, as before
    import qdrant_edge as qe
    index._dir("en").mkdir(parents=True)
    qe.EdgeShard.create(str(index._dir("en")), qe.EdgeConfig(
        vectors=qe.EdgeVectorParams(size=8, distance=qe.Distance.Cosine))).close()
else:
    index.ensure("en", 8)
rows = np.random.default_rng(0).normal(size=(300, 8)).astype(np.float32)
index.upsert("en", np.arange(1, 301), rows)
index.set_band("en", "band_de", 3, np.arange(1, 101))
index.delete("en", np.arange(291, 301))
os.kill(os.getpid(), signal.SIGKILL)  # no close, no flush
"""


@pytest.mark.parametrize("made", ["new", "old"])
def test_what_edge_acknowledged_survives_a_kill(tmp_path: Path, made: str) -> None:
    """New shards keep no write-ahead log and flush before each change returns; shards
    made before keep their log. Either way a kill loses nothing that was acknowledged."""
    import subprocess
    import sys

    script = tmp_path / "writer.py"
    script.write_text(_KILLED_WRITER)
    root = tmp_path / "vectors"
    done = subprocess.run([sys.executable, str(script), str(root), made], capture_output=True)
    assert done.returncode == -9, done.stderr.decode()
    config = (root / "en" / "edge_config.json").read_text()
    assert ('"wal_enabled":false' in config) is (made == "new")
    index = EdgeIndex(root)
    try:
        assert index.count("en") == 290
        found, _ = index.retrieve("en", np.array([1, 150, 290, 291]))
        assert found.tolist() == [1, 150, 290]
        banded = index.search(
            "en", np.ones((1, 8), np.float32), 500, exact=True, band=("band_de", 3)
        )[0]
        assert sorted(hit.id for hit in banded) == list(range(1, 101))
    finally:
        index.close()


@pytest.mark.parametrize("content", ["{not json", "[1, 2]", '{"vectors": {}}'])
def test_an_unreadable_shard_configuration_is_one_clear_error(tmp_path: Path, content: str) -> None:
    index = EdgeIndex(tmp_path)
    index.ensure("en", 8)
    index.close()
    (tmp_path / "en" / "edge_config.json").write_text(content)
    with pytest.raises(ConfigError, match="Unreadable shard configuration"):
        EdgeIndex(tmp_path).dimension("en")


def test_edge_count_is_the_number_of_live_points(tmp_path: Path) -> None:
    """``count`` asks Qdrant Edge for its cheap count: it must equal the exact one after
    overwrites, deletions, a built HNSW graph and a reopen."""
    import qdrant_edge as qe

    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((1000, 8)).astype(np.float32)
    index = EdgeIndex(tmp_path / "vectors")
    index.ensure("en", 8)
    index.upsert("en", np.arange(1, 1001), vectors)
    index.upsert("en", np.arange(1, 101), vectors[100:200])
    index.delete("en", np.arange(1, 301))
    index.build_index("en")
    index.delete("en", np.arange(301, 401))
    index.upsert("en", np.arange(2000, 2050), vectors[:50])

    def exact(ix: EdgeIndex) -> int:
        return int(ix._shard("en").count(qe.CountRequest(exact=True)))

    assert index.count("en") == exact(index) == 650
    index.close()
    again = EdgeIndex(tmp_path / "vectors")
    assert again.count("en") == exact(again) == 650
    again.close()


# -- databases sharing one Qdrant --------------------------------------------------------------
def _server_home(tmp_path: Path, name: str, prefix: str) -> bitextdb.BitextDB:
    qdrant = f"local:{tmp_path / 'qdrant'}"
    if not (tmp_path / name).exists():
        bitextdb.init(
            tmp_path / name, qdrant=qdrant, qdrant_prefix=prefix, model="synthetic", dim=DIM
        ).close()
    return bitextdb.open(tmp_path / name, qdrant=qdrant, qdrant_prefix=prefix)


def test_a_prefix_that_begins_another_sees_only_its_own_collections(tmp_path: Path) -> None:
    """`bt` and `btx` on one Qdrant: `btxen` is no `xen` of the first database, so its
    check neither counts nor removes the second one's vectors."""
    with _server_home(tmp_path, "second", "btx") as db:
        db.ingest_embeddings("en", [f"en {i}" for i in range(6)], unit(6, 1))
    with _server_home(tmp_path, "first", "bt") as db:
        db.ingest_embeddings("de", [f"de {i}" for i in range(4)], unit(4, 2))
        report = db.check(repair=True)
        assert report.ok and set(report.languages) == {"de"}
    with _server_home(tmp_path, "second", "btx") as db:
        assert db.index.count("en") == 6 and db.check().ok


def test_a_second_database_under_the_same_prefix_is_refused(tmp_path: Path) -> None:
    with _server_home(tmp_path, "first", "bitextdb_") as db:
        db.ingest_embeddings("en", [f"en {i}" for i in range(6)], unit(6, 1))
    with _server_home(tmp_path, "second", "bitextdb_") as db:
        with pytest.raises(bitextdb.ConfigError, match="belongs to another bitextdb database"):
            db.ingest_embeddings("en", ["another"], unit(1, 3))
        assert db.check(repair=True).languages == {}  # nothing of the first one's taken
    with _server_home(tmp_path, "first", "bitextdb_") as db:
        assert db.index.count("en") == 6 and db.check().ok


def test_collections_made_before_owners_are_adopted(tmp_path: Path) -> None:
    with _server_home(tmp_path, "home", "bitextdb_") as db:
        db.ingest_embeddings("en", [f"en {i}" for i in range(6)], unit(6, 1))
        server = cast(ServerIndex, db.index)
        server.client.update_collection("bitextdb_en", metadata={OWNER_KEY: None})
        assert server.client.get_collection("bitextdb_en").config.metadata in (
            None,
            {},
            {OWNER_KEY: None},
        )
    with _server_home(tmp_path, "home", "bitextdb_") as db:
        assert db.index.count("en") == 6
        server = cast(ServerIndex, db.index)
        owner = server.client.get_collection("bitextdb_en").config.metadata[OWNER_KEY]
        assert owner == server.owner is not None


def test_init_again_with_another_prefix_is_refused_while_the_vectors_are_elsewhere(
    tmp_path: Path,
) -> None:
    """init took a new --qdrant-prefix on a database with vectors, and every later
    command found its vectors missing."""
    with _server_home(tmp_path, "home", "first_") as db:
        db.ingest_embeddings("en", [f"en {i}" for i in range(3)], unit(3, 1))
    qdrant = f"local:{tmp_path / 'qdrant'}"
    with pytest.raises(bitextdb.ConfigError, match=r"lack vectors .*\(en 0 of 3\)"):
        bitextdb.init(tmp_path / "home", qdrant=qdrant, qdrant_prefix="other_")
    with bitextdb.open(tmp_path / "home") as db:  # the home still names its own
        assert cast(ServerIndex, db.index).prefix == "first_"
        assert db.index.count("en") == 3 and db.check().ok
