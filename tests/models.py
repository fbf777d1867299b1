"""Tiny, fully local sentence-transformers models for tests (nothing is fetched from a hub).

* :func:`build_tiny_bert` writes a randomly initialised 2-layer BERT with mean pooling: a real
  transformer pipeline (tokenizer, attention, padding) that is fast and deterministic.
* :func:`build_static_crosslingual` writes a :class:`StaticEmbedding` model whose tokenizer maps
  the English, German and Spanish words of each :data:`LEXICON` entry to the same token id, so
  word-for-word translations (see :func:`translate`) get identical embeddings while unrelated
  sentences stay far apart. :func:`random_sentences` makes distinct sentences from the lexicon.

Both builders are meant to be called once per test session (e.g. from a session-scoped fixture
with ``tmp_path_factory``) and the result loaded with ``SentenceTransformer(str(path),
device="cpu")``.
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import re
import string
import tempfile
from pathlib import Path

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sentence_transformers.sentence_transformer.modules import (
    Normalize,
    Pooling,
    StaticEmbedding,
    Transformer,
)
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers
from transformers import BertConfig, BertModel, BertTokenizerFast

# ----------------------------------------------------------------------------------------------
# Tiny BERT
# ----------------------------------------------------------------------------------------------

SPECIAL_TOKENS: list[str] = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]

_BERT_WORDS_TEXT = """
the a an and or but if of to in on at by for with from as is are was were be been has have had
do does did not no yes this that these those it its he she they we you i my your our their his
her who what when where why how all some any many much more most other new old good bad big
small long short high low first last next same different great little own right left man woman
child people time year day week night world life hand house home car dog cat tree water book
city country school work word name family friend money food bread table door window street
river sea sun moon light black white red green blue say see go come make take know think give
find tell ask use run eat drink sleep read write speak love live
der die das ein eine und oder nicht ist sind war mit von zu auf für im dem den des ich du er sie
wir ihr es haus hund katze mann frau kind baum wasser buch stadt schule freund tisch tür
el la los las un una y o no es son con de en por para que su mi tu casa perro gato hombre mujer
niño árbol agua libro ciudad escuela amigo mesa puerta calle
"""
_BERT_WORDS: list[str] = _BERT_WORDS_TEXT.split()

_BERT_SUFFIXES: list[str] = [
    "##s", "##es", "##ed", "##ing", "##er", "##en", "##e", "##n", "##ly", "##t", "##st", "##a",
    "##o", "##os", "##as", "##ung", "##heit", "##ción", "##mente", "##ar",
]  # fmt: skip


def _bert_vocab() -> list[str]:
    """The WordPiece vocabulary of the tiny BERT: specials, characters, '##' pieces, words."""
    chars = list(string.ascii_lowercase) + list(string.digits) + list(string.punctuation)
    chars += list("äöüßñáéíóú¿¡")
    letters = list(string.ascii_lowercase) + list("äöüßñáéíóú")
    vocab = [*SPECIAL_TOKENS, *chars, *(f"##{c}" for c in letters + list(string.digits))]
    for token in [*_BERT_SUFFIXES, *_BERT_WORDS]:
        if token not in vocab:
            vocab.append(token)
    return vocab


def build_tiny_bert(path: Path, dim: int = 32) -> Path:
    """Write a tiny, randomly initialised BERT sentence-transformers model to ``path``.

    The model is ``Transformer`` (2 layers, 2 heads, hidden size ``dim``, intermediate size 64,
    128 positions) + mean ``Pooling`` + ``Normalize``, so embeddings have ``dim`` dimensions and
    unit length. Weights are drawn after ``torch.manual_seed(0)``, so the model is the same on
    every call. Word embeddings are drawn with std 1.0 (not BERT's 0.02) so that different
    sentences get clearly different embeddings. Text is lower-cased and accents are stripped;
    unknown words are spelled with single-letter pieces, other characters become ``[UNK]``.

    Args:
        path: output directory (created if missing).
        dim: hidden size and embedding dimension (must be divisible by 2, the number of heads).

    Returns:
        ``path``, loadable with ``SentenceTransformer(str(path), device="cpu")``.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    vocab = _bert_vocab()
    with tempfile.TemporaryDirectory(prefix="tiny-bert-") as tmp:
        staging = Path(tmp)
        # transformers 5.x: BertTokenizerFast is an alias of BertTokenizer, whose constructor takes
        # `vocab=` and silently ignores `vocab_file=`; from_pretrained() on a folder holding
        # vocab.txt works with both 4.x and 5.x.
        (staging / "vocab.txt").write_text("\n".join(vocab) + "\n", encoding="utf-8")
        tokenizer = BertTokenizerFast.from_pretrained(
            str(staging), do_lower_case=True, model_max_length=128
        )
        if len(tokenizer) != len(vocab):
            raise RuntimeError(f"tokenizer has {len(tokenizer)} tokens, expected {len(vocab)}")
        config = BertConfig(
            vocab_size=len(vocab),
            hidden_size=dim,
            num_hidden_layers=2,
            num_attention_heads=2,
            intermediate_size=64,
            max_position_embeddings=128,
            pad_token_id=0,
        )
        # fork_rng: seed without disturbing the caller's global torch RNG state
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(0)
            # keep the (unused) pooler so that every saved weight comes from the seeded init
            bert = BertModel(config)
            # BERT's default init (std 0.02) makes word, position and type embeddings equally
            # small, so every sentence embeds almost alike (mean cosine ~0.9). Larger word
            # vectors let the words dominate: unrelated sentences then have cosines around 0.2.
            bert.embeddings.word_embeddings.weight.normal_(0.0, 1.0)
            bert.embeddings.word_embeddings.weight[config.pad_token_id].zero_()
        bert.eval()
        bert.save_pretrained(str(staging))
        tokenizer.save_pretrained(str(staging))

        transformer = Transformer(str(staging), max_seq_length=128)
        pooling = Pooling(transformer.get_embedding_dimension(), pooling_mode="mean")
        model = SentenceTransformer(modules=[transformer, pooling, Normalize()], device="cpu")
        model.save(str(path))
    return path


# ----------------------------------------------------------------------------------------------
# Static cross-lingual model
# ----------------------------------------------------------------------------------------------

LEXICON: list[tuple[str, str, str]] = [
    # function words
    ("the", "der", "el"),
    ("a", "ein", "un"),
    ("in", "in", "en"),
    ("on", "auf", "sobre"),
    ("and", "und", "y"),
    ("is", "ist", "es"),
    ("with", "mit", "con"),
    ("of", "von", "de"),
    ("to", "zu", "hacia"),
    ("my", "mein", "mi"),
    ("your", "dein", "tu"),
    ("this", "dieser", "este"),
    ("not", "nicht", "no"),
    ("very", "sehr", "muy"),
    ("today", "heute", "hoy"),
    ("tomorrow", "morgen", "mañana"),
    ("here", "hier", "aquí"),
    ("always", "immer", "siempre"),
    ("also", "auch", "también"),
    # adjectives
    ("small", "klein", "pequeño"),
    ("big", "groß", "grande"),
    ("old", "alt", "viejo"),
    ("new", "neu", "nuevo"),
    ("red", "rot", "rojo"),
    ("green", "grün", "verde"),
    ("black", "schwarz", "negro"),
    ("white", "weiß", "blanco"),
    ("good", "gut", "bueno"),
    # nouns
    ("house", "haus", "casa"),
    ("dog", "hund", "perro"),
    ("cat", "katze", "gato"),
    ("man", "mann", "hombre"),
    ("woman", "frau", "mujer"),
    ("child", "kind", "niño"),
    ("tree", "baum", "árbol"),
    ("car", "auto", "coche"),
    ("book", "buch", "libro"),
    ("city", "stadt", "ciudad"),
    ("water", "wasser", "agua"),
    ("bread", "brot", "pan"),
    ("garden", "garten", "jardín"),
    ("school", "schule", "escuela"),
    ("friend", "freund", "amigo"),
    ("table", "tisch", "mesa"),
    ("door", "tür", "puerta"),
    ("window", "fenster", "ventana"),
    ("river", "fluss", "río"),
    ("mountain", "berg", "montaña"),
    ("sun", "sonne", "sol"),
    ("moon", "mond", "luna"),
    ("bird", "vogel", "pájaro"),
    ("fish", "fisch", "pez"),
    ("horse", "pferd", "caballo"),
    ("street", "straße", "calle"),
    ("teacher", "lehrer", "maestro"),
    # verbs
    ("sleeps", "schläft", "duerme"),
    ("eats", "isst", "come"),
    ("sees", "sieht", "ve"),
    ("reads", "liest", "lee"),
    ("runs", "läuft", "corre"),
    ("drinks", "trinkt", "bebe"),
    ("sings", "singt", "canta"),
    ("has", "hat", "tiene"),
    ("loves", "liebt", "ama"),
    ("finds", "findet", "encuentra"),
]

LANGS: tuple[str, ...] = ("en", "de", "es")
STATIC_UNK = "[UNK]"
STATIC_PUNCTUATION: list[str] = [".", ",", "!", "?", ";", ":"]


def _check_lexicon() -> None:
    """Every surface word must belong to exactly one LEXICON entry (whatever the language)."""
    owner: dict[str, int] = {}
    for i, entry in enumerate(LEXICON):
        for word in entry:
            if word != word.lower() or not re.fullmatch(r"\w+", word):
                raise ValueError(f"lexicon word {word!r} must be one lower-case word")
            if owner.setdefault(word, i) != i:
                raise ValueError(f"lexicon word {word!r} is used by two entries")


_check_lexicon()

_TRANSLATION: dict[str, dict[str, str]] = {
    lang: {entry[0]: entry[j] for entry in LEXICON} for j, lang in enumerate(LANGS)
}


def _static_tokenizer() -> Tokenizer:
    """WordLevel tokenizer: one id per LEXICON entry, shared by its en/de/es words.

    A WordLevel vocabulary cannot hold several words for one id through a save/load round trip,
    so the vocabulary holds the English words only and the normalizer rewrites every German and
    Spanish lexicon word (whole words, after NFC + lower-casing) to its English equivalent.
    """
    vocab: dict[str, int] = {STATIC_UNK: 0}
    for en, *_ in LEXICON:
        vocab[en] = len(vocab)
    for p in STATIC_PUNCTUATION:
        vocab[p] = len(vocab)

    steps: list[normalizers.Normalizer] = [normalizers.NFC(), normalizers.Lowercase()]
    for en, *others in LEXICON:
        sources = sorted({w for w in others if w != en}, key=lambda w: (-len(w), w))
        if sources:
            pattern = r"\b(?:" + "|".join(re.escape(w) for w in sources) + r")\b"
            steps.append(normalizers.Replace(Regex(pattern), en))

    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token=STATIC_UNK))
    tokenizer.normalizer = normalizers.Sequence(steps)
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return tokenizer


def build_static_crosslingual(path: Path, dim: int = 64, seed: int = 0) -> Path:
    """Write a static (bag-of-words) en/de/es sentence-transformers model to ``path``.

    The model is ``StaticEmbedding`` (mean of per-token vectors) + ``Normalize``. Token vectors
    are standard normal draws from ``numpy.random.default_rng(seed)``; the words of one
    :data:`LEXICON` entry share a token id, so word-for-word translations (:func:`translate`)
    have identical embeddings. Unknown words map to ``[UNK]``, punctuation to its own tokens.

    Args:
        path: output directory (created if missing).
        dim: embedding dimension.
        seed: seed of the embedding weights.

    Returns:
        ``path``, loadable with ``SentenceTransformer(str(path), device="cpu")``.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _static_tokenizer()
    rng = np.random.default_rng(seed)
    weights = rng.standard_normal((tokenizer.get_vocab_size(), dim)).astype(np.float32)
    static = StaticEmbedding(tokenizer, embedding_weights=weights)
    model = SentenceTransformer(modules=[static, Normalize()], device="cpu")
    model.save(str(path))
    return path


def translate(sentence_en: str, lang: str) -> str:
    """Translate an English sentence made of LEXICON words word by word into ``lang``.

    Capitalisation of each word's first letter, spacing and punctuation are kept.

    Args:
        sentence_en: English sentence; every word must be in :data:`LEXICON`.
        lang: ``"en"``, ``"de"`` or ``"es"``.

    Raises:
        ValueError: for an unknown language or a word outside the lexicon.
    """
    if lang not in _TRANSLATION:
        raise ValueError(f"unknown language {lang!r}; expected one of {LANGS}")
    table = _TRANSLATION[lang]

    def repl(match: re.Match[str]) -> str:
        word = match.group(0)
        try:
            out = table[word.lower()]
        except KeyError:
            raise ValueError(f"{word!r} is not an English LEXICON word") from None
        return out[:1].upper() + out[1:] if word[:1].isupper() else out

    return re.sub(r"\w+", repl, sentence_en)


def random_sentences(
    n: int, seed: int, lang: str = "en", length: tuple[int, int] = (4, 9)
) -> list[str]:
    """``n`` distinct random sentences of LEXICON words in ``lang`` (reproducible for ``seed``).

    Each sentence has ``length[0] <= len < length[1]`` lower-case words separated by single
    spaces. Sentences are distinct as bags of words (no two are permutations of each other), so
    they also have distinct static-model embeddings; the same ``seed`` gives word-for-word
    translations across languages.
    """
    lo, hi = length
    if not 1 <= lo < hi:
        raise ValueError("length must be (lo, hi) with 1 <= lo < hi")
    if lang not in _TRANSLATION:
        raise ValueError(f"unknown language {lang!r}; expected one of {LANGS}")
    rng = np.random.default_rng(seed)
    words = [entry[0] for entry in LEXICON]
    seen: set[tuple[str, ...]] = set()
    out: list[str] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 100 * n + 1000:
            raise ValueError(f"cannot make {n} distinct sentences with length {length}")
        size = int(rng.integers(lo, hi))
        chosen = [words[int(i)] for i in rng.integers(0, len(words), size=size)]
        key = tuple(sorted(chosen))
        if key in seen:
            continue
        seen.add(key)
        out.append(translate(" ".join(chosen), lang))
    return out
