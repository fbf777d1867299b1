"""One tokenizer pass per call, batches padded from its ids (bitextdb.tokens)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bitextdb import tokens
from bitextdb.encoder import Encoder, preprocessor
from bitextdb.tokens import DirectTokenizer, TokenIds, direct_tokenizer

TEXTS = [
    "The house is small.",
    "a",
    "",
    "Ünïcödé wörds, punctuation!? and numbers 12345",
    "word " * 300,  # past the model's maximum length: truncated
    "Das Haus ist klein und die Katze schläft.",
]


def test_token_ids_pad_right_and_left_to_a_multiple() -> None:
    tokens = TokenIds([[5, 6, 7], [8], [9, 10]])
    ids, mask = tokens.padded(np.array([2, 0]), multiple=4, pad_id=0)
    assert ids.tolist() == [[9, 10, 0, 0], [5, 6, 7, 0]]
    assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 0]]
    ids, mask = tokens.padded(np.array([1, 0]), multiple=1, pad_id=-1, left=True)
    assert ids.tolist() == [[-1, -1, 8], [5, 6, 7]]
    assert mask.tolist() == [[0, 0, 1], [1, 1, 1]]
    assert tokens.lengths.tolist() == [3, 1, 2]
    ids, mask = TokenIds([[], []]).padded(np.array([0, 1]), multiple=8, pad_id=0)
    assert ids.shape == mask.shape == (2, 8) and not mask.any()


def test_direct_features_equal_the_models_own_preprocess(tiny_bert: Path) -> None:
    encoder = Encoder(str(tiny_bert), device="cpu")
    direct = direct_tokenizer(encoder.model)
    assert isinstance(direct, DirectTokenizer)
    assert direct.agrees(TEXTS)
    got = direct.features(direct.token_ids(TEXTS), np.arange(len(TEXTS)), multiple=1)
    want = preprocessor(encoder.model)(TEXTS)
    assert set(got) == set(want)
    for key, value in want.items():
        if torch.is_tensor(value):
            assert torch.equal(got[key], value), key
        else:
            assert got[key] == value
    assert got["input_ids"].shape[1] == encoder.model.max_seq_length  # the long text


def test_a_tokenizer_that_disagrees_is_not_used(tiny_bert: Path) -> None:
    """Truncating at another length than the model's: the probe says no, and the pipeline
    falls back to the model's preprocess, batch by batch, with the same vectors."""
    encoder = Encoder(str(tiny_bert), device="cpu")
    tokenizer = encoder.model.tokenizer
    wrong = DirectTokenizer(encoder.model, tokenizer.backend_tokenizer, max_length=8)
    assert not wrong.agrees(TEXTS)
    encoder._direct = wrong
    texts = [f"sentence {i} " + "word " * (i % 17) for i in range(40)]
    assert np.allclose(encoder._encode_pipelined(texts), encoder.encode(texts), atol=1e-5)


def test_pipeline_tokenizes_each_text_once(
    tiny_bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    encoder = Encoder(str(tiny_bert), device="cpu")
    texts = [f"sentence {i} " + "word " * (i % 23) for i in range(300)]
    plain = encoder.encode(texts)
    seen: list[int] = []
    direct = direct_tokenizer(encoder.model)
    assert direct is not None
    original = direct.token_ids
    monkeypatch.setattr(direct, "token_ids", lambda t: seen.append(len(t)) or original(t))
    encoder._direct = direct
    encoder.max_tokens = 256
    assert np.allclose(encoder._encode_pipelined(texts), plain, atol=1e-5)
    assert seen[1:] == [len(texts)] and seen[0] <= 8  # the probe's few, then one pass


def test_a_model_without_a_fast_tokenizer_keeps_the_batch_path(static_model: Path) -> None:
    encoder = Encoder(str(static_model), device="cpu")
    texts = ["the house", "das Haus ist klein", "la casa", "house"] * 5
    assert np.allclose(encoder._encode_pipelined(texts), encoder.encode(texts), atol=1e-5)
    assert encoder._direct is False or not encoder._direct.agrees(texts)


def test_token_ids_come_in_passes_of_a_few_texts(
    tiny_bert: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tokenizer is given a few texts a pass (it holds the interpreter lock while it
    wraps and frees each pass's encodings); the ids are those of one pass over all."""
    encoder = Encoder(str(tiny_bert), device="cpu")
    direct = direct_tokenizer(encoder.model)
    assert direct is not None
    whole = direct.token_ids(TEXTS)
    sizes: list[int] = []
    backend = direct.backend

    class Counting:
        def encode_batch_fast(self, texts: list[str], **options: object) -> list:
            sizes.append(len(texts))
            return backend.encode_batch_fast(texts, **options)

        encode_batch = encode_batch_fast

    monkeypatch.setattr(tokens, "TOKENIZE_TEXTS", 4)
    direct.backend = Counting()
    parts = direct.token_ids(TEXTS)
    assert sizes == [4, 2]
    assert parts.lengths.tolist() == whole.lengths.tolist()
    assert parts.flat.tolist() == whole.flat.tolist()
