"""Alembic environment: runs on the connection handed over by `core.db.migrate`, or on the
database named by CRM_INBOX_DATABASE_URL when run as `alembic upgrade head`."""

from __future__ import annotations

from typing import Literal

from alembic import context
from alembic.autogenerate.api import AutogenContext
from sqlalchemy import Connection
from sqlmodel import SQLModel

import crm.models  # noqa: F401  (registers the tables on SQLModel.metadata)
from core.db import make_engine

config = context.config
target_metadata = SQLModel.metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = config.get_main_option("sqlalchemy.url") or None
    engine = make_engine(url)
    with engine.begin() as conn:
        _run(conn)


def _render_item(type_: str, obj: object, autogen_context: AutogenContext) -> str | Literal[False]:
    """Render our column types as plain SQLAlchemy ones, so migrations never import app code
    that may change later (a StrEnum column is a VARCHAR(32), a UTC column a DATETIME)."""
    from sqlalchemy import String

    from core.types import StrEnumType, UTCDateTime

    if type_ == "type":
        if isinstance(obj, StrEnumType):
            return "sa.String(length=32)"
        if isinstance(obj, UTCDateTime):
            return "sa.DateTime()"
        if type(obj).__name__ == "AutoString" and isinstance(obj, String):
            return f"sa.String(length={obj.length})" if obj.length else "sa.String()"
    return False


def _run(connection: Connection) -> None:
    context.configure(
        render_item=_render_item,
        connection=connection,
        target_metadata=target_metadata,
        # SQLite cannot ALTER most things: batch mode rebuilds tables instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("Offline (SQL script) migrations are not supported; run against a database.")
run_migrations_online()
