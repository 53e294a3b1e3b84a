"""Bulk INSERTs for the sync batch's rows: one prepared statement run over every row (the
driver's `executemany`), the values converted by the columns' own SQLAlchemy types.

Why not `connection.execute(insert(table), rows)`: SQLAlchemy turns an `executemany` INSERT into
"insertmanyvalues", one statement with a VALUES group per row. On PostgreSQL psycopg then
rewrites each such statement's placeholders in Python, uncached (a 200-message batch of `message`
rows is a 170 kB statement with 6,000 placeholders): about two thirds of the CPU of writing the
row. The single-row statement here is converted once and cached by psycopg, and its rows go out
in one pipeline. SQLite is left to SQLAlchemy: `sqlite3` prepares the long statement in C, and
its own `executemany` was no faster (slower for `message` rows, measured).

Nothing else changes: the statement is compiled by SQLAlchemy for the connection's dialect (the
same SQL, casts included, as a one-row insert), it runs through `Connection.exec_driver_sql` (so
the engine's events and error translation apply), and a table whose omitted columns have a
Python-side default, or rows of other shapes, go through `insert()` as before.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Executable, Table, insert
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session

_Processor = Callable[[Any], Any] | None


@lru_cache(maxsize=64)
def _prepared(
    dialect: Dialect, table: Table, keys: tuple[str, ...]
) -> tuple[str, tuple[str, ...], tuple[_Processor, ...], bool] | None:
    """(SQL, parameter order, bind processors, positional) of a one-row INSERT of `keys`, or
    None when the plain route must be taken (see the module docstring)."""
    columns = table.c
    if any(key not in columns for key in keys):
        return None
    for column in columns:
        if column.key not in keys and not column.primary_key and column.default is not None:
            return None  # Core would fill this default in; keep that to Core
    compiled = insert(table).compile(dialect=dialect, column_keys=list(keys))
    if getattr(compiled, "escaped_bind_names", None):
        return None
    positional = bool(compiled.positional)
    order = tuple(compiled.positiontup or ()) if positional else keys
    if set(order) != set(keys):
        return None
    processors = tuple(columns[key].type.dialect_impl(dialect).bind_processor(dialect) for key in order)
    return str(compiled), order, processors, positional


def prepared_executemany(connection: Connection) -> bool:
    """Does `insert_many` run one prepared statement over the rows on this connection (rather
    than SQLAlchemy's insertmanyvalues)? Callers needing generated keys read them back then."""
    return connection.dialect.name == "postgresql"


def insert_many(connection: Connection, table: Table, rows: Sequence[Mapping[str, Any]]) -> None:
    """INSERT `rows` (dicts with the same keys) into `table`, no RETURNING."""
    if not rows:
        return
    keys = tuple(rows[0])
    prepared = _prepared(connection.dialect, table, keys) if prepared_executemany(connection) else None
    if prepared is None or any(len(row) != len(keys) for row in rows):
        connection.execute(insert(table), list(rows))
        return
    sql, order, processors, positional = prepared
    pairs = tuple(zip(order, processors, strict=True))
    if positional:
        params: list[Any] = [
            tuple(row[key] if process is None else process(row[key]) for key, process in pairs)
            for row in rows
        ]
    else:
        params = [
            {key: row[key] if process is None else process(row[key]) for key, process in pairs}
            for row in rows
        ]
    connection.exec_driver_sql(sql, params)


def select_rows(session: Session, statement: Executable) -> Sequence[Any]:
    """The rows of a SELECT of columns, through the session's connection: the same SQL and
    typed values as `session.exec(...).all()` without the ORM's per-statement and per-row
    result handling (a batch runs a dozen of these). The ORM's autoflush is kept."""
    if session.autoflush:
        session.flush()
    return session.connection().execute(statement).all()
