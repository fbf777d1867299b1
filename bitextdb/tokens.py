"""Tokenize a call's texts once, with the model's own fast tokenizer, and pad batches from it.

The GPU pipeline needs every text's length before it can sort and batch, and then every
batch's padded tensors. Asking sentence-transformers' ``preprocess`` for each batch after a
length pass tokenized every text twice, in Python-heavy code: on an H200 the encoder ran at
the tokenizer's speed (about 9k sentences/s) while the model alone did 60k/s. Here the
tokenizer's Rust core encodes the call once, in parallel passes of :data:`TOKENIZE_TEXTS`,
and batches are cut from its ids with numpy. :func:`direct_tokenizer` is used only for
models whose own ``preprocess`` this reproduces exactly, checked on a sample of every call
(:meth:`DirectTokenizer.agrees`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids")

TOKENIZE_TEXTS = 1024
"""How many texts :meth:`DirectTokenizer.token_ids` hands the tokenizer at a time."""


def round_up(value: int, multiple: int) -> int:
    """``value`` rounded up to a multiple of ``multiple`` (itself when ``multiple`` <= 1)."""
    return value if multiple <= 1 else -(-value // multiple) * multiple


def preprocessor(model: Any) -> Any:
    """The model's tokenizing step: ``preprocess`` (``tokenize`` before sentence-transformers 6)."""
    return getattr(model, "preprocess", None) or model.tokenize


def padding(tokenizer: Any) -> tuple[int, bool]:
    """A tokenizer's pad id (0 where it has none) and whether it pads on the left."""
    pad_id = int(getattr(tokenizer, "pad_token_id", None) or 0)
    return pad_id, getattr(tokenizer, "padding_side", "right") == "left"


def pad_to_multiple(
    features: dict[str, Any], multiple: int, pad_id: int, *, left: bool = False
) -> dict[str, Any]:
    """Pad a tokenized batch's token tensors to a length that is a multiple of ``multiple``:
    ``input_ids`` with ``pad_id``, the attention mask and the rest with 0 (masked out)."""
    import torch

    ids = features.get("input_ids")
    if multiple <= 1 or not torch.is_tensor(ids) or ids.dim() != 2:
        return features
    extra = round_up(ids.shape[1], multiple) - ids.shape[1]
    if not extra:
        return features
    padded = dict(features)
    for key, value in features.items():
        if torch.is_tensor(value) and value.shape == ids.shape:
            fill = pad_id if key == "input_ids" else 0
            padded[key] = torch.nn.functional.pad(
                value, (extra, 0) if left else (0, extra), value=fill
            )
    return padded


class TokenIds:
    """Every text's token ids (special tokens included, truncated), stored flat."""

    def __init__(self, ids: Sequence[Sequence[int]]) -> None:
        self.lengths = np.fromiter(map(len, ids), dtype=np.int64, count=len(ids))
        self.offsets = np.concatenate([[0], np.cumsum(self.lengths)])
        self.flat = np.fromiter(chain.from_iterable(ids), dtype=np.int64, count=self.offsets[-1])

    def padded(
        self, idx: np.ndarray, multiple: int, pad_id: int, *, left: bool = False
    ) -> tuple[np.ndarray, np.ndarray]:
        """Ids and attention mask (both ``len(idx) x L``) of the texts ``idx``, padded to the
        longest of them rounded up to a multiple of ``multiple``."""
        lengths = self.lengths[idx]
        width = round_up(int(lengths.max(initial=1)), multiple)
        positions = np.arange(width)
        start = width - lengths[:, None] if left else np.zeros((len(idx), 1), dtype=np.int64)
        mask = (positions >= start) & (positions < start + lengths[:, None])
        if not len(self.flat):  # texts without a single token
            return np.full(mask.shape, pad_id, dtype=np.int64), mask.astype(np.int64)
        source = self.offsets[idx][:, None] + positions - start
        ids = np.where(mask, self.flat[np.clip(source, 0, len(self.flat) - 1)], pad_id)
        return ids, mask.astype(np.int64)


class DirectTokenizer:
    """The model's fast tokenizer, used directly: each call tokenized once (in parallel
    passes of :data:`TOKENIZE_TEXTS`), then batches built from the ids in the layout the
    model's ``preprocess`` gives."""

    def __init__(self, model: Any, backend: Any, max_length: int) -> None:
        from tokenizers import Tokenizer

        self.model = model
        self.tokenizer = model.tokenizer
        # an own copy: the transformers wrapper resets truncation and padding on each call
        self.backend = Tokenizer.from_str(backend.to_str())
        self.backend.no_padding()
        self.backend.enable_truncation(max_length)
        self.pad_id, self.left = padding(self.tokenizer)
        self.keys: tuple[str, ...] = ()
        self.extras: dict[str, Any] = {}

    def token_ids(self, texts: Sequence[str]) -> TokenIds:
        """All of ``texts`` through the tokenizer's Rust core (its own threads, no offsets).

        :data:`TOKENIZE_TEXTS` texts a pass: the binding holds the interpreter lock while it
        wraps each pass's encodings as Python objects and again while it frees them, and
        over a whole call of 8,192 texts that kept the thread launching the model waiting
        for 15-19 ms at a time (one-off timings on the CPU VM; ``benchmarks/launch.py``
        shows the effect), about as long as the GPU takes for a batch.
        """
        encode = getattr(self.backend, "encode_batch_fast", None) or self.backend.encode_batch
        texts = list(texts)
        ids: list[list[int]] = []
        for start in range(0, len(texts), TOKENIZE_TEXTS):
            part = texts[start : start + TOKENIZE_TEXTS]
            ids.extend(e.ids for e in encode(part, add_special_tokens=True))
        return TokenIds(ids)

    def features(self, tokens: TokenIds, idx: np.ndarray, multiple: int) -> dict[str, Any]:
        """The model's input for the texts ``idx``: tensors padded to a multiple of ``multiple``."""
        import torch

        ids, mask = tokens.padded(idx, multiple, self.pad_id, left=self.left)
        built = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if "token_type_ids" in self.keys:
            built["token_type_ids"] = torch.zeros_like(built["input_ids"])
        return {**self.extras, **{key: built[key] for key in self.keys}}

    def agrees(self, texts: Sequence[str]) -> bool:
        """Whether :meth:`features` gives exactly what the model's ``preprocess`` gives for
        ``texts`` (same keys, same tensors); remembers the layout when it does."""
        import torch

        try:
            want = preprocessor(self.model)(list(texts))
        except Exception:
            log.debug("preprocess failed on the probe", exc_info=True)
            return False
        tensors = {k for k, v in want.items() if torch.is_tensor(v)}
        if not tensors or not tensors <= set(TOKEN_KEYS) or "input_ids" not in tensors:
            return False
        self.keys = tuple(k for k in TOKEN_KEYS if k in tensors)
        self.extras = {k: v for k, v in want.items() if k not in tensors}
        got = self.features(self.token_ids(texts), np.arange(len(texts)), multiple=1)
        return all(
            got[key].shape == want[key].shape and torch.equal(got[key], want[key].to(torch.int64))
            for key in self.keys
        )


def max_length(model: Any) -> int:
    """The model's maximum tokens per text; 512 where it has none (a static embedding's is
    infinite)."""
    value = getattr(model, "max_seq_length", None)
    return int(value) if isinstance(value, int | float) and 0 < value < math.inf else 512


def direct_tokenizer(model: Any) -> DirectTokenizer | None:
    """A :class:`DirectTokenizer` for ``model``, or ``None`` when it has no fast tokenizer."""
    tokenizer = getattr(model, "tokenizer", None)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not hasattr(backend, "to_str"):
        return None
    limit = max_length(model)
    try:
        return DirectTokenizer(model, backend, limit)
    except Exception:
        log.debug("no direct tokenizer", exc_info=True)
        return None
