"""The Alembic history builds exactly the schema the models describe, on both databases, and
can be walked down and up again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect
from sqlmodel import SQLModel

import crm.models  # noqa: F401  (registers the tables)
from core.db import alembic_config

# Search structures live outside the models on purpose (0009): SQLite's FTS5 tables and the
# PostgreSQL expression index are built and used in SQL (crm/search.py).
_SQL_ONLY = ("message_fts", "ix_message_search")


def _in_models(obj: object, name: str | None, type_: str, reflected: bool, compare_to: object) -> bool:
    return not (name or "").startswith(_SQL_ONLY)


def test_models_and_migrations_agree(db: Engine) -> None:
    with db.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_object": _in_models})
        diff = compare_metadata(context, SQLModel.metadata)
    assert diff == []


def test_downgrade_to_base_and_back(db: Engine) -> None:
    cfg = alembic_config(db.url.render_as_string(hide_password=False))
    with db.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert set(inspect(db).get_table_names()) <= {"alembic_version"}
    with db.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    assert {"message", "message_link", "signature", "folder_state"} <= set(inspect(db).get_table_names())
