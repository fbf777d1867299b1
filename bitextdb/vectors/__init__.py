"""Vector stores: one interface (``VectorIndex``), two adapters (Qdrant Edge, Qdrant server)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..config import Locations, Settings
from .base import Hit, VectorIndex, band_field, band_floor, band_of
from .edge import EdgeIndex

if TYPE_CHECKING:
    from .server import ServerIndex


def open_index(loc: Locations, settings: Settings | None = None) -> VectorIndex:
    """The store a home's locations name: a Qdrant server URL, else Qdrant Edge shards.

    ``settings`` give the HNSW and compact-vector options for collections created later.
    """
    s = settings or Settings()
    options = {
        "hnsw_m": s.hnsw_m,
        "hnsw_ef_construct": s.hnsw_ef_construct,
        "vector_dtype": s.vector_dtype,
        "quantization": s.quantization,
    }
    if not loc.qdrant:
        return EdgeIndex(loc.vectors_dir, **options)
    from .server import ServerIndex  # qdrant-client: imported only for a server

    if loc.qdrant.startswith("local:"):
        # qdrant-client's pure-Python local mode: a stand-in for a server in tests, which
        # warns at every call that it keeps no payload index and searches exactly
        import warnings

        from qdrant_client import QdrantClient

        warnings.filterwarnings(
            "ignore", message="(Payload indexes have no effect|Local mode)", category=UserWarning
        )

        client = QdrantClient(path=loc.qdrant[len("local:") :])
        return ServerIndex(loc.qdrant, client=client, prefix=loc.qdrant_prefix, **options)
    server = ServerIndex(loc.qdrant, prefix=loc.qdrant_prefix, **options)
    try:
        server.languages()  # fail now, clearly, when the server cannot be reached
    except BaseException:
        server.close()
        raise
    return server


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


def __getattr__(name: str) -> Any:
    # qdrant-client takes over a second to import; Qdrant Edge homes never need it
    if name == "ServerIndex":
        from .server import ServerIndex

        return ServerIndex
    raise AttributeError(f"module 'bitextdb.vectors' has no attribute {name!r}")
