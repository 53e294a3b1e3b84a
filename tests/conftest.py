"""Shared fixtures: settings in a temp folder, and a migrated database per test on SQLite and on
PostgreSQL (a database of our own, created for the run and dropped after it)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import Engine, create_engine, text
from sqlmodel import SQLModel

from core.db import make_engine, migrate, set_engine
from core.settings import Settings, get_settings, reset_settings

pytest_plugins = ["tests.dovecot_fixtures", "tests.imap_servers"]

PG_ADMIN_URL = os.environ.get(
    "CRM_INBOX_TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


@pytest.fixture(autouse=True)
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    monkeypatch.setenv("CRM_INBOX_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("CRM_INBOX_SECRET_KEY", Fernet.generate_key().decode())
    monkeypatch.setenv("CRM_INBOX_ALLOW_PRIVATE_HOSTS", "true")
    monkeypatch.setenv("CRM_INBOX_CONNECT_TIMEOUT_SECONDS", "5")
    monkeypatch.setenv("CRM_INBOX_READ_TIMEOUT_SECONDS", "10")
    # Parse in-process by default (a worker pool per test would cost more than it saves);
    # tests/sync/test_engine.py runs the pooled path explicitly.
    monkeypatch.setenv("CRM_INBOX_PARSE_WORKERS", "0")
    monkeypatch.delenv("CRM_INBOX_DATABASE_URL", raising=False)
    reset_settings()
    yield get_settings()
    reset_settings()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "template.db"
    engine = make_engine(f"sqlite:///{path}")
    migrate(engine)
    engine.dispose()
    return path


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A PostgreSQL database of this run's own, migrated once; dropped at the end."""
    name = f"crm_inbox_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # pragma: no cover - the machine is expected to have PostgreSQL
        pytest.fail(f"PostgreSQL at {PG_ADMIN_URL} is needed for the storage tests: {exc}")
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def _truncate_all(engine: Engine) -> None:
    tables = ", ".join(f'"{t.name}"' for t in SQLModel.metadata.sorted_tables)
    with engine.begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest, tmp_path: Path, settings: Settings) -> Iterator[Engine]:
    """A migrated, empty database, on each backend in turn; installed as the process engine."""
    if request.param == "sqlite":
        path = tmp_path / "crm-inbox.db"
        shutil.copyfile(request.getfixturevalue("sqlite_template"), path)
        url = f"sqlite:///{path}"
    else:
        url = request.getfixturevalue("pg_database")
    engine = make_engine(url)
    if request.param == "postgres":
        _truncate_all(engine)
    os.environ["CRM_INBOX_DATABASE_URL"] = url
    reset_settings()
    set_engine(engine)
    yield engine
    set_engine(None)
    engine.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path, settings: Settings, sqlite_template: Path) -> Iterator[Engine]:
    """SQLite only, for the heavier end-to-end cases (subprocesses, kill -9)."""
    path = tmp_path / "crm-inbox.db"
    shutil.copyfile(sqlite_template, path)
    url = f"sqlite:///{path}"
    os.environ["CRM_INBOX_DATABASE_URL"] = url
    reset_settings()
    engine = make_engine(url)
    set_engine(engine)
    yield engine
    set_engine(None)
    engine.dispose()
