"""Qdrant server through ``qdrant-client``, with bounded tenacity retries on transient errors.

The same adapter runs against ``QdrantClient(path=...)`` (qdrant-client's pure-Python local
mode) in the tests: a stand-in for a server, never a default store.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import numpy as np
from pydantic import ValidationError
from qdrant_client import QdrantClient
from qdrant_client import models as qm
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_exponential,
)

from ..config import check_lang, mask_url
from ..errors import ConfigError, ModelMismatchError, StoreUnavailableError
from .base import Hit, as_ids, as_vectors, in_order, rescore_oversampling

log = logging.getLogger(__name__)

#: the collection metadata key naming the database a collection belongs to
OWNER_KEY = "bitextdb_database"
#: what qdrant-client raises when the other end is not a Qdrant server (HTML, 404, JSON of
#: another shape); anything else from a call is a bug and propagates as it is
NOT_QDRANT = (
    UnexpectedResponse,
    ResponseHandlingException,
    json.JSONDecodeError,
    ValidationError,
    AssertionError,
)
T = TypeVar("T")


def is_transient(exc: BaseException) -> bool:
    """Connection failures, timeouts, 429 and 5xx answers are worth another try."""
    if isinstance(exc, UnexpectedResponse):
        return exc.status_code == 429 or exc.status_code >= 500
    if isinstance(exc, (ResponseHandlingException, httpx.TransportError, ConnectionError)):
        return True
    return type(exc).__name__ in ("RpcError", "AioRpcError", "_InactiveRpcError")


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    log.warning("Qdrant call failed (%s); retry %d", exc, state.attempt_number)


class ServerIndex:
    """One collection per language, named ``<prefix><lang>``."""

    backend = "qdrant-server"

    def __init__(
        self,
        url: str | None = None,
        *,
        client: QdrantClient | None = None,
        prefix: str = "bitextdb_",
        api_key: str | None = None,
        hnsw_m: int = 32,
        hnsw_ef_construct: int = 256,
        vector_dtype: str = "float32",
        quantization: str = "none",
        retry_seconds: float | None = None,
        retry_attempts: int = 6,
        timeout: int = 10,
    ) -> None:
        self.url = url or "local"
        self.prefix = prefix
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construct = hnsw_ef_construct
        self.vector_dtype = vector_dtype
        self.quantization = quantization
        if retry_seconds is None:
            retry_seconds = float(os.environ.get("BITEXTDB_QDRANT_RETRY_SECONDS", "10"))
        self.retry_seconds = retry_seconds
        self.retry_attempts = retry_attempts
        if client is None:
            key = api_key if api_key is not None else os.environ.get("BITEXTDB_QDRANT_API_KEY")
            client = QdrantClient(url=url, api_key=key, timeout=timeout, check_compatibility=False)
        self.client = client
        #: the database these collections belong to (see :meth:`claim`); None: not known yet
        self.owner: str | None = None
        self._dims: dict[str, int] = {}
        self._indexed_fields: set[tuple[str, str]] = set()

    # -- retries ---------------------------------------------------------------------
    def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        retrying = Retrying(
            retry=retry_if_exception(is_transient),
            stop=stop_after_delay(self.retry_seconds) | stop_after_attempt(self.retry_attempts),
            wait=wait_exponential(multiplier=0.2, max=3),
            before_sleep=_log_retry,
            reraise=True,
        )
        try:
            return retrying(fn, *args, **kwargs)
        except Exception as exc:
            if is_transient(exc):
                raise StoreUnavailableError(
                    f"Cannot reach Qdrant at {mask_url(self.url)} (gave up after "
                    f"{self.retry_seconds:g} s of retries): {_reason(exc)}"
                ) from exc
            if isinstance(exc, NOT_QDRANT):
                # an HTML page, a 404, JSON of another shape: not a Qdrant server at all
                raise StoreUnavailableError(
                    f"{mask_url(self.url)} does not answer like a Qdrant server: {_reason(exc)}"
                ) from exc
            raise

    def _name(self, lang: str) -> str:
        return f"{self.prefix}{check_lang(lang).replace('-', '_')}"

    # -- ownership -------------------------------------------------------------------
    def claim(self, owner: str) -> None:
        """Work for the database named ``owner``: collections it makes say so in their
        metadata (Qdrant >= 1.16), and another database's collection under this prefix
        (a prefix that begins another's, or the same one given twice) is never read,
        written or taken for an orphan."""
        self.owner = owner
        self._dims.clear()

    def _owner_of(self, info: Any) -> str | None:
        metadata = getattr(info.config, "metadata", None) or {}
        owner = metadata.get(OWNER_KEY)
        return None if owner is None else str(owner)

    def _check_owner(self, name: str, info: Any) -> None:
        """Refuse another database's collection; adopt one made before owners were kept."""
        if self.owner is None:
            return
        owner = self._owner_of(info)
        if owner is None:
            self._call(self.client.update_collection, name, metadata={OWNER_KEY: self.owner})
        elif owner != self.owner:
            raise ConfigError(
                f"The Qdrant collection {name} belongs to another bitextdb database: give "
                f"this one a --qdrant-prefix of its own (it has {self.prefix!r}; the prefix "
                "is kept by init in bitextdb.json)."
            )

    # -- collections -----------------------------------------------------------------
    def ensure(self, lang: str, dim: int) -> None:
        existing = self.dimension(lang)
        if existing is not None:
            if existing != dim:
                raise ModelMismatchError(
                    f"The {lang} vectors have dimension {existing}, not {dim}."
                )
            return
        self._call(
            self.client.create_collection,
            self._name(lang),
            metadata=None if self.owner is None else {OWNER_KEY: self.owner},
            vectors_config=qm.VectorParams(
                size=dim,
                distance=qm.Distance.COSINE,
                datatype=qm.Datatype.FLOAT16 if self.vector_dtype == "float16" else None,
                on_disk=self.quantization != "none",  # RAM holds the quantized copy only
            ),
            hnsw_config=qm.HnswConfigDiff(m=self.hnsw_m, ef_construct=self.hnsw_ef_construct),
            quantization_config=self._quantization(),
        )
        self._dims[lang] = dim

    def _quantization(self) -> qm.ScalarQuantization | qm.BinaryQuantization | None:
        if self.quantization == "scalar":
            return qm.ScalarQuantization(
                scalar=qm.ScalarQuantizationConfig(
                    type=qm.ScalarType.INT8, quantile=0.99, always_ram=True
                )
            )
        if self.quantization == "binary":
            return qm.BinaryQuantization(binary=qm.BinaryQuantizationConfig(always_ram=True))
        return None

    def dimension(self, lang: str) -> int | None:
        if lang in self._dims:
            return self._dims[lang]
        name = self._name(lang)
        if not self._call(self.client.collection_exists, name):
            return None
        info = self._call(self.client.get_collection, name)
        self._check_owner(name, info)
        vectors = info.config.params.vectors
        size = vectors.size if isinstance(vectors, qm.VectorParams) else None
        if size is None:
            return None
        self._dims[lang] = int(size)
        return self._dims[lang]

    def languages(self) -> list[str]:
        """The languages of this database's collections: those under the prefix that name
        a language and belong to no other database."""
        found = []
        for c in self._call(self.client.get_collections).collections:
            if not c.name.startswith(self.prefix):
                continue
            lang = c.name[len(self.prefix) :].replace("_", "-")
            try:
                check_lang(lang)
            except ConfigError:  # another prefix's (bitextdb_test_en under bitextdb_)
                continue
            if self.owner is not None:
                owner = self._owner_of(self._call(self.client.get_collection, c.name))
                if owner is not None and owner != self.owner:
                    continue
            found.append(lang)
        return sorted(found)

    def count(self, lang: str) -> int:
        if self.dimension(lang) is None:
            return 0
        return int(self._call(self.client.count, self._name(lang), exact=True).count)

    # -- points ------------------------------------------------------------------------
    def upsert(self, lang: str, ids: np.ndarray, vectors: np.ndarray) -> None:
        ids = as_ids(ids)
        vectors = as_vectors(vectors)
        for start in range(0, len(ids), 512):
            batch = qm.Batch(
                ids=[int(i) for i in ids[start : start + 512]],
                vectors=vectors[start : start + 512].tolist(),
            )
            self._call(self.client.upsert, self._name(lang), points=batch, wait=True)

    def delete(self, lang: str, ids: np.ndarray) -> None:
        if self.dimension(lang) is None or not len(ids):
            return
        selector = qm.PointIdsList(points=[int(i) for i in as_ids(ids)])
        self._call(self.client.delete, self._name(lang), points_selector=selector, wait=True)

    def retrieve(self, lang: str, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        wanted = as_ids(ids)
        found: dict[int, Any] = {}
        for start in range(0, len(wanted), 1024):
            chunk = [int(i) for i in wanted[start : start + 1024]]
            records = self._call(
                self.client.retrieve, self._name(lang), chunk, with_payload=False, with_vectors=True
            )
            for rec in records:
                found[int(rec.id)] = rec.vector
        return in_order(wanted, found, lambda: self.dimension(lang))

    def scan(self, lang: str, batch_size: int = 8192) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self.dimension(lang) is None:
            return
        offset = None
        while True:
            records, offset = self._call(
                self.client.scroll,
                self._name(lang),
                limit=batch_size,
                offset=offset,
                with_payload=False,
                with_vectors=True,
            )
            if records:
                ids = np.array([int(r.id) for r in records], dtype=np.int64)
                yield ids, np.array([r.vector for r in records], dtype=np.float32)
            if offset is None:
                return

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
        queries = as_vectors(queries)
        if self.dimension(lang) is None or not len(queries):
            return [[] for _ in range(len(queries))]
        flt = None
        if band is not None:
            flt = qm.Filter(
                must=[qm.FieldCondition(key=band[0], match=qm.MatchValue(value=band[1]))]
            )
        elif has_field is not None:
            flt = qm.Filter(must_not=[qm.IsEmptyCondition(is_empty=qm.PayloadField(key=has_field))])
        quantized = None
        if self.quantization != "none" and not exact:  # quantized candidates, exact rescoring
            quantized = qm.QuantizationSearchParams(
                rescore=True, oversampling=rescore_oversampling(limit, ef)
            )
        params = qm.SearchParams(hnsw_ef=ef, exact=exact, quantization=quantized)
        results: list[list[Hit]] = []
        for start in range(0, len(queries), 128):
            requests = [
                qm.QueryRequest(
                    query=q.tolist(),
                    limit=limit,
                    filter=flt,
                    score_threshold=score_threshold,
                    params=params,
                    with_vector=with_vectors,
                    with_payload=False,
                )
                for q in queries[start : start + 128]
            ]
            responses = self._call(self.client.query_batch_points, self._name(lang), requests)
            for response in responses:
                results.append(
                    [
                        Hit(
                            int(p.id),
                            float(p.score),
                            np.asarray(p.vector, dtype=np.float32) if with_vectors else None,
                        )
                        for p in response.points
                    ]
                )
        return results

    def set_band(self, lang: str, field: str, band: int, ids: np.ndarray) -> None:
        name = self._name(lang)
        if (lang, field) not in self._indexed_fields:
            self._call(
                self.client.create_payload_index,
                name,
                field_name=field,
                field_schema=qm.PayloadSchemaType.INTEGER,
            )
            self._indexed_fields.add((lang, field))
        ids = as_ids(ids)
        for start in range(0, len(ids), 4096):
            chunk = [int(i) for i in ids[start : start + 4096]]
            self._call(self.client.set_payload, name, payload={field: int(band)}, points=chunk)

    def bands(self, lang: str, field: str) -> set[int]:
        name = self._name(lang)
        if not self._call(self.client.collection_exists, name):
            return set()
        # a field never set has no index yet, and a server refuses to facet such a field
        # (qdrant-client's local mode keeps no payload indexes, and facets any field)
        schema = self._call(self.client.get_collection, name).payload_schema or {}
        if not self.url.startswith("local") and field not in schema:
            return set()
        facets = self._call(self.client.facet, name, field, limit=1000, exact=True)
        return {int(hit.value) for hit in facets.hits}

    def build_index(self, lang: str) -> None:
        """A server indexes in the background on its own; nothing to do here."""

    def indexed_count(self, lang: str) -> int:
        if self.dimension(lang) is None:
            return 0
        info = self._call(self.client.get_collection, self._name(lang))
        return int(info.indexed_vectors_count or 0)

    def close(self) -> None:
        try:
            self.client.close()
        except Exception:  # closing a dead connection must not mask the real error
            log.debug("closing the Qdrant client failed", exc_info=True)


def _reason(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
