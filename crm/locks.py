"""Locks that order writers of one tenant's data (sync batches, backfills, account changes)."""

from __future__ import annotations

from sqlmodel import Session, select

from crm.models import Tenant


def lock_tenant(*, session: Session, tenant_id: int) -> None:
    """Serialize the writers of one tenant's mail and records (PostgreSQL: a row lock held to
    the end of the transaction; SQLite has one writer anyway and ignores FOR UPDATE). Without
    it, a sync batch and a backfill committing at the same time each miss the other's rows: a
    new contact's mail stays unlinked, a reply and its parent stay in two threads.

    FOR NO KEY UPDATE, not FOR UPDATE: writers still exclude each other, but a transaction that
    only inserts rows pointing at the tenant (a CSV import's contacts: the foreign-key check
    takes FOR KEY SHARE on the tenant row) does not block them, nor they it."""
    session.exec(select(Tenant.id).where(Tenant.id == tenant_id).with_for_update(key_share=True)).first()
