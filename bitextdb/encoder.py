"""Sentence encoding with sentence-transformers: device, dtype, batching, model identity."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Sequence

import numpy as np

from .errors import ModelLoadError, ModelMismatchError

log = logging.getLogger(__name__)


def normalize_rows(vectors: np.ndarray) -> np.ndarray:
    """L2-normalise float32 rows the way the encoder does (zero rows stay zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


class Encoder:
    """A loaded sentence-transformers model that turns sentences into unit float32 vectors.

    On CUDA the model runs in float16; elsewhere in float32.
    """

    def __init__(
        self,
        model: str,
        *,
        device: str | None = None,
        revision: str | None = None,
        trust_remote_code: bool = False,
        max_seq_length: int | None = None,
        batch_size: int = 64,
    ) -> None:
        self.name = model
        self.batch_size = batch_size
        self.model = load_model(
            model, device=device, revision=revision, trust_remote_code=trust_remote_code
        )
        if max_seq_length:
            self.model.max_seq_length = max_seq_length
        self.device = str(self.model.device)
        if self.device.startswith("cuda"):
            self.model.half()
        self.dim = int(self.model.get_embedding_dimension())

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Unit float32 vectors for ``texts`` (n x dim)."""
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        return normalize_rows(vectors)

    def check_dimension(self, expected: int) -> None:
        if expected and self.dim != expected:
            raise ModelMismatchError(
                f"The model {self.name} makes {self.dim}-dimensional vectors but the database "
                f"holds {expected}-dimensional ones."
            )


def load_model(model: str, *, device: str | None, revision: str | None, trust_remote_code: bool):  # type: ignore[no-untyped-def]
    """Load a SentenceTransformer, turning every failure into one clear sentence."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from sentence_transformers import SentenceTransformer
        from transformers.utils import logging as hf_logging
    except ImportError as exc:  # pragma: no cover - a dependency
        raise ModelLoadError("sentence-transformers is not installed; reinstall bitextdb.") from exc
    hf_logging.disable_progress_bar()  # our own bars only
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return SentenceTransformer(
                model,
                device=None if device in (None, "auto") else device,
                revision=revision,
                trust_remote_code=trust_remote_code,
            )
    except Exception as exc:
        log.debug("model load failed", exc_info=True)
        raise ModelLoadError(
            f"Could not load the model {model!r} (no such local folder, and it could not be "
            "downloaded from here); pass a local sentence-transformers model folder with "
            "--model PATH."
        ) from exc
