"""Engine, sessions, migrations and stored settings of one SQL database."""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, event, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import (
    ArgumentError,
    DataError,
    NoSuchModuleError,
    OperationalError,
    SQLAlchemyError,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from ..config import Settings, mask_url
from ..errors import ConfigError, InputError, NotInitializedError, StoreUnavailableError
from .tables import Setting
from .upsert import insert_for


def migrations_dir() -> Path:
    """The Alembic scripts: inside the wheel (``bitextdb/_migrations``) or the source tree."""
    package_dir = Path(__file__).resolve().parent.parent
    for candidate in (package_dir / "_migrations", package_dir.parent / "migrations"):
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigError("The bitextdb installation lacks its migrations folder; reinstall it.")


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_own_transactions(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # the driver issues no BEGIN or COMMIT itself


def failure_reason(exc: BaseException) -> str:
    """The first line of what the database's driver said (SQLAlchemy's message adds the
    statement and a link)."""
    return str(getattr(exc, "orig", exc)).strip().splitlines()[0]


def never_initialised(url: str) -> bool:
    """Whether the SQL database at ``url`` has never been initialised, found without
    writing anything: a SQLite file that is not there yet is not created."""
    database = Database(url)
    try:
        return database.current_revision() is None
    finally:
        database.dispose()


class Database:
    """One SQL database: ``Database(url).session()`` yields a transactional session."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = self._create_engine(url)
        # a SQLite file is made by ``upgrade`` only: asking a database that is not there for
        # its revision (``db status``) writes nothing
        name = self.engine.url.database
        on_disk = self.engine.dialect.name == "sqlite" and name not in (None, "", ":memory:")
        self._file = Path(str(name)) if on_disk else None
        if self._file is not None:
            event.listen(self.engine, "do_connect", self._make_folder)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # SQLite has one writer at a time; threads that both write (ingest's stages) wait
        # on this lock, woken at once, instead of in SQLite's busy handler, which sleeps in
        # steps of up to 100 ms
        self._write_lock = (
            threading.Lock() if self.engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )
        self._schema: tuple[str | None] | None = None  # PostgreSQL: (current_schema(),)

    def _make_folder(self, *_args: Any) -> None:
        """Before SQLite makes its file on the first connection: the folder it goes in."""
        assert self._file is not None
        self._file.parent.mkdir(parents=True, exist_ok=True)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @staticmethod
    def _create_engine(url: str) -> Engine:
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise ConfigError(f"{mask_url(url)!r} is not a database URL.") from exc
        kwargs: dict[str, Any] = {"future": True}
        if parsed.get_backend_name() == "postgresql":
            kwargs["connect_args"] = {"connect_timeout": 5}
            kwargs["pool_pre_ping"] = True
        try:
            engine = create_engine(parsed, **kwargs)
        except (NoSuchModuleError, ModuleNotFoundError) as exc:
            raise ConfigError(
                f"No driver for {parsed.drivername}; for PostgreSQL install "
                "'bitextdb[postgres]' and use a postgresql+psycopg:// URL."
            ) from exc
        if engine.dialect.name == "sqlite":
            event.listen(engine, "connect", _sqlite_pragmas)
        return engine

    def ping(self) -> None:
        """Connect once, turning any failure into one clear sentence."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
        except SQLAlchemyError as exc:
            reason = failure_reason(exc)
            raise StoreUnavailableError(
                f"Cannot reach the database at {mask_url(self.url)}: {reason}"
            ) from exc

    @contextlib.contextmanager
    def session(self, *, writes: bool = False) -> Iterator[Session]:
        """A session in one transaction: committed on success, rolled back on error.

        ``writes``: the session writes and other threads of this process may write at the
        same time; on SQLite they then take turns on a lock of this process.
        """
        with self._write_lock if writes else contextlib.nullcontext(), self._sessions() as session:
            try:
                yield session
                session.commit()
            except DataError as exc:  # a value the database refuses (PostgreSQL is strict)
                session.rollback()
                reason = failure_reason(exc)
                raise InputError(f"The database refused a value: {reason}") from exc
            except OperationalError as exc:
                session.rollback()
                reason = failure_reason(exc)
                raise StoreUnavailableError(f"The database failed: {reason}") from exc
            except BaseException:
                session.rollback()
                raise

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A session for reading only, whose every read sees the database as its first read
        did: a stream read batch by batch (an export) stays whole and consistent while
        other connections commit meanwhile (a removal mid-export took texts that the
        stream's pairs still named). PostgreSQL: REPEATABLE READ; SQLite: one read
        transaction (WAL lets writers commit beside it)."""
        with self.session() as s:
            if self.dialect == "postgresql":
                s.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            elif self.dialect == "sqlite":  # the driver begins no transaction for reads
                s.connection().exec_driver_sql("BEGIN")
            yield s

    @contextlib.contextmanager
    def advisory_lock(self, name: str, *, shared: bool = False) -> Iterator[None]:
        """Hold a database-wide lock named ``name`` (PostgreSQL advisory lock), exclusive
        or, with ``shared``, shared with other shared holders.

        Lets several workers on one PostgreSQL database mine different language pairs at
        once while never two of them the same pair. Elsewhere a no-op: an embedded home is
        already held by one process (``bitextdb.lock``).
        """
        with self.advisory_locks([name], shared=shared):
            yield

    @contextlib.contextmanager
    def advisory_locks(self, names: Sequence[str], *, shared: bool = False) -> Iterator[None]:
        """Hold the locks ``names``, taken in the order given, all on one connection: a
        removal locks every language pair of its language, and a connection a lock would
        exhaust the pool (15) at fifteen partner languages."""
        if self.dialect != "postgresql" or not names:
            yield
            return
        kind = "_shared" if shared else ""
        with self.engine.connect() as conn:
            taken: list[int] = []
            try:
                keys = [self._advisory_key(conn, name) for name in names]
                for key in keys:
                    try:
                        conn.execute(text(f"SELECT pg_advisory_lock{kind}(:key)"), {"key": key})
                        conn.commit()
                    except OperationalError as exc:  # the connection went
                        reason = failure_reason(exc)
                        raise StoreUnavailableError(f"The database failed: {reason}") from exc
                    taken.append(key)
                yield
            finally:
                # a lost connection took its locks with it: nothing is left to release
                with contextlib.suppress(OperationalError):
                    for key in reversed(taken):
                        conn.execute(text(f"SELECT pg_advisory_unlock{kind}(:key)"), {"key": key})
                        conn.commit()

    def _advisory_key(self, conn: Any, name: str) -> int:
        """The 63-bit key of the lock ``name`` in this database's schema: advisory locks
        span a whole PostgreSQL database, and two bitextdb databases in two schemas of it
        must not wait on each other's locks."""
        scoped = f"{self._current_schema(conn)}\x1f{name}".encode()
        return int.from_bytes(hashlib.blake2b(scoped, digest_size=8).digest(), "big") >> 1

    def _current_schema(self, conn: Any) -> str | None:
        """PostgreSQL's ``current_schema()``, where the tables are made: the first schema
        of the connection's ``search_path`` that exists (None: none does)."""
        if self._schema is None:
            try:
                self._schema = (conn.execute(text("SELECT current_schema()")).scalar(),)
            except OperationalError as exc:  # the connection went
                reason = failure_reason(exc)
                raise StoreUnavailableError(f"The database failed: {reason}") from exc
        return self._schema[0]

    def _require_schema_to_create_in(self) -> None:
        """A ``search_path`` that names no existing schema left CREATE TABLE failing with
        a raw driver error; say which schema to make."""
        with self.engine.connect() as conn:
            if self._current_schema(conn) is not None:
                return
            search_path = conn.execute(text("SHOW search_path")).scalar()
        folded = (
            " (PostgreSQL reads a name without double quotes in lower case: a name with "
            "capitals goes in quotes, %22Name%22 in the URL)"
            if any(c.isupper() for c in str(search_path))
            else ""
        )
        raise ConfigError(
            f"The PostgreSQL database at {mask_url(self.url)} has no schema to make bitextdb's "
            f"tables in: its search_path ({search_path}) names none that exists{folded}; "
            "create the schema first (CREATE SCHEMA name) or name one that exists."
        )

    # -- migrations ------------------------------------------------------------------
    @staticmethod
    def _alembic_config() -> Config:
        cfg = Config()
        cfg.set_main_option("script_location", str(migrations_dir()))
        return cfg

    def current_revision(self) -> str | None:
        """The schema revision the database is at (None: never initialised)."""
        if self._file is not None and not self._file.exists():
            return None
        self.ping()
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                self._refuse_tables_elsewhere(conn)
            return MigrationContext.configure(conn).get_current_revision()

    def _refuse_tables_elsewhere(self, conn: Any) -> None:
        """A ``search_path`` of several schemas (``team_b,public``) found another database's
        tables in a later schema while new ones would be made in the first: every command
        read that database, and ``init`` never made its own."""
        found = conn.execute(
            text(
                "SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE c.oid = to_regclass('alembic_version')"
            )
        ).scalar()
        current = self._current_schema(conn)
        if found is not None and found != current:
            search_path = conn.execute(text("SHOW search_path")).scalar()
            raise ConfigError(
                f"The PostgreSQL search_path ({search_path}) of {mask_url(self.url)} finds "
                f"bitextdb's tables in the schema {found} but would make new ones in "
                f"{current}: name one schema in the URL's search_path."
            )

    @staticmethod
    def head_revision() -> str:
        """The newest schema revision this bitextdb knows."""
        return ScriptDirectory.from_config(Database._alembic_config()).get_current_head() or ""

    def upgrade(self) -> None:
        """Create or upgrade the schema to the newest revision (one transaction per step).

        A step that fails or is killed half-way leaves nothing of itself behind, so the
        next ``init`` starts it again. On SQLite that takes an engine of its own: Python's
        driver runs DDL outside transactions unless told to leave them to SQLite.
        """
        self.ping()  # a database out of reach is said so before the lock below meets it
        # two inits of one new PostgreSQL database at once both created alembic_version;
        # the second now waits and finds the schema made
        if self.dialect == "postgresql":
            self._require_schema_to_create_in()
        with self.advisory_lock("bitextdb-schema"):
            self._refuse_newer(self.current_revision())
            cfg = self._alembic_config()
            engine = self._ddl_engine() if self.dialect == "sqlite" else self.engine
            try:
                with engine.begin() as conn:
                    cfg.attributes["connection"] = conn
                    command.upgrade(cfg, "head")
            finally:
                if engine is not self.engine:
                    engine.dispose()

    def _ddl_engine(self) -> Engine:
        """A SQLite engine whose transactions SQLite itself runs, DDL included."""
        engine = create_engine(self.engine.url, poolclass=NullPool)
        event.listen(engine, "connect", _sqlite_pragmas)
        event.listen(engine, "connect", _sqlite_own_transactions)
        event.listen(engine, "begin", lambda conn: conn.exec_driver_sql("BEGIN"))
        return engine

    def require_schema(self) -> None:
        current = self.current_revision()
        if current is None:
            raise NotInitializedError(
                f"No bitextdb database at {mask_url(self.url)}; run `bitextdb init` first."
            )
        self._refuse_newer(current)
        if current != self.head_revision():
            raise NotInitializedError(
                f"The database schema is at revision {current}, this bitextdb needs "
                f"{self.head_revision()}; run `bitextdb db upgrade`."
            )

    def _refuse_newer(self, current: str | None) -> None:
        """A revision this bitextdb has no script for was written by a newer one."""
        script = ScriptDirectory.from_config(self._alembic_config())
        if current is not None and current not in {r.revision for r in script.walk_revisions()}:
            raise ConfigError(
                f"The database schema is at revision {current}, which this bitextdb does not "
                f"know (its newest is {self.head_revision()}): a newer bitextdb made it (upgrade "
                "bitextdb: pip install -U bitextdb), or it was changed by hand."
            )

    # -- settings --------------------------------------------------------------------
    def load_settings(self) -> Settings | None:
        with self.session() as s:
            rows = s.execute(select(Setting.key, Setting.value)).all()
        if not rows:
            return None
        return Settings.from_dict(dict(rows))

    def save_settings(self, settings: Settings) -> None:
        with self.session() as s:
            for key, value in settings.to_dict().items():
                s.merge(Setting(key=key, value=value))

    def note(self, key: str) -> Any:
        """A value kept beside the settings (not one of them), or None."""
        with self.session() as s:
            return s.execute(select(Setting.value).where(Setting.key == key)).scalar()

    def keep_note(self, key: str, value: Any) -> None:
        with self.session() as s:
            s.merge(Setting(key=key, value=value))

    def claim_note(self, key: str, value: Any) -> Any:
        """Keep ``value`` under ``key`` unless a value is kept there already (another
        process' at the same moment included); the value kept afterwards."""
        with self.session() as s:
            s.execute(
                insert_for(s, Setting.__table__)
                .values(key=key, value=value)
                .on_conflict_do_nothing(index_elements=["key"])
            )
        return self.note(key)

    def dispose(self) -> None:
        self.engine.dispose()
