"""Databases at an older schema revision, for the migration tests."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from bitextdb.db import Database
from bitextdb.db.tables import Base


def database_at(url: str, revision: str, *statements: str) -> Database:
    """The database at ``url`` migrated to ``revision`` only, with ``statements`` (SQL
    written for that revision) run in the same transaction."""
    database = Database(url)
    migrate(database, revision, *statements)
    assert database.current_revision() == revision
    return database


def migrate(database: Database, revision: str, *statements: str, down: bool = False) -> None:
    """Run ``statements``, then upgrade (or, ``down``, downgrade) ``database`` to
    ``revision``, all in one transaction."""
    cfg = database._alembic_config()
    with database.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        if down:
            for statement in statements:
                conn.execute(text(statement))
            command.downgrade(cfg, revision)
            return
        command.upgrade(cfg, revision)
        for statement in statements:
            conn.execute(text(statement))


def model_differences(database: Database) -> list[object]:
    """What the SQLAlchemy models hold that the migrated schema lacks, or the other way
    round (alembic's ``compare_metadata``): empty when they agree."""
    with database.engine.connect() as conn:
        return list(compare_metadata(MigrationContext.configure(conn), Base.metadata))
