"""The pipeline's call of the model: the attention mask handed over ready-expanded."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bitextdb.encoder import PAD_MULTIPLE, Encoder
from bitextdb.model_forward import BatchForward, agree, expanded_bias

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
    """The number of dimensions of each attention mask the transformer is given (0: none);
    ``change``
    may replace a 4-D one (a model that refuses it, or reads it otherwise). The module's
    ``forward`` is wrapped, as sentence-transformers calls it directly (no hooks)."""
    seen: list[int] = []
    inner = _transformer(model)
    forward = inner.forward

    def watched(*args: Any, **kwargs: Any) -> Any:
        mask = kwargs.get("attention_mask")
        seen.append(0 if mask is None else mask.dim())
        if change is not None and mask is not None and mask.dim() == 4:
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
            forward(padded)  # the check: both calls, the model's own vectors returned
            assert forward.expanded is True and seen == [4, 2]
            seen.clear()
            got = [forward(padded), forward(uniform)]
    assert seen == [4, 4]
    for mine, theirs in zip(got, own, strict=True):
        assert torch.allclose(mine, theirs, atol=1e-6)


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
        forward(features)
        assert forward.expanded is False
        seen.clear()
        got = forward(features)
        own = encoder.model(dict(features))["sentence_embedding"]
    assert seen == [2, 2] and torch.equal(got, own)


@pytest.mark.parametrize("dtype", ["float16", "bfloat16", "float32"])
def test_vectors_agree_within_eight_units_in_the_last_place(dtype: str) -> None:
    """Of the batch's largest value, in the vectors' own precision."""
    kind = getattr(torch, dtype)
    unit = torch.finfo(kind).eps  # in the last place of 1.0, the largest value here
    theirs = torch.zeros((2, 3), dtype=kind)
    theirs[1, 2] = -1.0
    for units, same in ((0, True), (7, True), (8, True), (9, False), (16, False)):
        mine = theirs.clone()
        mine[0, 1] = units * unit  # exact: a small multiple of a power of two
        assert agree(mine, theirs) is same, units
    assert not agree(theirs[:1], theirs)  # another shape
    assert not agree(theirs.float() if dtype != "float32" else theirs.half(), theirs)


def test_the_check_measures_in_the_model_s_precision(tiny_bert: Path) -> None:
    """Attention logits moved by up to 0.02 move the vectors by less than a unit in the
    last place of float16, and by hundreds of float32's: taken in one, refused in the other."""
    generator = torch.Generator().manual_seed(0)

    def nudge(mask: Any) -> Any:
        noise = torch.rand(mask.shape, generator=generator) * 0.02
        return mask + noise.to(mask.dtype)

    for half in (False, True):
        encoder = Encoder(str(tiny_bert), device="cpu", pipelined=True)
        if half:
            encoder.model.half()
        forward = BatchForward(encoder.model)
        with torch.inference_mode(), _masks_seen(encoder.model, nudge):
            forward(_batch(encoder, TEXTS))
        assert forward.expanded is half


def test_a_batch_without_a_mask_is_called_as_usual(tiny_bert: Path) -> None:
    encoder = Encoder(str(tiny_bert), device="cpu", pipelined=True)
    features = {k: v for k, v in _batch(encoder, TEXTS).items() if k != "attention_mask"}
    forward = BatchForward(encoder.model)
    with torch.inference_mode(), _masks_seen(encoder.model) as seen:
        got = forward(features)
        own = encoder.model(dict(features))["sentence_embedding"]
    assert forward.expanded is False and seen == [0, 0]
    assert torch.equal(got, own)


def test_an_architecture_with_windowed_attention_is_never_given_it(tiny_bert: Path) -> None:
    """ModernBERT's and Gemma 3's sliding-window layers build a mask of their own from the
    2-D one, which a ready-made mask would skip: a check on a batch shorter than the window
    would not see it, so such a model is not checked but called as usual."""
    encoder = Encoder(str(tiny_bert), device="cpu", pipelined=True)
    config = next(m.config for m in encoder.model.modules() if hasattr(m, "config"))
    config.model_type = "modernbert"
    forward = BatchForward(encoder.model)
    assert forward.expanded is False
    with torch.inference_mode(), _masks_seen(encoder.model) as seen:
        forward(_batch(encoder, TEXTS))
    assert seen == [2]
    config.model_type = "bert"
    assert BatchForward(encoder.model).expanded is None  # checked on its first padded batch
    config.is_decoder = True  # causal attention: a mask of its own too
    assert BatchForward(encoder.model).expanded is False
    config.is_decoder = False


def test_the_pipeline_uses_it_and_can_be_told_not_to(tiny_bert: Path) -> None:
    """Also after it has been used: the setting takes effect at the next call."""
    plain = Encoder(str(tiny_bert), device="cpu").encode(TEXTS)
    encoder = Encoder(str(tiny_bert), device="cpu", pipelined=True)
    encoder.max_tokens = 64  # several batches
    for expand in (True, False, True):
        encoder.expand_mask = expand
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


def _failing_after(calls_let_through: int, error: Exception) -> Callable[[Any], Any]:
    """A change of the 4-D mask that lets the first calls through and then raises ``error``."""
    calls = [0]

    def change(mask: Any) -> Any:
        calls[0] += 1
        if calls[0] > calls_let_through:
            raise error
        return mask

    return change


@pytest.mark.parametrize("later", [False, True])
def test_a_model_that_refuses_the_expanded_mask_is_called_as_usual(
    tiny_bert: Path, later: bool
) -> None:
    """At the check, or on a later batch (then with a warning): its own call from then on."""
    encoder = Encoder(str(tiny_bert), device="cpu", pipelined=True)
    features = _batch(encoder, TEXTS)
    refuse = _failing_after(1 if later else 0, ValueError("no 4-D masks here"))
    forward = BatchForward(encoder.model)
    with torch.inference_mode(), _masks_seen(encoder.model, refuse) as seen:
        forward(features)
        assert forward.expanded is later
        seen.clear()
        got = forward(features)
        again = forward(features)
        own = encoder.model(dict(features))["sentence_embedding"]
    assert forward.expanded is False
    assert seen == ([4, 2, 2, 2] if later else [2, 2, 2])
    assert torch.equal(got, own) and torch.equal(again, own)


def test_running_out_of_memory_is_not_taken_for_a_refusal(tiny_bert: Path) -> None:
    encoder = Encoder(str(tiny_bert), device="cpu", pipelined=True)
    features = _batch(encoder, TEXTS)
    exhausted = _failing_after(1, torch.cuda.OutOfMemoryError("CUDA out of memory."))
    forward = BatchForward(encoder.model)
    with torch.inference_mode(), _masks_seen(encoder.model, exhausted):
        forward(features)
        with pytest.raises(torch.cuda.OutOfMemoryError):
            forward(features)
    assert forward.expanded is True


def _tiny_modernbert(path: Path) -> Path:
    """A random ModernBERT sentence model whose local layers see 8 tokens: a windowed
    architecture, like Gemma 3's."""
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Pooling
    from transformers import BertTokenizerFast, ModernBertConfig, ModernBertModel

    try:
        from sentence_transformers.base.modules import Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Transformer  # type: ignore[no-redef]

    from tests.models import _bert_vocab

    (path / "vocab").mkdir(parents=True)
    (path / "vocab" / "vocab.txt").write_text("\n".join(_bert_vocab()) + "\n", encoding="utf-8")
    tokenizer = BertTokenizerFast.from_pretrained(str(path / "vocab"), model_max_length=128)
    specials = {
        "pad_token_id": tokenizer.pad_token_id,
        "cls_token_id": tokenizer.cls_token_id,
        "sep_token_id": tokenizer.sep_token_id,
        "bos_token_id": tokenizer.cls_token_id,
        "eos_token_id": tokenizer.sep_token_id,
    }
    config = ModernBertConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=128,
        local_attention=8,
        global_attn_every_n_layers=3,
        initializer_range=0.3,
        **specials,
    )
    torch.manual_seed(0)
    ModernBertModel(config).save_pretrained(str(path / "hf"))
    tokenizer.save_pretrained(str(path / "hf"))
    transformer = Transformer(str(path / "hf"), max_seq_length=128)
    model = SentenceTransformer(modules=[transformer, Pooling(32, pooling_mode="mean")])
    model.save(str(path / "st"))
    return path / "st"


def test_a_windowed_model_keeps_its_own_vectors_after_a_short_first_batch(
    tmp_path: Path,
) -> None:
    """A first batch shorter than the window cannot show that a ready-made mask drops the
    window; the longer batches after it would then be wrong. They are the model's own."""
    model = str(_tiny_modernbert(tmp_path))
    encoder = Encoder(model, device="cpu", pipelined=True)
    own = Encoder(model, device="cpu", pipelined=True)
    own.expand_mask = False
    short, long = ["a b", "a b c"], ["word " * 40, "other words " * 10]
    encoder.encode(short)
    assert np.allclose(encoder.encode(long), own.encode(long), atol=1e-5)
    assert encoder._forward is not None and encoder._forward.expanded is False
