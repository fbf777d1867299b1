"""Checks of the tiny local test models in :mod:`tests.models`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

try:  # tests/ as a package (tests/__init__.py) or rootdir on sys.path
    from tests.models import (
        LANGS,
        LEXICON,
        build_static_crosslingual,
        build_tiny_bert,
        random_sentences,
        translate,
    )
except ImportError:  # pytest's default rootdir-less "prepend" import of tests/
    from models import (
        LANGS,
        LEXICON,
        build_static_crosslingual,
        build_tiny_bert,
        random_sentences,
        translate,
    )

from sentence_transformers import SentenceTransformer

UNICODE_TEXTS = [
    "Hello, world!",
    "Der Hund schläft in dem Haus. Straße, Größe, Übung.",
    "El niño come pan en el jardín. ¿Dónde está? ¡Sí!",
    "日本語のテキスト、中文文本",
    "emoji 🙂👍🏽 and a zero\u200bwidth space, e\u0301 combining",
    "",
    "   ",
    "x " * 400,
]


@pytest.fixture(scope="module")
def tiny_bert_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_bert(tmp_path_factory.mktemp("tiny_bert"), dim=32)


@pytest.fixture(scope="module")
def tiny_bert(tiny_bert_path: Path) -> SentenceTransformer:
    return SentenceTransformer(str(tiny_bert_path), device="cpu")


@pytest.fixture(scope="module")
def static_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_static_crosslingual(tmp_path_factory.mktemp("static"), dim=64, seed=0)


@pytest.fixture(scope="module")
def static(static_path: Path) -> SentenceTransformer:
    return SentenceTransformer(str(static_path), device="cpu")


def test_offline_env() -> None:
    assert os.environ.get("HF_HUB_OFFLINE") == "1"


def test_tiny_bert_files(tiny_bert_path: Path) -> None:
    modules = json.loads((tiny_bert_path / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == [
        "Transformer",
        "Pooling",
        "Normalize",
    ]
    config = json.loads((tiny_bert_path / "config.json").read_text())
    assert config["hidden_size"] == 32
    assert config["num_hidden_layers"] == 2
    assert config["num_attention_heads"] == 2


def test_tiny_bert_encode(tiny_bert: SentenceTransformer) -> None:
    assert tiny_bert.get_embedding_dimension() == 32
    emb = tiny_bert.encode(UNICODE_TEXTS, convert_to_numpy=True)
    assert emb.shape == (len(UNICODE_TEXTS), 32)
    assert emb.dtype == np.float32
    assert np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # the vocabulary is real: known words are not [UNK]
    tok = tiny_bert.tokenizer
    assert tok.unk_token_id not in tok("the dog and the house")["input_ids"]


def test_tiny_bert_distinguishes_sentences(tiny_bert: SentenceTransformer) -> None:
    emb = tiny_bert.encode(random_sentences(30, seed=5))
    cos = emb @ emb.T
    off = cos[np.triu_indices(len(emb), 1)]
    assert off.max() < 0.99
    assert off.mean() < 0.8


def test_tiny_bert_deterministic(
    tiny_bert: SentenceTransformer, tmp_path_factory: pytest.TempPathFactory
) -> None:
    other = build_tiny_bert(tmp_path_factory.mktemp("tiny_bert_again"), dim=32)
    again = SentenceTransformer(str(other), device="cpu")
    texts = ["the dog sleeps", "a new book"]
    np.testing.assert_array_equal(tiny_bert.encode(texts), again.encode(texts))


def test_tiny_bert_other_dim(tmp_path_factory: pytest.TempPathFactory) -> None:
    path = build_tiny_bert(tmp_path_factory.mktemp("tiny_bert_16"), dim=16)
    model = SentenceTransformer(str(path), device="cpu")
    assert model.encode(["hallo welt"]).shape == (1, 16)


def test_lexicon_words_are_unique() -> None:
    assert len(LEXICON) >= 60
    owner: dict[str, int] = {}
    for i, entry in enumerate(LEXICON):
        for word in entry:
            assert owner.setdefault(word, i) == i, word


def test_translate() -> None:
    assert translate("the dog sleeps in the house", "de") == "der hund schläft in der haus"
    assert translate("The dog sleeps in the house.", "es") == "El perro duerme en el casa."
    assert translate("the dog", "en") == "the dog"
    with pytest.raises(ValueError):
        translate("the zebra", "de")
    with pytest.raises(ValueError):
        translate("the dog", "fr")


def test_random_sentences() -> None:
    en = random_sentences(200, seed=1)
    assert len(en) == 200
    assert len({tuple(sorted(s.split())) for s in en}) == 200  # distinct even as bags of words
    assert all(4 <= len(s.split()) < 9 for s in en)
    assert en == random_sentences(200, seed=1)
    assert en != random_sentences(200, seed=2)
    assert random_sentences(200, seed=1, lang="de") == [translate(s, "de") for s in en]
    short = random_sentences(10, seed=0, length=(2, 3))
    assert all(len(s.split()) == 2 for s in short)


def test_static_files_and_encode(static_path: Path, static: SentenceTransformer) -> None:
    modules = json.loads((static_path / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules] == ["StaticEmbedding", "Normalize"]
    assert static.get_embedding_dimension() == 64
    emb = static.encode(UNICODE_TEXTS)
    assert emb.shape == (len(UNICODE_TEXTS), 64)
    assert np.isfinite(emb).all()


def test_static_shared_token_ids(static: SentenceTransformer) -> None:
    tokenizer = static[0].tokenizer
    for en, de, es in LEXICON:
        ids = {tuple(tokenizer.encode(w, add_special_tokens=False).ids) for w in (en, de, es)}
        assert len(ids) == 1, (en, de, es)
    en = "The dog sleeps in the house."
    ids = [tokenizer.encode(translate(en, lang), add_special_tokens=False).ids for lang in LANGS]
    assert ids[0] == ids[1] == ids[2]
    unk = tokenizer.token_to_id("[UNK]")
    assert unk not in ids[0]
    # whole words only: a lexicon word inside a longer word is not rewritten
    assert tokenizer.encode("hunde", add_special_tokens=False).ids == [unk]


def test_static_translations_are_nearest(static: SentenceTransformer) -> None:
    en = random_sentences(20, seed=11)
    de = [translate(s, "de") for s in en]
    es = [translate(s, "es") for s in en]
    distractors = random_sentences(50, seed=12, lang="de")
    assert not set(distractors) & set(de)
    e_en = static.encode(en)
    e_de = static.encode(de)
    e_es = static.encode(es)
    e_dis = static.encode(distractors)

    own = np.einsum("id,id->i", e_en, e_de)
    assert (own > 0.99).all()
    assert (np.einsum("id,id->i", e_en, e_es) > 0.99).all()
    against = e_en @ e_dis.T  # (20, 50)
    assert (own[:, None] > against).all()
    assert against.max() < 0.9  # unrelated sentences are much further away


def test_static_example_sentence(static: SentenceTransformer) -> None:
    emb = static.encode(
        [
            "the dog sleeps in the house",
            "Der Hund schläft in der Haus",
            "el perro duerme en el casa",
            "my friend reads a new book today",
        ]
    )
    cos = emb @ emb.T
    assert cos[0, 1] > 0.99
    assert cos[0, 2] > 0.99
    assert cos[0, 3] < 0.8


def test_a_hub_name_without_a_hub_in_reach_fails_at_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Offline, the hub's client retried every file for a minute and a half (with each
    warning printed twice) before the one clear sentence; now the cache alone is asked."""
    import socket
    import time

    import bitextdb
    from bitextdb.encoder import hub_reachable, load_model

    for name in (
        "HF_HUB_OFFLINE",
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as listening:  # a hub that answers
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{listening.getsockname()[1]}")
        assert hub_reachable()
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:1")  # nothing listens there
    assert not hub_reachable()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    started = time.monotonic()
    with pytest.raises(bitextdb.ModelLoadError, match="the model hub cannot be reached"):
        load_model("someone/no-such-model", device="cpu", revision=None, trust_remote_code=False)
    assert time.monotonic() - started < 20
