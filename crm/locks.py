"""Locks that order writers of one tenant's data (sync batches, backfills, account changes)."""

from __future__ import annotations

import weakref
from typing import Any

from sqlmodel import Session, select

from crm.models import Tenant

# session.info key: (weak reference to the transaction, tenant ids locked in it).
_HELD = "crm_inbox.tenant_locks"


def _current(session: Session) -> Any:
    return session.get_nested_transaction() or session.get_transaction()


def lock_tenant(*, session: Session, tenant_id: int) -> None:
    """Serialize the writers of one tenant's mail and records (PostgreSQL: a row lock held to
    the end of the transaction; SQLite has one writer anyway and ignores FOR UPDATE). Without
    it, a sync batch and a backfill committing at the same time each miss the other's rows: a
    new contact's mail stays unlinked, a reply and its parent stay in two threads.

    FOR NO KEY UPDATE, not FOR UPDATE: writers still exclude each other, but a transaction that
    only inserts rows pointing at the tenant (a CSV import's contacts: the foreign-key check
    takes FOR KEY SHARE on the tenant row) does not block them, nor they it.

    Taken once per transaction: the inbound listener's delivery, then the mail store, then the
    linking each ask for it in the same transaction, and a repeat would only cost a round trip
    for a lock already held (a savepoint counts as its own transaction: a lock taken inside one
    that rolls back is not trusted afterwards)."""
    held: tuple[weakref.ref[Any], set[int]] | None = session.info.get(_HELD)
    current = _current(session)
    if held is not None and current is not None and held[0]() is current and tenant_id in held[1]:
        return
    session.exec(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True)).first()
    current = _current(session)  # the statement began one if none was open
    if held is None or held[0]() is not current:
        held = (weakref.ref(current), set[int]())
        session.info[_HELD] = held
    held[1].add(tenant_id)
