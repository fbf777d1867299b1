"""The encoder in a child process: same vectors, clear errors, and ingest through it."""

from __future__ import annotations

import gc
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

import bitextdb
from bitextdb.config import Settings
from bitextdb.encoder import Encoded, Encoder, Prepared
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
    texts = [f"the dog sleeps in house {i}" for i in range(20_000)]
    child = EncoderProcess(str(tiny_bert), device="cpu")
    try:
        assert child.pid is not None
        pending = child.submit(texts)  # still being tokenized or encoded when it dies
        os.kill(child.pid, signal.SIGKILL)
        with pytest.raises(ModelLoadError, match="stopped unexpectedly"):
            child.wait(pending)
        with pytest.raises(ModelLoadError, match="stopped unexpectedly"):
            child.encode(texts[:3])  # and so is every later call
    finally:
        child.close()
    assert child._process.exitcode == -signal.SIGKILL


def test_an_interrupted_child_stops_quietly(
    tiny_bert: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """Ctrl-C reaches the child too (and close() interrupts a busy one): it stops where it
    is and exits without a traceback; the parent reports its calls as stopped."""
    texts = [f"the dog sleeps in house {i}" for i in range(20_000)]
    child = EncoderProcess(str(tiny_bert), device="cpu")
    try:
        assert child.pid is not None
        pending = child.submit(texts)
        os.kill(child.pid, signal.SIGINT)
        with pytest.raises(ModelLoadError, match="stopped unexpectedly"):
            child.wait(pending)
    finally:
        child.close()
    assert child._process.exitcode == 0
    assert "Traceback" not in capfd.readouterr().err


def test_an_error_in_one_call_leaves_the_others(tiny_bert: Path) -> None:
    """The child's error is raised in the parent, with its type, message and traceback;
    the calls queued around it are encoded."""
    texts = [f"the dog sleeps in house {i}" for i in range(40)]
    child = EncoderProcess(str(tiny_bert), device="cpu")
    try:
        before, bad, after = child.submit(texts), child.submit([None]), child.submit(texts)
        with pytest.raises((TypeError, ValueError), match="NoneType") as raised:
            child.wait(bad)
        assert "Traceback" in str(raised.value.__cause__)
        assert np.allclose(child.wait(before), child.wait(after))
    finally:
        child.close()


@pytest.mark.parametrize(
    ("device", "backend", "chosen", "expected"),
    [
        ("cuda", "torch", None, True),
        ("cuda:1", "torch", None, True),
        ("cuda:0,cuda:1", "torch", None, False),  # sentence-transformers' own pool
        ("cuda:0,cuda:1", "torch", True, False),  # ... which a child could not start
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


def test_a_failure_in_the_child_loses_nothing_stored(
    home: Path, tiny_bert: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The child's error reaches the caller; the rerun encodes what was left unindexed."""
    lines = [f"sentence number {i} about a house" for i in range(20)]
    path = tmp_path / "en.txt"
    path.write_text("".join(f"{line}\n" for line in lines))
    with bitextdb.init(home, model=str(tiny_bert), dim=32, encoder_process=True) as db:
        assert isinstance(db.encoder, EncoderProcess)
        submit = db.encoder.submit
        monkeypatch.setattr(db.encoder, "submit", lambda texts: submit([None] * len(texts)))
        with pytest.raises((TypeError, ValueError), match="NoneType"):  # raised in the child
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
    with bitextdb.init(home, model=str(tiny_bert)) as db:  # init itself refuses --dim 16
        db.settings.dim = 16
        db.db.save_settings(db.settings)  # as if the folder had been replaced since
    with bitextdb.open(home, encoder_process=True) as db:
        for _ in range(2):
            with pytest.raises(ModelMismatchError, match="32-dimensional"):
                db.encoder  # noqa: B018
        assert not multiprocessing.active_children()  # the refused child was stopped


class _Recorder:
    """Stands in for the child's encoder: ``launch`` of the first call waits until the
    second has been prepared, which only happens if preparing goes on while the model
    runs; the first call's vectors are ready only once the second has been launched, which
    only happens if they are waited for apart from the model's thread."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.next_prepared = threading.Event()
        self.second_ran = threading.Event()

    def prepare(self, texts: list[str]) -> Prepared:
        self.events.append(f"prepare {texts[0]}")
        if texts[0] == "second":
            self.next_prepared.set()
        return Prepared(texts)

    def launch(self, job: Prepared) -> Encoded:
        if job.texts[0] == "first":
            assert self.next_prepared.wait(30), "the next call was not prepared meanwhile"
        self.events.append(f"run {job.texts[0]}")
        if job.texts[0] == "second":
            self.second_ran.set()
        vectors = np.zeros((len(job.texts), 2), dtype=np.float32)
        return _Later(vectors, self) if job.texts[0] == "first" else Encoded.ready(vectors)


class _Later(Encoded):
    """Vectors that come once the model's thread has launched the call after."""

    def __init__(self, vectors: np.ndarray, recorder: _Recorder) -> None:
        super().__init__(*vectors.shape, [(np.arange(len(vectors)), torch.from_numpy(vectors))])
        self.recorder = recorder

    def vectors(self) -> np.ndarray:
        assert self.recorder.second_ran.wait(30), "the model's thread waited for the vectors"
        self.recorder.events.append("copied first")
        return super().vectors()


def test_the_child_prepares_and_saves_while_the_model_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three calls: the second is prepared while the model runs the first, and the first's
    vectors are saved while the model runs the second; the answers come in order."""
    from multiprocessing.connection import Pipe

    from bitextdb import encoder_process

    encoder = _Recorder()
    save = encoder_process._save

    def slow_save(path: str, vectors: np.ndarray) -> None:
        if path.endswith("0.npy"):
            assert encoder.second_ran.wait(30), "the model waited for the first save"
            encoder.events.append("saved first")
        save(path, vectors)

    monkeypatch.setattr(encoder_process, "_save", slow_save)
    child_requests, requests = Pipe(duplex=False)
    replies, child_replies = Pipe(duplex=False)
    for number, text in enumerate(["first", "second", "third"]):
        requests.send((number, [text], str(tmp_path / f"{number}.npy")))
    requests.send(None)
    encoder_process._work(encoder, child_requests, child_replies, threading.Event())
    answers = [replies.recv() for _ in range(3)]
    assert [(kind, number) for kind, number, _ in answers] == [("done", n) for n in range(3)]
    assert encoder.events.index("prepare second") < encoder.events.index("run first")
    assert encoder.events.index("run second") < encoder.events.index("copied first")
    assert encoder.events.index("copied first") < encoder.events.index("saved first")
    runs = [event for event in encoder.events if event.startswith("run")]
    assert runs == ["run first", "run second", "run third"]
    assert np.load(answers[2][2]).shape == (1, 2)


@pytest.mark.slow
def test_several_devices_ingest_and_mine(home: Path, static_model: Path) -> None:
    """Encoding shares the devices; the kNN runs on the first (it used to take the whole
    list for one device name and stop at the mine)."""
    assert mine_small_corpus(home / "pool", static_model, "--device", "cpu,cpu") == (
        mine_small_corpus(home / "one", static_model, "--device", "cpu")
    )


def test_device_lists(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from bitextdb.config import check_device, device_list
    from bitextdb.errors import ConfigError
    from bitextdb.knn import pick_device

    assert device_list(" cuda:0, cuda:1 ,") == ["cuda:0", "cuda:1"]
    assert pick_device("cpu,cpu") == torch.device("cpu")
    assert pick_device("auto").type in ("cpu", "cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    assert device_list("all") == ["cuda:0", "cuda:1", "cuda:2"]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 0)
    with pytest.raises(ConfigError, match="found no CUDA device"):
        device_list("all")
    with pytest.raises(ConfigError, match="stands alone"):
        device_list("all,cpu")
    for nothing in ("", ",,", " , "):
        with pytest.raises(ConfigError, match="names no device"):
            check_device(nothing)
    assert check_device("cpu,") == "cpu,"  # one device, however written
    # a device the machine lacks is said so, in one sentence, before anything runs on it
    with pytest.raises(ConfigError, match="--device cuda: this machine has no GPU"):
        pick_device("cuda")
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ConfigError, match="cuda:1: this machine has only 1 CUDA device;"):
        pick_device("cuda:1,cuda:0")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no Apple GPU"):
        pick_device("mps")


def test_the_child_freezes_what_it_loaded_before_it_works(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once the model is loaded, full collections in the child skip it and the libraries
    (bitextdb.heap): they held up the thread launching the model for 220 ms and more."""
    from multiprocessing.connection import Pipe

    from bitextdb import encoder_process

    class Loaded:
        dim, device = 2, "cpu"

        def close(self) -> None:
            pass

    frozen: list[int] = []
    monkeypatch.setattr(encoder_process, "Encoder", lambda model, **options: Loaded())
    monkeypatch.setattr(
        encoder_process, "_work", lambda *args: frozen.append(gc.get_freeze_count())
    )
    child_requests, _ = Pipe(duplex=False)
    replies, child_replies = Pipe(duplex=False)
    try:
        encoder_process._serve("m", {}, child_requests, child_replies, threading.Event())
    finally:
        gc.unfreeze()  # this is the test's process, not a child of its own
    assert replies.recv()[0] == "ready"
    assert frozen and frozen[0] > 0
