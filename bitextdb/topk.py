"""Best-first neighbour lists as numpy arrays: what the miner and the SQL graph pass around.

Apart from :mod:`bitextdb.knn` (which needs torch) so that modules that only read or store
such lists import without it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD_ID = np.iinfo(np.int64).max


@dataclass
class TopK:
    """Padded best-first lists: ``ids`` (n, m) with ``PAD_ID`` and ``cos`` (n, m) with -inf."""

    ids: np.ndarray
    cos: np.ndarray

    @classmethod
    def empty(cls, n: int, m: int) -> TopK:
        return cls(np.full((n, m), PAD_ID, dtype=np.int64), np.full((n, m), -np.inf))

    @property
    def sizes(self) -> np.ndarray:
        return (self.ids != PAD_ID).sum(axis=1)

    def take(self, rows: np.ndarray) -> TopK:
        return TopK(self.ids[rows], self.cos[rows])
