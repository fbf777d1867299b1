"""The encoder in a child process: same vectors, clear errors, and ingest through it."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

import bitextdb
from bitextdb.config import Settings
from bitextdb.encoder import Encoder
from bitextdb.encoder_process import EncoderProcess, wants_encoder_process
from bitextdb.errors import ModelLoadError, ModelMismatchError
from tests.cli_helpers import mine_small_corpus


def test_the_child_gives_the_in_process_vectors(tiny_bert: Path) -> None:
    texts = [f"the dog sleeps in house {i}" for i in range(300)]
    child = EncoderProcess(str(tiny_bert), device="cpu", batch_size=16)
    try:
        assert (child.dim, child.device) == (32, "cpu")
        futures = [child.submit(texts[:150]), child.submit(texts[150:])]  # queued back to back
        queued = np.concatenate([child.wait(f) for f in futures])
        assert child.encode([]).shape == (0, 32)
        single = child.encode(texts)
        assert not list(child._spool.iterdir())  # each batch's file went once it was read
        child.submit(texts)  # never waited for: its file is removed on close
    finally:
        child.close()
    assert not child._spool.exists()
    expected = Encoder(str(tiny_bert), device="cpu", batch_size=16).encode(texts)
    assert np.allclose(single, expected, atol=1e-6)
    assert np.allclose(queued, expected, atol=1e-6)
    with pytest.raises(ModelLoadError, match="closed"):
        child.submit(texts)
    child.close()  # twice is harmless


def test_vector_folders_of_killed_parents_are_removed(
    tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    stale = tmp_path / f"bitextdb-vectors-{gone.pid}-abc"
    alive = tmp_path / f"bitextdb-vectors-{os.getpid()}-def"
    for folder in (stale, alive):
        folder.mkdir()
        (folder / "0.npy").write_bytes(b"25 MB of vectors")
    child = EncoderProcess(str(tiny_bert), device="cpu")
    try:
        assert not stale.exists()
        assert alive.exists()  # this process is still running: its folder stays
        assert child._spool.parent == tmp_path
    finally:
        child.close()


def test_a_model_that_cannot_load_is_one_clear_sentence(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="pass a local sentence-transformers model"):
        EncoderProcess(str(tmp_path / "no-such-model"), device="cpu")


def test_a_child_that_dies_is_reported(tiny_bert: Path) -> None:
    child = EncoderProcess(str(tiny_bert), device="cpu")
    try:
        assert child._pool is not None
        death = child._pool.submit(os._exit, 1)
        with pytest.raises(ModelLoadError, match="stopped unexpectedly"):
            child.wait(death)
    finally:
        child.close()


@pytest.mark.parametrize(
    ("device", "backend", "chosen", "expected"),
    [
        ("cuda", "torch", None, True),
        ("cuda:1", "torch", None, True),
        ("cuda:0,cuda:1", "torch", None, False),  # sentence-transformers' own pool
        ("cuda:0, ", "torch", None, True),  # one device, however written
        ("cpu", "torch", None, False),
        ("cpu", "onnx", None, False),
        ("cpu", "torch", True, True),
        ("cuda", "torch", False, False),
    ],
)
def test_when_the_child_is_used(
    device: str, backend: str, chosen: bool | None, expected: bool
) -> None:
    settings = Settings(device=device, backend=backend, encoder_process=chosen)
    assert wants_encoder_process(settings) is expected


def test_ingest_through_the_child_stores_the_same_pairs(home: Path, static_model: Path) -> None:
    pairs = {}
    vectors = {}
    for flag in ("--no-encoder-process", "--encoder-process"):
        pairs[flag] = mine_small_corpus(home / flag, static_model, flag)
        with bitextdb.open(home / flag) as db:
            vectors[flag] = db.index.retrieve("de", np.arange(1, 10))[1]
    assert pairs["--encoder-process"] == pairs["--no-encoder-process"]
    assert len(pairs["--no-encoder-process"]) == 3
    assert np.allclose(vectors["--encoder-process"], vectors["--no-encoder-process"], atol=1e-6)


def _refuse(texts: list[str]) -> None:  # runs in the child: importable, not local
    raise ModelLoadError("the GPU went away")


def test_a_failure_in_the_child_loses_nothing_stored(
    home: Path, tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child's error reaches the caller; the rerun encodes what was left unindexed."""
    lines = [f"sentence number {i} about a house" for i in range(20)]
    path = tmp_path / "en.txt"
    path.write_text("".join(f"{line}\n" for line in lines))
    with bitextdb.init(home, model=str(tiny_bert), dim=32, encoder_process=True) as db:
        assert isinstance(db.encoder, EncoderProcess)
        child = db.encoder._pool
        monkeypatch.setattr(db.encoder, "submit", lambda texts: child.submit(_refuse, texts))
        with pytest.raises(ModelLoadError, match="the GPU went away"):
            db.ingest(path, "en", mine=False)
        assert db.index.count("en") == 0
        monkeypatch.undo()
        report = db.ingest(path, "en", mine=False)["ingested"][0]
        assert report["new"] == 0
        assert db.index.count("en") == 20


def test_several_devices_share_the_work_through_the_pool(tiny_bert: Path) -> None:
    """``--device cuda:0,cuda:1`` takes this path; two CPU workers stand in for two GPUs."""
    texts = [f"my friend reads book {i}" for i in range(200)]
    pooled = Encoder(str(tiny_bert), device="cpu,cpu", batch_size=16)
    try:
        assert pooled.device == "cpu,cpu" and not pooled.pipelined
        vectors = pooled.encode(texts)
    finally:
        pooled.close()
    assert pooled._pool is None
    expected = Encoder(str(tiny_bert), device="cpu", batch_size=16).encode(texts)
    assert np.allclose(vectors, expected, atol=1e-6)


def test_a_model_of_the_wrong_size_is_refused_every_time(home: Path, tiny_bert: Path) -> None:
    import multiprocessing

    with bitextdb.init(home, model=str(tiny_bert), dim=16, encoder_process=True) as db:
        for _ in range(2):
            with pytest.raises(ModelMismatchError, match="32-dimensional"):
                db.encoder  # noqa: B018
        assert not multiprocessing.active_children()  # the refused child was stopped
