"""The one small interface every vector store adapter implements."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

#: kNN bands: a point's payload field ``band_<lang>`` holds ``band_of(kth)``; see ``miner``.
BAND_WIDTH = 0.05
N_BANDS = 40  # 2 / BAND_WIDTH


def band_of(kth: float | None) -> int:
    """The band of a k-th neighbour cosine: ``[-1, 1]`` cut into ``N_BANDS`` equal slices."""
    if kth is None or not np.isfinite(kth):
        return 0
    return int(min(N_BANDS - 1, max(0, np.floor((kth + 1.0) / BAND_WIDTH))))


def band_floor(band: int) -> float:
    """The lowest k-th cosine a band holds."""
    return -1.0 + band * BAND_WIDTH


def rescore_oversampling(limit: int, ef: int | None) -> float:
    """How many times ``limit`` quantized candidates an HNSW search rescores with the
    stored vectors: all the ``ef`` it walks through. Rescoring only twice ``limit`` (what
    Qdrant's examples use) left the int8 lists intact but, with 1-bit vectors, 65 % of the
    margins off on a database grown by small additions (1,000 a side, dim 768); rescoring
    ``ef`` candidates left 1 % (``benchmarks/README.md``)."""
    return max(2.0, (ef or 0) / max(limit, 1))


def band_field(other_lang: str) -> str:
    return f"band_{other_lang.replace('-', '_')}"


@dataclass(frozen=True)
class Hit:
    """One search result: point id, cosine score and (when asked for) its stored vector."""

    id: int
    score: float
    vector: np.ndarray | None = None


@runtime_checkable
class VectorIndex(Protocol):
    """A per-language collection of unit vectors keyed by sentence id."""

    backend: str

    def ensure(self, lang: str, dim: int) -> None:
        """Create the language's collection if missing; refuse a different dimension."""

    def dimension(self, lang: str) -> int | None:
        """The collection's dimension, or None when it does not exist."""

    def languages(self) -> list[str]:
        """Languages that have a collection."""

    def count(self, lang: str) -> int:
        """Number of points in the language's collection (0 when missing)."""

    def upsert(self, lang: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        """Insert or replace points; returns once they are durable."""

    def delete(self, lang: str, ids: np.ndarray) -> None:
        """Remove points (missing ids are ignored)."""

    def retrieve(self, lang: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The ids found (in the order asked) and their vectors."""

    def scan(self, lang: str, batch_size: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every point as (ids, vectors) batches, in no particular order."""

    def search(
        self,
        lang: str,
        queries: np.ndarray,
        limit: int,
        *,
        exact: bool,
        ef: int | None = None,
        score_threshold: float | None = None,
        band: tuple[str, int] | None = None,
        has_field: str | None = None,
        with_vectors: bool = True,
    ) -> list[list[Hit]]:
        """Nearest points by cosine for each query row, best first.

        ``band=(field, value)`` keeps points whose integer payload ``field`` is ``value``;
        ``has_field`` keeps points that have that payload field at all.
        """

    def set_band(self, lang: str, field: str, band: int, ids: np.ndarray) -> None:
        """Set the integer payload ``field`` of the given points to ``band``."""

    def bands(self, lang: str, field: str) -> set[int]:
        """The values of the integer payload ``field`` that some point of ``lang`` holds
        (a facet count of the field's index; empty before the first :meth:`set_band`)."""

    def build_index(self, lang: str) -> None:
        """Make sure the HNSW index covers the collection (a no-op where it is automatic)."""

    def indexed_count(self, lang: str) -> int:
        """Points covered by the HNSW index."""

    def close(self) -> None:
        """Flush and release resources."""


def as_ids(ids: object) -> np.ndarray:
    return np.asarray(ids, dtype=np.int64).reshape(-1)


def as_vectors(vectors: object, dim: int | None = None) -> np.ndarray:
    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array.reshape(1, -1) if array.size else array.reshape(0, dim or 0)
    return array


def in_order(
    wanted: np.ndarray, found: dict[int, Any], dimension: Callable[[], int | None]
) -> tuple[np.ndarray, np.ndarray]:
    """The ``found`` vectors (``id -> vector``) of the ``wanted`` ids, in that order, those
    not found left out; ``dimension`` gives the width of an empty result."""
    kept = np.array([i for i in wanted if int(i) in found], dtype=np.int64)
    if not len(kept):
        return kept, np.zeros((0, dimension() or 0), dtype=np.float32)
    return kept, np.array([found[int(i)] for i in kept], dtype=np.float32)
