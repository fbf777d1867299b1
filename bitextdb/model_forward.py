"""The model's forward pass on a prepared batch, without a wait for the GPU.

A transformers encoder (BERT, LaBSE) given a batch's 2-D attention mask first asks whether
the mask is all ones, so that it can drop it for a batch without padding. On a GPU that
question is answered by copying the answer back: the thread launching the model waits there
until every batch queued before has run, on every batch. So the GPU never has more than
the batch in flight queued, and whenever that thread is held up after the wait (by another
thread holding the interpreter lock, or a collection) the GPU runs dry.

Given the mask already expanded to the four dimensions attention uses (an additive bias:
zero where a token is attended to, the dtype's lowest value at padding), transformers uses
it as it is, with no question asked; the pooling after the transformer still gets the 2-D
mask. Only architectures whose attention depends on nothing but that mask are given it
(:data:`PADDING_MASK_ONLY`): a model with sliding-window layers (ModernBERT, Gemma 3)
builds a second, windowed mask from the 2-D one, which a ready-made mask would skip, and a
check on a batch shorter than the window could not tell. For those that are, the first
batch with padding is run both ways and the vectors must agree; a model that fails that
(an older transformers), or that refuses the mask on a later batch, is called the usual
way from then on.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

PADDING_MASK_ONLY = frozenset(
    {"bert", "camembert", "distilbert", "electra", "mpnet", "roberta", "xlm-roberta"}
)
"""transformers ``model_type``s whose encoder builds its attention from the padding mask alone
(in transformers 5.24: one ``create_bidirectional_mask``, no windowed or local layers)."""


def expanded_bias(mask: Any, dtype: Any) -> Any:
    """A batch's ``(batch, length)`` attention mask as the ``(batch, 1, 1, length)`` additive
    bias attention applies: 0 for a token, the lowest ``dtype`` value for padding."""
    import torch

    bias = torch.zeros((mask.shape[0], 1, 1, mask.shape[1]), dtype=dtype, device=mask.device)
    return bias.masked_fill(mask[:, None, None, :] == 0, torch.finfo(dtype).min)


class BatchForward:
    """Sentence embeddings of a SentenceTransformer for a batch's features (on the model's
    device), the transformer given its attention mask ready-expanded where the first batch
    with padding shows that the model takes it (:attr:`expanded`: ``None`` until then;
    ``expand=False``: always the model's own call)."""

    def __init__(self, model: Any, *, expand: bool = True) -> None:
        self.model = model
        self._modules = list(model.children())
        takes = expand and bool(self._modules) and _padding_mask_only(self._modules[0])
        self.expanded: bool | None = None if takes else False

    def __call__(self, features: dict[str, Any]) -> Any:
        """The batch's sentence embeddings (batch x dim, on the model's device)."""
        if "attention_mask" not in features:
            self.expanded = False
        if self.expanded is None:
            if not bool((features["attention_mask"] == 0).any()):
                # nothing to tell the two apart by: decided on the first batch with padding
                return self.model(features)["sentence_embedding"]
            self.expanded, own = self._check(features)
            return own
        if self.expanded:
            try:
                return self._expanded_call(dict(features))
            except Exception as exc:  # a batch the check did not foresee: the usual call
                import torch

                if isinstance(exc, torch.cuda.OutOfMemoryError):
                    raise  # not the mask's doing: the usual call would not fit either
                log.warning("the model refused an expanded attention mask", exc_info=True)
                self.expanded = False
        return self.model(features)["sentence_embedding"]

    def _expanded_call(self, features: dict[str, Any]) -> Any:
        """The model's modules in turn, the first one (the transformer) given the bias."""
        transformer, *rest = self._modules
        mask = features["attention_mask"]
        features["attention_mask"] = expanded_bias(mask, self._dtype())
        features = transformer(features)
        features["attention_mask"] = mask  # pooling counts the tokens with the 2-D mask
        for module in rest:
            features = module(features)
        return features["sentence_embedding"]

    def _check(self, features: dict[str, Any]) -> tuple[bool, Any]:
        """Whether the expanded call gives the model's own embeddings for ``features``, and
        the model's own embeddings."""
        try:
            expanded = self._expanded_call(dict(features))
        except Exception:  # a model that takes no such mask: called the usual way
            log.debug("the model does not take an expanded attention mask", exc_info=True)
            return False, self.model(features)["sentence_embedding"]
        own = self.model(dict(features))["sentence_embedding"]
        same = agree(expanded, own)
        log.debug("expanded attention mask %s", "taken" if same else "gives other vectors")
        return same, own

    def _dtype(self) -> Any:
        """The model's floating-point type now (a caller may convert the model later)."""
        return next(self.model.parameters()).dtype


def agree(mine: Any, theirs: Any) -> bool:
    """Whether two batches of embeddings are the same but for rounding: the mask reaches
    attention in another form, so the two calls may round differently. Eight units in the
    last place of the batch's largest value, in the embeddings' precision, pass."""
    import torch

    if mine.shape != theirs.shape or mine.dtype != theirs.dtype:
        return False
    allowed = 8 * torch.finfo(theirs.dtype).eps * float(theirs.float().abs().max())
    return float((mine.float() - theirs.float()).abs().max()) <= allowed


def _padding_mask_only(module: Any) -> bool:
    """Whether ``module`` (a SentenceTransformer's first) wraps an encoder of
    :data:`PADDING_MASK_ONLY`."""
    for part in module.modules():
        config = getattr(part, "config", None)
        if config is not None and hasattr(config, "model_type"):
            decoder = getattr(config, "is_decoder", False)
            return config.model_type in PADDING_MASK_ONLY and not decoder
    return False
