"""An HTTP face for one open ``BitextDB``: FastAPI endpoints over the library calls.

Needs the ``serve`` extra (``pip install 'bitextdb[serve]'``: FastAPI and uvicorn); the rest
of bitextdb never imports this module. ``bitextdb serve`` runs :func:`create_app` under
uvicorn.

Endpoints (JSON unless said otherwise; OpenAPI docs at ``/docs``):

* ``GET /health`` (or ``HEAD``) -> ``{"status": "ok"}`` (never needs the API key, never
  waits for the db);
* ``GET /stats`` -> ``BitextDB.stats()``;
* ``POST /translate`` ``{"text": str} | {"texts": [str]}, "from", "to", "top"=5`` ->
  ``{"results": [Translation.as_dict(), ...]}``;
* ``GET /export?pair=en-de&min_score=&since=&with_sources=&with_ids=&max_length_ratio=``
  ``&skip_identical=&format=`` -> NDJSON, one jsonl export record a line, streamed from
  :func:`bitextdb.export.iter_records` (``format=tsv``: margin, src, tgt lines;
  ``format=tmx``: a TMX document, as the file export writes them);
* ``GET /withdrawn?pair=en-de&since=&min_score=&format=`` -> the pairs to drop since
  then, from :func:`bitextdb.export.iter_withdrawn`; both streams carry
  ``X-Bitextdb-As-Of``, the ``since`` to ask with next time;
* ``POST /ingest`` ``{"lang", "sentences": [str], "source"="api", "split_sentences"=false,
  "lid"=null, "lid_accept"=[], "mine"=true}`` -> the ingest
  summary of ``BitextDB.ingest_texts``.

Errors are ``{"error": "one sentence"}`` (validation errors add ``"detail"``): bad input 400,
unknown language or pair 404, busy 409, invalid request 422 (a query parameter given twice
or one the endpoint does not take included), unavailable store 503, anything unexpected 500
(logged here, no traceback in the response). With an API key every request but ``/health``
needs ``X-API-Key: KEY`` or ``Authorization: Bearer KEY`` (else 401).

Qdrant Edge and the SQL session factory are shared, so every call on the ``BitextDB`` holds
one lock; endpoints are plain functions that FastAPI runs in its thread pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import itertools
import logging
import threading
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl

from fastapi import Depends, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .config import check_lang
from .db.tables import utcnow
from .errors import (
    BitextDBError,
    BusyError,
    HistoryGoneError,
    InputError,
    StoreUnavailableError,
    UnknownSourceError,
)
from .export import (
    STREAM_FORMATS,
    PairSpec,
    check_export_options,
    document_ends,
    iter_records,
    iter_withdrawn,
    parse_directed_pair,
    parse_since,
    render_records,
)
from .filters import PairFilter

if TYPE_CHECKING:
    from .api import BitextDB

log = logging.getLogger(__name__)

#: export records serialised per chunk of a stream (the lock is held per chunk)
EXPORT_CHUNK = 1000
#: ``format`` of the export streams
StreamFormat = Literal["jsonl", "tsv", "tmx"]
FORMAT_QUERY = Query("jsonl", description="jsonl (NDJSON), tsv (margin, src, tgt) or tmx.")
#: the response header of ``/export`` and ``/withdrawn`` to pass back as ``since`` next time
AS_OF_HEADER = "X-Bitextdb-As-Of"
#: the most candidates one query may ask for
MAX_TOP = 1000
#: paths that never need the API key
OPEN_PATHS = frozenset({"/health"})


class NotFoundError(InputError):
    """A language or language pair the database does not hold (HTTP 404)."""


# -- request bodies -----------------------------------------------------------------------------
class TranslateRequest(BaseModel):
    """``{"text": ...}`` or ``{"texts": [...]}``, with ``from``, ``to`` and ``top``."""

    model_config = ConfigDict(extra="forbid", strict=True)  # "yes" and 1 are no booleans

    text: str | None = Field(None, description="One sentence to translate.")
    texts: list[str] | None = Field(None, description="Several sentences, encoded in one batch.")
    src: str = Field(alias="from", description="Language of the sentences, e.g. en.")
    tgt: str = Field(alias="to", description="Language to find translations in, e.g. de.")
    top: int = Field(5, ge=1, le=MAX_TOP, strict=True, description="Candidates per sentence.")

    @model_validator(mode="after")
    def _one_of_text_or_texts(self) -> TranslateRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError('give either "text" or "texts"')
        if self.texts is not None and not self.texts:
            raise ValueError('"texts" is empty')
        return self

    def queries(self) -> list[str]:
        return [self.text] if self.text is not None else list(self.texts or [])


class IngestRequest(BaseModel):
    """Sentences of one language; mined against the other languages unless ``mine`` is false."""

    model_config = ConfigDict(extra="forbid", strict=True)  # "yes" and 1 are no booleans

    lang: str = Field(description="Language code of the sentences.")
    sentences: list[str] = Field(description="The sentences (normalised and deduplicated).")
    source: str = Field("api", min_length=1, description="Name of the source they are added to.")
    split_sentences: bool = Field(
        False, description="Each item is a paragraph or document: split it into sentences."
    )
    lid: float | None = Field(
        None,
        gt=0,
        le=1,
        description="Skip sentences that py3langid puts in another language with at least "
        "this probability (0.5: a majority).",
    )
    lid_accept: list[str] = Field(
        [], description="Languages that count as this one for lid (e.g. bs, sr for hr)."
    )
    mine: bool = Field(True, description="Mine the new sentences right away.")


class RemoveRequest(BaseModel):
    """Sources of one language to remove, as ``bitextdb remove`` does."""

    model_config = ConfigDict(extra="forbid", strict=True)  # "yes" and 1 are no booleans

    lang: str | None = Field(
        None, description="Language code of the sources (with missing: only its; optional)."
    )
    sources: list[str] = Field([], description="Source names (see GET /sources).")
    missing: bool = Field(False, description="Instead: every source whose file was deleted.")
    dry_run: bool = Field(False, description="Only count what would go.")


# -- errors -------------------------------------------------------------------------------------
def status_of(exc: BitextDBError) -> int:
    """The HTTP status of a domain error."""
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, HistoryGoneError):
        return 410
    if isinstance(exc, StoreUnavailableError):
        return 503
    if isinstance(exc, BusyError):
        return 409
    return 400  # InputError, ConfigError, ModelMismatchError, ModelLoadError, ...


def _error(status: int, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


def _validation_detail(errors: Any) -> list[dict[str, Any]]:
    """Pydantic's errors without the input echoed back or unserialisable context."""
    return [
        {"type": str(e.get("type")), "loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg")}
        for e in errors
    ]


# -- authentication -----------------------------------------------------------------------------
class APIKeyMiddleware:
    """Refuse every request but ``/health`` without ``X-API-Key`` or ``Bearer`` = the key."""

    def __init__(self, app: ASGIApp, api_key: str) -> None:
        self.app = app
        self.key = api_key.encode("utf-8")

    def _allowed(self, scope: Scope) -> bool:
        given: list[bytes] = []
        for name, value in scope.get("headers", ()):
            if name == b"x-api-key":
                given.append(value.strip())
            elif name == b"authorization":
                scheme, _, token = value.strip().partition(b" ")
                if scheme.lower() == b"bearer":
                    given.append(token.strip())
        # compare every offered value, in constant time each
        return any([hmac.compare_digest(value, self.key) for value in given])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        response = JSONResponse(
            {"error": "Missing or wrong API key; send X-API-Key or Authorization: Bearer."},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)


class RepeatedQueryMiddleware:
    """Refuse a query string that names one parameter twice (``?pair=en-de&pair=en-fr``)
    with a 422: the framework would take the last one and answer for it silently."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope.get("query_string")
            and scope["path"] not in OPEN_PATHS
        ):
            query = scope["query_string"].decode("latin-1")
            names = Counter(name for name, _ in parse_qsl(query, keep_blank_values=True))
            repeated = sorted(name for name, count in names.items() if count > 1)
            if repeated:
                listed = ", ".join(repeated)
                response = _error(
                    422, f"The query gives {listed} more than once; give each parameter once."
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def refuse_unknown_query(request: Request) -> None:
    """Refuse, with a 422, a query parameter the endpoint does not take (``min-score`` for
    ``min_score``, ``cursor`` on ``/export``): the framework would leave it out and answer
    another question than the one asked, as a whole export for a filtered one."""
    if request.url.path in OPEN_PATHS or not request.query_params:
        return
    # the API's own description (built once, then cached) names what each endpoint takes
    paths = request.app.openapi().get("paths", {})
    operation = paths.get(request.url.path, {}).get(request.method.lower())
    if operation is None:
        return
    parameters = operation.get("parameters", [])
    known = sorted(p["name"] for p in parameters if p.get("in") == "query")
    unknown = sorted(set(request.query_params) - set(known))
    if unknown:
        takes = f"it takes {', '.join(known)}" if known else "it takes none"
        raise StarletteHTTPException(
            422,
            f"{request.url.path} has no query parameter {', '.join(unknown)}; {takes}.",
        )


class CatchAllMiddleware:
    """Answer an unexpected exception with a JSON 500 (no traceback) and log it here.

    Starlette's own 500 handler answers and then re-raises, which makes the server drop
    the connection; this one answers and keeps it. An error after the response started
    (in a stream) cannot change the status any more: it is re-raised, and the server
    cuts the stream short. A request still running when the server's grace period at
    shutdown ends is cancelled (a ``CancelledError``, no ``Exception``): it is answered
    with a JSON 503, its committed work kept, instead of uvicorn's plain-text 500 and a
    traceback in the log.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def watch(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, watch)
        except asyncio.CancelledError:
            log.warning("stopped %s %s at shutdown", scope["method"], scope["path"])
            if started:
                raise
            message = "The server stopped before this request ended; what it committed is kept."
            await _error(503, message)(scope, receive, send)
        except Exception as exc:
            log.error("unexpected error on %s %s", scope["method"], scope["path"], exc_info=exc)
            if started:
                raise
            message = f"Internal server error ({type(exc).__name__}); see the server log."
            await _error(500, message)(scope, receive, send)


# -- the app ------------------------------------------------------------------------------------
def create_app(db: BitextDB, *, api_key: str | None) -> FastAPI:
    """The FastAPI app over ``db`` (which the caller opens and closes).

    ``api_key`` (None or empty: no authentication) is required on every request but
    ``/health``. At startup the database's model is loaded once, when it loads; a database
    of your own vectors serves everything but the translation of new sentences without it.
    """
    lock = threading.Lock()

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        from starlette.concurrency import run_in_threadpool

        await run_in_threadpool(_warm, db, lock)
        yield

    app = FastAPI(
        title="bitextdb",
        summary="Translations, exports and ingestion of a bitext database.",
        description=__doc__,
        version=_version(),
        lifespan=lifespan,
        dependencies=[Depends(refuse_unknown_query)],
    )
    app.state.db = db
    app.state.lock = lock

    # -- error handlers ----------------------------------------------------------------------
    @app.exception_handler(BitextDBError)
    async def domain_error(_request: Request, exc: BitextDBError) -> JSONResponse:
        return _error(status_of(exc), str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        detail = _validation_detail(exc.errors())
        if any(e["type"] == "json_invalid" for e in detail):
            return _error(400, "The request body is not valid JSON.", detail=detail)
        kind = request.headers.get("content-type", "")
        if request.method == "POST" and "json" not in kind.lower():
            # FastAPI reads such a body as text and says only that it is not an object
            return _error(
                422,
                f"Send the body as JSON with Content-Type: application/json, not {kind or 'none'}.",
                detail=detail,
            )
        return _error(422, "The request does not match the API; see detail.", detail=detail)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = _error(exc.status_code, str(exc.detail))
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        return response

    # -- endpoints ---------------------------------------------------------------------------
    # HEAD too, as load balancers and uptime checkers often probe with it
    @app.head("/health", include_in_schema=False)
    @app.get("/health", summary="Liveness check (no API key needed)")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/stats", summary="Languages, counts, model, settings and stores")
    def stats() -> dict[str, Any]:
        with lock:
            return db.stats()

    @app.post("/translate", summary="Ranked translations of one or several sentences")
    def translate(body: TranslateRequest) -> dict[str, Any]:
        with lock:
            _require_language(db, body.tgt)
            results = db.translate_many(body.queries(), body.src, body.tgt, top=body.top)
        return {"results": [t.as_dict() for t in results]}

    @app.post("/ingest", summary="Ingest sentences of one language (and mine them)")
    def ingest(body: IngestRequest) -> dict[str, Any]:
        with lock:
            return db.ingest_texts(
                body.lang,
                body.sentences,
                source=body.source,
                split_sentences=body.split_sentences,
                lid=body.lid,
                lid_accept=body.lid_accept,
                mine=body.mine,
            )

    @app.get("/sources", summary="The sources ingested, with their counts")
    def sources(lang: str | None = Query(None, description="Only this language's.")) -> Any:
        with lock:
            return db.sources(lang)

    @app.post("/remove", summary="Remove sources and what only they brought; re-mine")
    def remove(body: RemoveRequest) -> Any:
        if body.missing and body.sources:
            raise InputError("Give sources or missing: true, not both.")
        if not body.missing and not body.sources:
            raise InputError("Name the sources to remove in sources, or give missing: true.")
        if body.lang is None and not body.missing:
            raise InputError("Removing sources by name needs their lang.")
        with lock:
            if body.lang is not None:
                check_lang(body.lang)
            if body.missing:  # a list: one report a language, as remove --missing --json
                return db.remove_missing(body.lang, dry_run=body.dry_run)
            try:
                return db.remove(str(body.lang), body.sources, dry_run=body.dry_run)
            except UnknownSourceError as exc:
                raise NotFoundError(str(exc)) from exc

    @app.get(
        "/export",
        summary="The accepted pairs of a language pair, best first (NDJSON, TSV or TMX)",
        response_class=StreamingResponse,
        responses={200: {"content": {media: {} for media in STREAM_FORMATS.values()}}},
    )
    def export(
        pair: str = Query(description="Directed pair: en-de puts English in src."),
        min_score: float | None = Query(None, description="Lowest margin [the threshold]."),
        since: datetime | None = Query(None, description="Only pairs changed since (ISO)."),
        with_sources: bool = Query(False, description="Add the source names of each side."),
        with_ids: bool = Query(False, description="Add the external ids of each side."),
        max_length_ratio: float | None = Query(
            None, description="Drop pairs whose longer side is more than this times longer."
        ),
        skip_identical: bool = Query(False, description="Drop pairs whose sides are equal."),
        format: StreamFormat = FORMAT_QUERY,
    ) -> StreamingResponse:
        spec = parse_directed_pair(pair)  # a malformed pair or filter is bad input (400) ...
        PairFilter(max_length_ratio, skip_identical)
        parse_since(since)
        check_export_options(format, min_score, with_sources, with_ids)
        with lock:
            as_of = utcnow()
            try:
                records = iter_records(
                    db,
                    pair,
                    min_score=min_score,
                    since=since,
                    with_sources=with_sources,
                    with_ids=with_ids,
                    max_length_ratio=max_length_ratio,
                    skip_identical=skip_identical,
                )
            except InputError as exc:  # ... a well-formed one the database lacks is not found
                raise NotFoundError(str(exc)) from exc
        return _stream(records, lock, as_of, format, spec)

    @app.get(
        "/withdrawn",
        summary="The pairs to drop since a moment (NDJSON, TSV or TMX)",
        response_class=StreamingResponse,
        responses={200: {"content": {media: {} for media in STREAM_FORMATS.values()}}},
    )
    def withdrawn(
        pair: str = Query(description="Directed pair: en-de puts English in src."),
        since: datetime = Query(description="The moment of the consumer's last export (ISO)."),
        min_score: float | None = Query(None, description="The consumer's cut [the threshold]."),
        format: StreamFormat = FORMAT_QUERY,
    ) -> StreamingResponse:
        spec = parse_directed_pair(pair)
        check_export_options(format, min_score)
        parse_since(since)
        with lock:
            as_of = utcnow()
            try:
                records = iter_withdrawn(db, pair, since=since, min_score=min_score)
            except HistoryGoneError:
                raise
            except InputError as exc:
                raise NotFoundError(str(exc)) from exc
        return _stream(records, lock, as_of, format, spec)

    app.add_middleware(CatchAllMiddleware)
    app.add_middleware(RepeatedQueryMiddleware)
    if api_key:  # added last: the outermost
        app.add_middleware(APIKeyMiddleware, api_key=api_key)
    return app


def _require_language(db: BitextDB, lang: str) -> None:
    lang = check_lang(lang)
    if db.index.count(lang) == 0:
        raise NotFoundError(f"There are no {lang} sentences in this database.")


def _stream(
    records: Iterator[dict[str, Any]],
    lock: threading.Lock,
    as_of: datetime,
    fmt: str,
    spec: PairSpec,
) -> StreamingResponse:
    """The records in ``fmt`` (of :data:`STREAM_FORMATS`), with the moment they are as of
    in ``X-Bitextdb-As-Of``.

    ``as_of`` is taken under the lock every write of this process holds, before the read
    starts: whatever changed before it is in the stream, whatever changes after it has a
    later time, so ``since=<as_of>`` next time misses nothing (and may repeat a little).
    """
    return StreamingResponse(
        _chunks(records, lock, fmt, document_ends(fmt, spec)),
        media_type=STREAM_FORMATS[fmt],
        headers={AS_OF_HEADER: as_of.isoformat()},
    )


def _chunks(
    records: Iterator[dict[str, Any]], lock: threading.Lock, fmt: str, ends: tuple[str, str]
) -> Iterator[bytes]:
    """Export records as chunks of ``fmt`` between ``ends`` (a document's head and tail);
    the lock is held while a chunk is read, not sent.

    Closing (a client gone) releases the cursor without the lock: that touches only the
    export's own SQL connection, and may run on the event loop, which must never wait.
    """
    head, tail = ends
    try:
        if head:
            yield head.encode("utf-8")
        while True:
            with lock:
                chunk = list(itertools.islice(records, EXPORT_CHUNK))
            if not chunk:
                break
            yield render_records(fmt, chunk).encode("utf-8")
        if tail:
            yield tail.encode("utf-8")
    finally:
        close = getattr(records, "close", None)
        if close is not None:
            close()


def _warm(db: BitextDB, lock: threading.Lock) -> None:
    """Load the model once, if it loads: a database of own vectors may have none."""
    with lock:
        try:
            encoder = db.encoder
        except BitextDBError as exc:
            log.warning(
                "The model %r was not loaded (%s); only sentences stored in the database can "
                "be translated.",
                db.settings.model,
                exc,
            )
            return
    log.info("model %s loaded on %s", db.settings.model, encoder.device)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("bitextdb")
    except PackageNotFoundError:  # pragma: no cover - a source tree without metadata
        return "0"
