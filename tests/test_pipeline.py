"""The staged pipeline and the encoder's batching helpers."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bitextdb.encoder import Encoder, _prefetch
from bitextdb.errors import ConfigError
from bitextdb.pipeline import run_stages
from bitextdb.tokens import pad_to_multiple, round_up


def test_stages_keep_order_and_overlap() -> None:
    seen_threads: set[str] = set()

    def slow_double(x: int) -> int:
        seen_threads.add(threading.current_thread().name)
        time.sleep(0.01)
        return 2 * x

    out = list(run_stages(range(50), [slow_double, lambda x: x + 1], depth=2))
    assert out == [2 * x + 1 for x in range(50)]
    assert all(name.startswith("bitextdb-stage") for name in seen_threads)


def test_busy_seconds_name_the_slow_stage() -> None:
    def source():  # type: ignore[no-untyped-def]
        for i in range(5):
            time.sleep(0.002)
            yield i

    def slow(x: int) -> int:
        time.sleep(0.05)
        return x

    busy = [0.0, 0.0, 0.0]
    assert list(run_stages(source(), [slow, lambda x: x], depth=1, busy=busy)) == list(range(5))
    reading, slow_stage, quick_stage = busy
    assert slow_stage >= 5 * 0.05
    assert 5 * 0.002 <= reading < slow_stage / 2  # its waits on the full queue are not counted
    assert quick_stage < slow_stage / 10  # nor are the other stage's waits for items


def test_busy_needs_a_slot_for_the_items_and_each_stage() -> None:
    with pytest.raises(ValueError, match="one slot"):
        list(run_stages(range(3), [lambda x: x], busy=[0.0]))


def test_a_failing_stage_stops_the_pipeline_and_raises_here() -> None:
    def boom(x: int) -> int:
        if x == 7:
            raise ValueError("bad item 7")
        return x

    produced: list[int] = []

    def source():  # type: ignore[no-untyped-def]
        for i in range(10_000):
            produced.append(i)
            yield i

    with pytest.raises(ValueError, match="bad item 7"):
        list(run_stages(source(), [boom, lambda x: x], depth=2))
    assert len(produced) < 100  # bounded queues: the feeder did not run away
    assert not [t for t in threading.enumerate() if t.name.startswith("bitextdb-")]


def test_a_failing_source_raises_too() -> None:
    def source():  # type: ignore[no-untyped-def]
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(run_stages(source(), [lambda x: x]))


def test_prefetch_yields_everything_and_reraises() -> None:
    assert list(_prefetch(iter(range(20)), depth=3)) == list(range(20))

    def bad():  # type: ignore[no-untyped-def]
        yield 1
        raise RuntimeError("tokenizer failed")

    with pytest.raises(RuntimeError, match="tokenizer failed"):
        list(_prefetch(bad(), depth=2))


def test_token_batches_cover_every_text_once_longest_first(tiny_bert: Path) -> None:
    encoder = Encoder(str(tiny_bert), device="cpu")
    encoder.max_tokens = 200
    texts = ["word " * n for n in (3, 40, 1, 25, 7, 60, 2)] * 5
    batches = encoder.token_batches(texts)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(len(texts)))
    tokens = encoder.token_lengths(texts)
    assert tokens.tolist() == [len(encoder.model.tokenizer(t)["input_ids"]) for t in texts]
    ordered = [int(tokens[i]) for i in flat]
    assert ordered == sorted(ordered, reverse=True)
    for batch in batches:  # a batch holds about max_tokens padded tokens, at least one text
        padded = round_up(int(max(tokens[batch])), encoder.pad_multiple)
        assert len(batch) == 1 or len(batch) * padded <= encoder.max_tokens


def test_pipelined_batches_repeat_their_shapes(tiny_bert: Path) -> None:
    """Lengths padded to a multiple of 8 and batches sized from the padded length: a corpus
    of many lengths gives few distinct (batch, length) shapes, each new one costing the GPU
    a slow first run."""
    encoder = Encoder(str(tiny_bert), device="cpu")
    encoder.max_tokens = 256
    texts = ["word " * (n % 61 + 1) for n in range(600)]

    def shapes() -> set[tuple[int, ...]]:
        return {tuple(f["input_ids"].shape) for _, f in encoder._batch_features(texts)}

    padded = shapes()
    assert all(length % 8 == 0 for _, length in padded)
    encoder.pad_multiple = 1
    exact = shapes()
    assert len(padded) <= len(exact) // 4  # 63 lengths: 63 shapes and more, or 8 buckets
    assert len(padded) <= 2 * 8


def test_pad_to_multiple_pads_ids_with_the_pad_id_and_masks_with_zero() -> None:
    torch = pytest.importorskip("torch")
    features = {
        "input_ids": torch.tensor([[101, 7, 102], [101, 102, 0]]),
        "attention_mask": torch.tensor([[1, 1, 1], [1, 1, 0]]),
        "token_type_ids": torch.zeros(2, 3, dtype=torch.long),
        "prompt_length": 0,
    }
    right = pad_to_multiple(features, 4, pad_id=5)
    assert right["input_ids"].tolist() == [[101, 7, 102, 5], [101, 102, 0, 5]]
    assert right["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 1, 0, 0]]
    assert right["token_type_ids"].shape == (2, 4) and right["prompt_length"] == 0
    left = pad_to_multiple(features, 4, pad_id=5, left=True)
    assert left["input_ids"].tolist() == [[5, 101, 7, 102], [5, 101, 102, 0]]
    assert left["attention_mask"].tolist() == [[0, 1, 1, 1], [0, 1, 1, 0]]
    assert pad_to_multiple(features, 3, pad_id=5) is features  # already a multiple
    assert pad_to_multiple(features, 1, pad_id=5) is features
    assert [round_up(v, 8) for v in (1, 8, 9, 16)] == [8, 8, 16, 16] and round_up(5, 1) == 5


def test_pipelined_encoding_equals_plain_encoding(tiny_bert: Path) -> None:
    """The CUDA pipeline's code path, run on the CPU, gives the same vectors in order."""
    encoder = Encoder(str(tiny_bert), device="cpu")
    texts = [f"sentence number {i} " + "word " * (i % 13) for i in range(70)]
    plain = encoder.encode(texts)
    encoder.max_tokens = 64
    piped = encoder._encode_pipelined(texts)
    assert np.allclose(plain, piped, atol=1e-5)
    encoder.pad_multiple, encoder.attention_backends = 1, None  # unpadded, any kernel
    assert np.allclose(encoder._encode_pipelined(texts), piped, atol=1e-5)


def test_the_cuda_pipeline_can_be_forced_on_for_the_cpu(tiny_bert: Path) -> None:
    """``pipelined=True`` runs the GPU path's code on the CPU, in float32 (the benchmarks'
    CPU proxy), with the default path's vectors; it needs one torch model on one device."""
    import torch

    texts = [f"sentence number {i} " + "word " * (i % 11) for i in range(40)]
    plain = Encoder(str(tiny_bert), device="cpu")
    forced = Encoder(str(tiny_bert), device="cpu", pipelined=True)
    assert not plain.pipelined and forced.pipelined
    assert next(forced.model.parameters()).dtype == torch.float32
    prepared = forced.prepare(texts)
    assert prepared.batches is not None  # tokenized and cut into batches, as on a GPU
    want = plain.encode(texts)
    assert np.allclose(forced.run(prepared), want, atol=1e-5)
    with pytest.raises(ConfigError, match="one torch model on one device"):
        Encoder(str(tiny_bert), device="cpu,cpu", pipelined=True)


def test_a_long_call_is_prepared_a_chunk_ahead(
    tiny_bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On the GPU path a call longer than PREPARE_CHUNK is tokenized chunk by chunk, each
    chunk while the model runs the one before, and gives the one-pass vectors in order."""
    import bitextdb.encoder as encoder_module

    encoder = Encoder(str(tiny_bert), device="cpu", pipelined=True)  # as on a CUDA device
    texts = [f"sentence number {i} " + "word " * (i % 17) for i in range(100)]
    whole = encoder._encode_pipelined(texts)
    monkeypatch.setattr(encoder_module, "PREPARE_CHUNK", 30)
    prepared: list[int] = []
    prepare = encoder.prepare

    def counted(chunk: list[str]) -> encoder_module.Prepared:
        prepared.append(len(chunk))
        return prepare(chunk)

    monkeypatch.setattr(encoder, "prepare", counted)
    events: list[str] = []
    launch = encoder.launch

    def launched(job: encoder_module.Prepared) -> encoder_module.Encoded:
        events.append(f"launch {len(job.texts)}")
        return launch(job)

    collect = encoder_module.Encoded.vectors

    def collected(self: encoder_module.Encoded) -> np.ndarray:
        events.append(f"collect {self.count}")
        return collect(self)

    monkeypatch.setattr(encoder, "launch", launched)
    monkeypatch.setattr(encoder_module.Encoded, "vectors", collected)
    assert np.allclose(encoder.encode(texts), whole, atol=1e-5)
    assert prepared == [30, 30, 30, 10]
    # each chunk's vectors are collected once the next chunk is launched, not before
    assert events == [
        *("launch 30", "launch 30", "collect 30"),
        *("launch 30", "collect 30"),
        *("launch 10", "collect 30", "collect 10"),
    ]
