"""Database engine and sessions: embedded SQLite (one file, WAL) by default, PostgreSQL by URL.

The same code runs on both; nothing here creates tables: `migrate()` runs Alembic.

What an operator can get wrong is refused with a clear error (a `DomainError`), never a
traceback: a URL that is not one, another database system, a PostgreSQL URL without a database
name (libpq would silently use its default database), SQLite in memory (everything lost at exit),
a data folder that cannot be created or written, a database that cannot be reached or that was
never initialised. The SQLite file is created 0600 in a 0700 folder: it holds the synced mail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import URL, ExceptionContext, make_url
from sqlalchemy.exc import ArgumentError
from sqlmodel import Session, create_engine

from core.errors import InvalidInput, Unavailable
from core.settings import get_settings

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets the API read while a sync writes; busy_timeout makes writers wait, not fail.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    busy_ms = int(get_settings().database_busy_timeout_seconds * 1000)
    cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
    cursor.close()


class DatabaseUnavailable(Unavailable):
    """The database server did not accept a connection (down, unknown database, refused)."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            "database_unavailable", f"The database could not be reached ({reason}).", reason=reason
        )


class DatabaseBusy(DatabaseUnavailable):
    """SQLite's write lock stayed taken past the busy timeout (a long import, another writer):
    transient, retried later; never a traceback."""

    def __init__(self) -> None:
        Unavailable.__init__(
            self,
            "database_busy",
            "The database is busy: another process held its write lock too long (a long import, "
            "for instance). Try again shortly.",
            reason="busy",
        )


class DatabaseNotInitialised(Unavailable):
    def __init__(self) -> None:
        super().__init__(
            "database_not_initialised",
            "The database is not initialised yet (it has no tables): initialise it first.",
        )


def _invalid_url(reason: str) -> InvalidInput:
    return InvalidInput("database_url_invalid", f"The database URL is unusable: {reason}.", reason=reason)


def parse_database_url(url: str, *, allow_memory: bool = False) -> URL:
    """`url` as a SQLAlchemy URL, or a clear refusal (see the module docstring)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise _invalid_url(
            "it is not a database URL such as sqlite:///path.db or postgresql://user@host/db"
        ) from exc
    backend = parsed.get_backend_name()
    if backend not in ("sqlite", "postgresql"):
        raise _invalid_url(f"only SQLite and PostgreSQL are supported, not {backend!r}")
    if backend == "postgresql" and not parsed.database:
        raise _invalid_url("it names no database (postgresql://user@host/DATABASE)")
    if backend == "sqlite" and (not parsed.database or parsed.database == ":memory:") and not allow_memory:
        raise _invalid_url("a SQLite database in memory would lose everything at exit; give a file path")
    return parsed


def _private_sqlite_file(path: Path) -> None:
    """The folder 0700 and the file 0600, created before SQLite does (its -wal and -shm files
    take the database file's permissions)."""
    try:
        if not path.parent.exists():
            path.parent.mkdir(parents=True, mode=0o700)
        if not path.exists():
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    except OSError as exc:
        raise InvalidInput(
            "data_dir_unusable",
            f"The data folder {str(path.parent)!r} cannot be used ({exc.strerror or type(exc).__name__}).",
            path=str(path.parent),
            reason=exc.strerror or type(exc).__name__,
        ) from exc


def _translate_errors(context: ExceptionContext) -> None:
    """Errors an operator must act on become domain errors: a missing schema, an unreachable
    server. A locked database or a failed statement stays what it is (callers retry those)."""
    original = context.original_exception
    text = str(original).lower()
    sqlstate = getattr(original, "sqlstate", None)
    if "database is locked" in text or "database table is locked" in text:
        raise DatabaseBusy() from original
    if "no such table" in text or sqlstate == "42P01":
        raise DatabaseNotInitialised() from original
    if context.connection is None and not context.is_pre_ping:
        first = str(original).strip().splitlines()[0] if str(original).strip() else type(original).__name__
        raise DatabaseUnavailable(first[:300]) from original


def make_engine(url: str | None = None, *, allow_memory: bool = False) -> Engine:
    url = url or get_settings().resolved_database_url
    parsed = parse_database_url(url, allow_memory=allow_memory)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            _private_sqlite_file(Path(parsed.database))
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
    else:
        if parsed.drivername == "postgresql":
            # Plain postgresql:// means psycopg 3 here (the only driver we depend on).
            url = parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
        engine = create_engine(url, pool_pre_ping=True)
    event.listen(engine, "handle_error", _translate_errors)
    return engine


_engine: Engine | None = None


def get_engine() -> Engine:
    global _engine
    if _engine is None:
        _engine = make_engine()
    return _engine


def set_engine(engine: Engine | None) -> None:
    """Replace the process-wide engine (tests, or a CLI run with another URL)."""
    global _engine
    if _engine is not None and _engine is not engine:
        _engine.dispose()
    _engine = engine


@contextmanager
def session_scope(engine: Engine | None = None) -> Iterator[Session]:
    """A short unit of work: commit on success, roll back on error. Never hold one across I/O."""
    with Session(engine or get_engine(), expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise


def alembic_config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def migrate(engine: Engine | None = None) -> None:
    """Bring the schema to the newest Alembic revision."""
    from alembic import command

    engine = engine or get_engine()
    cfg = alembic_config(engine.url.render_as_string(hide_password=False))
    with engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "head")
