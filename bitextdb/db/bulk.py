"""Many rows through the driver's own ``executemany``, compiled once by SQLAlchemy.

An ingest writes tens of thousands of rows a second. Executed the usual way, SQLAlchemy
turns every row's dict into the driver's parameters in Python, type by type. Here a
statement is compiled once for the session's dialect and the rows go to the driver as
tuples of values it takes as they are (each column's constant is converted once, by
:func:`db_value`), so per row only the driver's own loop runs. What is left of the SQL
time is mostly the database's own work (``benchmarks/storage.py`` times it).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Column, Executable
from sqlalchemy.orm import Session


def db_value(s: Session, column: Column[Any], value: Any) -> Any:
    """``value`` as the driver takes it for ``column`` (a datetime becomes SQLite's text)."""
    dialect = s.get_bind().dialect
    process = column.type.dialect_impl(dialect).bind_processor(dialect)
    return value if process is None else process(value)


def execute_many(
    s: Session, statement: Executable, keys: Sequence[str], rows: Iterable[Sequence[Any]]
) -> int:
    """Run ``statement`` once per row; each row holds the values of ``keys``, given in the
    order the statement binds them. Returns the rows changed, as the driver counts them.

    Values must be what the driver takes (ints, strings, None; see :func:`db_value`).
    """
    sql, params = _driver_form(s, statement, keys, rows)
    if not params:
        return 0
    return int(s.connection().exec_driver_sql(sql, params).rowcount)


def execute_many_returning(
    s: Session, statement: Executable, keys: Sequence[str], rows: Iterable[Sequence[Any]]
) -> list[Any]:
    """:func:`execute_many` for a statement with ``RETURNING`` on PostgreSQL (psycopg):
    the rows every execution returned, in order, from one pipelined ``executemany``."""
    sql, params = _driver_form(s, statement, keys, rows)
    if not params:
        return []
    cursor = s.connection().connection.cursor()
    try:
        cursor.executemany(sql, params, returning=True)
        found: list[Any] = []
        while True:
            found.extend(cursor.fetchall())
            if not cursor.nextset():
                return found
    finally:
        cursor.close()


def _driver_form(
    s: Session, statement: Executable, keys: Sequence[str], rows: Iterable[Sequence[Any]]
) -> tuple[str, list[Any]]:
    """``statement`` compiled once for the session's driver, and ``rows`` as its parameters."""
    compiled = statement.compile(dialect=s.connection().dialect, column_keys=list(keys))
    if compiled.positional:
        if list(compiled.positiontup or ()) != list(keys):
            raise ValueError(f"Give the keys in the statement's order: {compiled.positiontup}")
        return compiled.string, [tuple(row) for row in rows]
    return compiled.string, [dict(zip(keys, row)) for row in rows]


def select_in(
    s: Session, statement: str, values: Sequence[Any], *, before: Sequence[Any] = ()
) -> list[Any]:
    """Rows of ``statement``, whose ``{in}`` is filled with one placeholder per value.

    ``statement`` is plain SQL with ``{p}`` for each parameter in ``before`` (given first).
    """
    connection = s.connection()
    mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    sql = statement.format(p=mark, **{"in": ", ".join([mark] * len(values))})
    # the driver's own cursor, in the session's transaction: SQLAlchemy's result rows cost
    # more Python time than the query itself (an ingest's busiest thread, profiled on a GPU)
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql, (*before, *values))
        return cursor.fetchall()
    finally:
        cursor.close()
