"""The tenant lock is taken once per transaction (SQLite and PostgreSQL): a repeat in the same
transaction costs no statement, a new transaction takes it again, and on PostgreSQL it really
is held (another connection cannot take it) after the repeat and in the next transaction."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Engine, event, text
from sqlalchemy.exc import OperationalError
from sqlmodel import Session

from crm.locks import lock_tenant
from tests.factories import make_tenant


@contextmanager
def tenant_selects(db: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("SELECT tenant.id"):  # lock_tenant's, not the probe's
            seen.append(statement)

    event.listen(db, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(db, "before_cursor_execute", record)


def held_elsewhere(db: Engine, tenant_id: int) -> bool:
    """PostgreSQL: can another connection lock the row right now?"""
    with db.connect() as other:
        try:
            other.execute(text("SELECT id FROM tenant WHERE id = :t FOR UPDATE NOWAIT"), {"t": tenant_id})
        except OperationalError:
            return True
        return False


def test_once_per_transaction(db: Engine) -> None:
    tenant_id = make_tenant(db)
    postgres = db.dialect.name == "postgresql"
    with Session(db) as s, tenant_selects(db) as seen:
        lock_tenant(session=s, tenant_id=tenant_id)
        lock_tenant(session=s, tenant_id=tenant_id)
        assert len(seen) == 1
        if postgres:
            assert "FOR NO KEY UPDATE" in seen[0] and held_elsewhere(db, tenant_id)
        s.commit()
        if postgres:
            assert not held_elsewhere(db, tenant_id)  # released with the commit
        lock_tenant(session=s, tenant_id=tenant_id)  # a new transaction: taken again
        assert len(seen) == 2
        if postgres:
            assert held_elsewhere(db, tenant_id)
        s.rollback()
        lock_tenant(session=s, tenant_id=tenant_id)
        assert len(seen) == 3


@pytest.mark.parametrize("outcome", ["rollback", "commit"])
def test_a_savepoint_is_its_own_transaction(db: Engine, outcome: str) -> None:
    tenant_id = make_tenant(db)
    with Session(db) as s, tenant_selects(db) as seen:
        nested = s.begin_nested()
        lock_tenant(session=s, tenant_id=tenant_id)
        getattr(nested, outcome)()
        lock_tenant(session=s, tenant_id=tenant_id)  # not trusted from the savepoint
        assert len(seen) == 2
        s.rollback()
