"""Vector stores: one interface (``VectorIndex``), two adapters (Qdrant Edge, Qdrant server)."""

from __future__ import annotations

from ..config import Locations
from .base import Hit, VectorIndex, band_field, band_floor, band_of
from .edge import EdgeIndex
from .server import ServerIndex


def open_index(loc: Locations, *, hnsw_m: int = 16, hnsw_ef_construct: int = 100) -> VectorIndex:
    """The store a home's locations name: a Qdrant server URL, else Qdrant Edge shards."""
    if loc.qdrant and loc.qdrant.startswith("local:"):
        # qdrant-client's pure-Python local mode: a stand-in for a server in tests
        from qdrant_client import QdrantClient

        client = QdrantClient(path=loc.qdrant[len("local:") :])
        return ServerIndex(
            loc.qdrant,
            client=client,
            prefix=loc.qdrant_prefix,
            hnsw_m=hnsw_m,
            hnsw_ef_construct=hnsw_ef_construct,
        )
    if loc.qdrant:
        server = ServerIndex(
            loc.qdrant, prefix=loc.qdrant_prefix, hnsw_m=hnsw_m, hnsw_ef_construct=hnsw_ef_construct
        )
        try:
            server.languages()  # fail now, clearly, when the server cannot be reached
        except BaseException:
            server.close()
            raise
        return server
    return EdgeIndex(loc.vectors_dir, hnsw_m=hnsw_m, hnsw_ef_construct=hnsw_ef_construct)


__all__ = [
    "EdgeIndex",
    "Hit",
    "ServerIndex",
    "VectorIndex",
    "band_field",
    "band_floor",
    "band_of",
    "open_index",
]
