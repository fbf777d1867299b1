"""``bitextdb serve``: the HTTP API (FastAPI under uvicorn) over one open database."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import click

from ..errors import BitextDBError, InputError
from . import Context, cli, friendly, pass_ctx

if TYPE_CHECKING:
    from ..api import BitextDB

#: where the API key comes from (never a command-line option: those show up in `ps`)
API_KEY_ENV = "BITEXTDB_API_KEY"
LOOPBACK = ("127.0.0.1", "::1", "localhost")


def _bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: any free port), or one clear sentence."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        sock = socket.socket(family, kind, proto)
    except OSError as exc:
        raise InputError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.") from exc
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise InputError(f"Cannot listen on {host}:{port}: {exc.strerror or exc}.") from exc
    sock.set_inheritable(True)
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any free."
)
@pass_ctx
@friendly
def serve(ctx: Context, host: str, port: int) -> None:
    """Serve the database over HTTP (needs 'bitextdb[serve]'); docs at /docs.

    Endpoints: GET /health, GET /stats, POST /translate, POST /ingest, GET /sources,
    POST /remove, GET /export and GET /withdrawn (NDJSON, TSV or TMX).
    With BITEXTDB_API_KEY set, every request but /health needs the header X-API-Key: KEY
    or Authorization: Bearer KEY. The home is held until the server stops (Ctrl+C).
    """
    try:
        import uvicorn

        from ..serve import create_app
    except ImportError as exc:
        raise BitextDBError(
            f"`bitextdb serve` needs FastAPI and uvicorn ({exc.name or exc} is missing); "
            "install them with: pip install 'bitextdb[serve]'"
        ) from exc
    api_key = os.environ.get(API_KEY_ENV) or None
    db = ctx.open()
    app = None
    try:
        db.progress = None  # no progress bars on a server's terminal
        app = create_app(db, api_key=api_key)
        sock = _bind(host, port)
        url = _url(host, sock.getsockname()[1])
        click.echo(
            f"Serving {db.locations.home} at {url} (API docs at {url}/docs); "
            f"{'API key required' if api_key else 'no API key'}. Ctrl+C stops."
        )
        if api_key is None and host not in LOOPBACK:
            ctx.say(
                f"Warning: {host} is reachable from other machines and {API_KEY_ENV} is not "
                "set: anyone who reaches it can read and change the database."
            )
        server = uvicorn.Server(
            uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=10)
        )
        with _stop_on_sigterm():
            try:
                server.run(sockets=[sock])
            except (KeyboardInterrupt, _Stopped):
                pass  # uvicorn shut down gracefully, then re-raised the signal
            finally:
                sock.close()
        if not server.started:
            raise BitextDBError("The server did not start; see the messages above.")
        ctx.say("Stopped.")
    finally:
        close_when_idle(db, None if app is None else app.state.lock, ctx.say)


def close_when_idle(db: BitextDB, lock: threading.Lock | None, say: Callable[[str], None]) -> None:
    """Close ``db`` once no request works on it. uvicorn gives up on a request after its
    graceful shutdown (10 s), but the thread doing its work goes on; releasing the home
    then would let another process write beside it."""
    if lock is not None and not lock.acquire(blocking=False):
        say("Waiting for the work of a request in progress to end before releasing the home.")
        lock.acquire()
    db.close()


class _Stopped(Exception):
    """SIGTERM arrived (after uvicorn's graceful shutdown re-raised it)."""


@contextlib.contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """Turn SIGTERM into an exception, so the database is closed as after Ctrl+C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(_signum: int, _frame: object) -> None:
        raise _Stopped

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
