"""``INSERT`` for the session's database, able to say ``ON CONFLICT`` (PostgreSQL and
SQLite each have their own construct for it in SQLAlchemy)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session


def insert_for(s: Session, table: Table) -> Any:
    """An insert into ``table`` with ``on_conflict_do_nothing`` / ``_do_update``."""
    dialect = s.get_bind().dialect.name
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(dialect)  # pragma: no cover - no other database is supported
