"""``bitextdb config --model PATH``: point a database at its model's new folder.

A database records its model by name (a local folder by its absolute path), and refuses
any other, as vectors of two models cannot be compared. When the folder moves, or a home
made before folders were recorded absolutely names it relative to a directory long left,
the database is not lost: the model at the new place is loaded, it encodes a sample of
the stored sentences of every language (spread over the ids, and the longest, where a
shorter length limit would show), and only if it gives back their stored vectors (cosine
at least :data:`SAME_COSINE` each) does the database take the new name. A database with
no vector yet has nothing to compare: the folder is taken on its dimension alone, and the
report says so (``checked`` 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import model_name, same_model
from .db import corpus
from .encoder import Encoder
from .errors import ConfigError, ModelMismatchError

if TYPE_CHECKING:
    from .api import BitextDB

#: stored sentences encoded again, per language: this many spread over the ids, and as
#: many of the longest
SAMPLE = 16
#: the lowest cosine between a stored vector and the new folder's for the same sentence:
#: float16 storage and another device or batch shape move cosines by well under 1e-3
SAME_COSINE = 0.995


def relocate_model(db: BitextDB, model: str) -> dict[str, Any]:
    """Make ``model`` (a folder) the database's model if it gives the stored vectors
    back; returns ``{"model", "previous", "checked", "lowest_cosine"}``. Raises
    :class:`ModelMismatchError` when it does not (or makes vectors of another size), and
    :class:`ConfigError` for a name that is no folder (a hub name is not loaded)."""
    new = model_name(model)
    previous = db.settings.model
    report: dict[str, Any] = {"model": new, "previous": previous, "checked": 0}
    report["lowest_cosine"] = None
    if same_model(new, previous):
        return report
    if not Path(model).expanduser().is_dir():
        raise ConfigError(
            f"config --model takes the folder the database's model moved to; {model} is no "
            "folder here (a model of another name is another model, and a database keeps one)."
        )
    s = db.settings
    encoder = Encoder(  # a few sentences: the CPU does, whatever devices ingests use
        new,
        device="cpu",
        revision=s.revision,
        trust_remote_code=s.trust_remote_code,
        max_seq_length=s.max_seq_length,
    )
    try:
        encoder.check_dimension(s.dim)
        lowest = 1.0
        for lang in db.index.languages():
            with db.db.session() as session:
                sample = corpus.sample_indexed(session, lang, SAMPLE)
            if not sample:
                continue
            ids, stored = db.index.retrieve(lang, np.array([i for i, _ in sample]))
            texts = dict(sample)
            fresh = encoder.encode([texts[int(i)] for i in ids])
            cosines = np.sum(fresh * stored, axis=1) / np.maximum(
                np.linalg.norm(fresh, axis=1) * np.linalg.norm(stored, axis=1), 1e-12
            )
            lowest = min(lowest, float(cosines.min()))
            report["checked"] += len(ids)
    finally:
        encoder.close()
    if report["checked"]:
        report["lowest_cosine"] = lowest
    if lowest < SAME_COSINE:
        raise ModelMismatchError(
            f"The model in {new} is not this database's: it encodes stored sentences to "
            f"other vectors (cosine {lowest:.3f} with the stored ones, at least "
            f"{SAME_COSINE} wanted). Vectors of two models cannot be compared."
        )
    s.model = new
    db.db.save_settings(s)
    return report
