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
mask. Whether a model takes such a mask and gives the same vectors is checked on its first
batch with padding, against the model's own call; a model that does not (another
architecture, an older transformers), or that refuses it on a later batch, is called the
usual way from then on.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


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
        self.expanded: bool | None = None if expand else False
        self._modules = list(model.children())

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
            except Exception:  # a batch the check did not foresee: the usual call from now on
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
        import torch

        dtype = self._dtype()
        if not dtype.is_floating_point:
            return False, self.model(features)["sentence_embedding"]
        try:
            expanded = self._expanded_call(dict(features))
        except Exception:  # a model that takes no such mask: called the usual way
            log.debug("the model does not take an expanded attention mask", exc_info=True)
            return False, self.model(features)["sentence_embedding"]
        own = self.model(dict(features))["sentence_embedding"]
        # the mask reaches attention in another form, so the two may round differently: eight
        # units in the last place of the batch's largest value (in the model's precision) pass
        allowed = 8 * torch.finfo(dtype).eps * float(own.float().abs().max())
        same = expanded.shape == own.shape and (
            float((expanded.float() - own.float()).abs().max()) <= allowed
        )
        log.debug("expanded attention mask %s", "taken" if same else "gives other vectors")
        return same, own

    def _dtype(self) -> Any:
        """The model's floating-point type now (a caller may convert the model later)."""
        return next(self.model.parameters()).dtype
