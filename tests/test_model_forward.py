"""The pipeline's call of the model: the attention mask handed over ready-expanded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bitextdb.encoder import PAD_MULTIPLE, Encoder
from bitextdb.model_forward import BatchForward, expanded_bias

torch = pytest.importorskip("torch")


def _batch(encoder: Encoder, texts: list[str]) -> dict[str, Any]:
    """The first prepared batch of ``texts``: the pipeline's own features."""
    prepared = encoder.prepare(texts)
    assert prepared.batches is not None
    _, features = next(iter(prepared.batches))
    return features


def _transformer(model: Any) -> Any:
    """The transformers model inside a SentenceTransformer."""
    from transformers import PreTrainedModel

    return next(m for m in model.modules() if isinstance(m, PreTrainedModel))


@contextmanager
def _masks_seen(model: Any, change: Callable[[Any], Any] | None = None) -> Iterator[list[int]]:
    """The number of dimensions of each attention mask the transformer is given; ``change``
    may replace a 4-D one (a model that refuses it, or reads it otherwise). The module's
    ``forward`` is wrapped, as sentence-transformers calls it directly (no hooks)."""
    seen: list[int] = []
    inner = _transformer(model)
    forward = inner.forward

    def watched(*args: Any, **kwargs: Any) -> Any:
        mask = kwargs["attention_mask"]
        seen.append(mask.dim())
        if change is not None and mask.dim() == 4:
            kwargs["attention_mask"] = change(mask)
        return forward(*args, **kwargs)

    inner.forward = watched
    try:
        yield seen
    finally:
        del inner.forward


def _unpadded(encoder: Encoder, texts: list[str]) -> dict[str, Any]:
    """A batch of ``texts`` of one length, not padded to a multiple: no padding at all."""
    encoder.pad_multiple = 1
    features = _batch(encoder, texts)
    encoder.pad_multiple = PAD_MULTIPLE
    assert bool((features["attention_mask"] == 1).all())
    return features


TEXTS = [f"sentence number {i} " + "word " * (i % 9) for i in range(24)]


def test_the_bias_is_zero_for_tokens_and_lowest_for_padding() -> None:
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    bias = expanded_bias(mask, torch.float16)
    lowest = torch.finfo(torch.float16).min
    assert bias.shape == (2, 1, 1, 3) and bias.dtype == torch.float16
    assert bias[:, 0, 0].tolist() == [[0.0, 0.0, lowest], [0.0, 0.0, 0.0]]


def test_the_transformer_gets_the_expanded_mask_and_the_same_vectors(tiny_bert: Path) -> None:
    """After the first batch's check every call hands the transformer a 4-D mask (so it
    does not ask whether the mask is all ones), and the embeddings are the model's own."""
    encoder = Encoder(str(tiny_bert), device="cpu", pipelined=True)
    padded = _batch(encoder, TEXTS)
    assert (padded["attention_mask"] == 0).any()  # the check must see padding
    uniform = _unpadded(encoder, ["same length here"] * 5)
    forward = BatchForward(encoder.model)
    with torch.inference_mode():
        own = [encoder.model(dict(f))["sentence_embedding"] for f in (padded, uniform)]
        with _masks_seen(encoder.model) as seen:
            first = forward(padded)
            assert forward.expanded is True
            seen.clear()  # the check called the model both ways
            got = [forward(padded), forward(uniform)]
    assert seen == [4, 4]
    assert torch.equal(first, own[0])
    for mine, theirs in zip(got, own, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-6)


def test_a_model_that_refuses_the_expanded_mask_is_called_as_usual(tiny_bert: Path) -> None:
    encoder = Encoder(str(tiny_bert), device="cpu", pipelined=True)
    features = _batch(encoder, TEXTS)

    def refuse(mask: Any) -> Any:
        raise ValueError("no 4-D masks here")

    forward = BatchForward(encoder.model)
    with torch.inference_mode(), _masks_seen(encoder.model, refuse) as seen:
        got = forward(features)
        assert forward.expanded is False
        seen.clear()
        again = forward(features)
        own = encoder.model(dict(features))["sentence_embedding"]
    assert seen == [2, 2]
    assert torch.equal(got, own) and torch.equal(again, own)


@pytest.mark.parametrize("half", [False, True])
def test_a_model_that_reads_the_expanded_mask_otherwise_is_called_as_usual(
    tiny_bert: Path, half: bool
) -> None:
    """Vectors that differ from the model's own on the first batch turn the expanded mask
    off for good: here a model that would attend to padding."""
    encoder = Encoder(str(tiny_bert), device="cpu", pipelined=True)
    if half:
        encoder.model.half()
    features = _batch(encoder, TEXTS)
    uniform = _unpadded(encoder, ["same length here"] * 5)
    forward = BatchForward(encoder.model)
    with torch.inference_mode(), _masks_seen(encoder.model, torch.zeros_like) as seen:
        forward(uniform)  # without padding the two calls agree here: not decided yet
        assert forward.expanded is None
        got = forward(features)
        own = encoder.model(dict(features))["sentence_embedding"]
    assert forward.expanded is False
    assert seen[-1] == 2 and torch.equal(got, own)


def test_the_check_allows_rounding_in_half_precision_only(tiny_bert: Path) -> None:
    """Vectors a few roundings apart (here: attention logits moved by up to 0.02) pass the
    check in float16 and fail it in float32: it allows eight units in the last place."""
    generator = torch.Generator().manual_seed(0)

    def nudge(mask: Any) -> Any:
        noise = torch.rand(mask.shape, generator=generator) * 0.02
        return mask + noise.to(mask.dtype)

    for half in (False, True):
        encoder = Encoder(str(tiny_bert), device="cpu", pipelined=True)
        if half:
            encoder.model.half()
        features = _batch(encoder, TEXTS)
        forward = BatchForward(encoder.model)
        with torch.inference_mode(), _masks_seen(encoder.model, nudge):
            got = forward(features)
            own = encoder.model(dict(features))["sentence_embedding"]
        assert forward.expanded is half
        assert got.dtype == (torch.float16 if half else torch.float32)
        assert torch.allclose(got.float(), own.float(), rtol=1e-2, atol=1e-3)


def test_the_pipeline_uses_it_and_can_be_told_not_to(tiny_bert: Path) -> None:
    plain = Encoder(str(tiny_bert), device="cpu").encode(TEXTS)
    for expand in (True, False):
        encoder = Encoder(str(tiny_bert), device="cpu", pipelined=True)
        encoder.expand_mask = expand
        encoder.max_tokens = 64  # several batches
        with _masks_seen(encoder.model) as seen:
            vectors = encoder.encode(TEXTS)
        assert encoder._forward is not None and encoder._forward.expanded is expand
        assert set(seen[2:]) == ({4} if expand else {2})  # after the first batch's check
        assert np.allclose(vectors, plain, atol=1e-5)


def test_a_model_converted_after_its_check_gets_a_bias_of_its_new_type(tiny_bert: Path) -> None:
    """(A GPU's attention refuses a bias of another type than the model's.)"""
    encoder = Encoder(str(tiny_bert), device="cpu", pipelined=True)
    features = _batch(encoder, TEXTS)
    forward = BatchForward(encoder.model)
    types: list[Any] = []

    def note(mask: Any) -> Any:
        types.append(mask.dtype)
        return mask

    with torch.inference_mode(), _masks_seen(encoder.model, note):
        forward(features)
        encoder.model.half()
        got = forward(features)
        own = encoder.model(dict(features))["sentence_embedding"]
    assert forward.expanded is True
    assert types == [torch.float32, torch.float16]
    assert got.dtype == torch.float16 and torch.allclose(got.float(), own.float(), atol=1e-3)


def test_a_later_batch_the_model_refuses_falls_back_for_good(tiny_bert: Path) -> None:
    encoder = Encoder(str(tiny_bert), device="cpu", pipelined=True)
    features = _batch(encoder, TEXTS)
    calls = [0]

    def refuse_after_the_check(mask: Any) -> Any:
        calls[0] += 1
        if calls[0] > 1:
            raise RuntimeError("not this shape")
        return mask

    forward = BatchForward(encoder.model)
    with torch.inference_mode(), _masks_seen(encoder.model, refuse_after_the_check) as seen:
        forward(features)
        assert forward.expanded is True
        seen.clear()
        got = forward(features)
        again = forward(features)
        own = encoder.model(dict(features))["sentence_embedding"]
    assert forward.expanded is False and seen == [4, 2, 2, 2]
    assert torch.equal(got, own) and torch.equal(again, own)
