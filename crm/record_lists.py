"""Browsing and editing CRM records: lists with search (keyset pages on id), edits, deletion.

Records are the tenant's shared address book: every user lists and edits them; deleting one
(with its links to mail) is for admins. Creation and linking rules live in `crm.records`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from sqlalchemy import delete, exists, or_
from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import InvalidInput
from crm import access, records
from crm.keyset import like_pattern
from crm.locks import lock_tenant
from crm.models import (
    Company,
    CompanyDomain,
    Contact,
    ContactEmail,
    Deal,
    DealContact,
    LinkSuppression,
    MessageLink,
)
from crm.rules.linking import DealStatus, RecordKind

MAX_PAGE = 200
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    items: tuple[T, ...]
    next_cursor: int | None  # the last id of this page; pass it as `after` for the next one


def _check_page(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput("invalid_page_size", f"A page holds 1 to {MAX_PAGE} records.", field="limit")


def list_contacts(
    *,
    session: Session,
    caller: Caller,
    q: str | None = None,
    company_id: int | None = None,
    after: int = 0,
    limit: int = 50,
) -> Page[records.ContactView]:
    """Contacts by id; `q` looks in names and addresses (case-insensitive)."""
    _check_page(limit)
    query = select(Contact.id).where(Contact.tenant_id == caller.tenant_id, col(Contact.id) > after)
    if q and q.strip():
        pattern = like_pattern(q.strip())
        has_address = exists().where(
            col(ContactEmail.contact_id) == col(Contact.id),
            col(ContactEmail.email).ilike(pattern, escape="\\"),
        )
        query = query.where(or_(col(Contact.full_name).ilike(pattern, escape="\\"), has_address))
    if company_id is not None:
        query = query.where(Contact.company_id == company_id)
    ids = session.exec(query.order_by(col(Contact.id)).limit(limit + 1)).all()
    views = tuple(records.get_contact(session=session, caller=caller, contact_id=i or 0) for i in ids[:limit])
    return Page(views, views[-1].id if len(ids) > limit else None)


def list_companies(
    *, session: Session, caller: Caller, q: str | None = None, after: int = 0, limit: int = 50
) -> Page[records.CompanyView]:
    _check_page(limit)
    query = select(Company.id).where(Company.tenant_id == caller.tenant_id, col(Company.id) > after)
    if q and q.strip():
        pattern = like_pattern(q.strip())
        has_domain = exists().where(
            col(CompanyDomain.company_id) == col(Company.id),
            col(CompanyDomain.domain).ilike(pattern, escape="\\"),
        )
        query = query.where(or_(col(Company.name).ilike(pattern, escape="\\"), has_domain))
    ids = session.exec(query.order_by(col(Company.id)).limit(limit + 1)).all()
    views = tuple(records.get_company(session=session, caller=caller, company_id=i or 0) for i in ids[:limit])
    return Page(views, views[-1].id if len(ids) > limit else None)


def list_deals(
    *,
    session: Session,
    caller: Caller,
    q: str | None = None,
    status: DealStatus | None = None,
    stage: str | None = None,
    after: int = 0,
    limit: int = 50,
) -> Page[records.DealView]:
    _check_page(limit)
    query = select(Deal.id).where(Deal.tenant_id == caller.tenant_id, col(Deal.id) > after)
    if q and q.strip():
        query = query.where(col(Deal.title).ilike(like_pattern(q.strip()), escape="\\"))
    if status is not None:
        query = query.where(Deal.status == status)
    if stage is not None:
        query = query.where(Deal.stage == stage)
    ids = session.exec(query.order_by(col(Deal.id)).limit(limit + 1)).all()
    views = tuple(records.get_deal(session=session, caller=caller, deal_id=i or 0) for i in ids[:limit])
    return Page(views, views[-1].id if len(ids) > limit else None)


# ---------------------------------------------------------------------------------------------
# Edits


def update_contact(
    *,
    session: Session,
    caller: Caller,
    contact_id: int,
    first_name: str | None = None,
    last_name: str | None = None,
    phone: str | None = None,
    company_id: int | None = None,
    clear_company: bool = False,
    owner_user_id: int | None = None,
) -> records.ContactView:
    records.get_contact(session=session, caller=caller, contact_id=contact_id)
    contact = session.get(Contact, contact_id)
    assert contact is not None
    if company_id is not None:
        records.get_company(session=session, caller=caller, company_id=company_id)
        contact.company_id = company_id
    if clear_company:
        contact.company_id = None
    if owner_user_id is not None:
        access.get_user(session, caller, owner_user_id)
        contact.owner_user_id = owner_user_id
    if first_name is not None:
        contact.first_name = first_name.strip()[:200]
    if last_name is not None:
        contact.last_name = last_name.strip()[:200]
    if first_name is not None or last_name is not None:
        contact.full_name = f"{contact.first_name} {contact.last_name}".strip() or contact.full_name
    if phone is not None:
        contact.phone = phone.strip()[:100]
    session.add(contact)
    session.flush()
    return records.get_contact(session=session, caller=caller, contact_id=contact_id)


def update_deal(
    *,
    session: Session,
    caller: Caller,
    deal_id: int,
    title: str | None = None,
    stage: str | None = None,
    amount: float | None = None,
    status: DealStatus | None = None,
) -> records.DealView:
    records.get_deal(session=session, caller=caller, deal_id=deal_id)
    if stage is not None:
        # The stage trigger (0026) takes the tenant's lock to refresh the deal's conversations;
        # taken here first, before the deal's row, the order is the sync's (tenant, then rows),
        # so a batch linking mail to this deal meanwhile waits instead of deadlocking.
        lock_tenant(session=session, tenant_id=caller.tenant_id)
    deal = session.get(Deal, deal_id)
    assert deal is not None
    if title is not None:
        if not title.strip():
            raise InvalidInput("title_required", "A deal needs a title.", field="title")
        deal.title = title.strip()[:300]
    if stage is not None:
        deal.stage = stage.strip()[:100] or deal.stage
    if amount is not None:
        if amount < 0:
            raise InvalidInput("invalid_amount", "An amount cannot be negative.", field="amount")
        deal.amount = amount
    session.add(deal)
    session.flush()
    if status is not None:
        return records.set_deal_status(session=session, caller=caller, deal_id=deal_id, status=status)
    return records.get_deal(session=session, caller=caller, deal_id=deal_id)


def delete_record(*, session: Session, caller: Caller, kind: RecordKind, record_id: int) -> None:
    """Delete a record and its links to mail (the mail stays). Admins only."""
    if kind is RecordKind.CONTACT:
        records.get_contact(session=session, caller=caller, contact_id=record_id)
    elif kind is RecordKind.COMPANY:
        records.get_company(session=session, caller=caller, company_id=record_id)
    else:
        records.get_deal(session=session, caller=caller, deal_id=record_id)
    access.require_admin(caller, f"delete a {kind.value}")
    if kind is RecordKind.DEAL:
        lock_tenant(session=session, tenant_id=caller.tenant_id)  # as in update_deal: tenant first
    for model in (MessageLink, LinkSuppression):
        session.execute(
            delete(model).where(
                col(model.tenant_id) == caller.tenant_id,
                col(model.record_kind) == kind,
                col(model.record_id) == record_id,
            )
        )
    if kind is RecordKind.CONTACT:
        session.execute(delete(ContactEmail).where(col(ContactEmail.contact_id) == record_id))
        session.execute(delete(DealContact).where(col(DealContact.contact_id) == record_id))
        session.execute(delete(Contact).where(col(Contact.id) == record_id))
    elif kind is RecordKind.COMPANY:
        for contact in session.exec(select(Contact).where(Contact.company_id == record_id)).all():
            contact.company_id = None
            session.add(contact)
        for deal in session.exec(select(Deal).where(Deal.company_id == record_id)).all():
            deal.company_id = None
            session.add(deal)
        session.flush()
        session.execute(delete(CompanyDomain).where(col(CompanyDomain.company_id) == record_id))
        session.execute(delete(Company).where(col(Company.id) == record_id))
    else:
        session.execute(delete(DealContact).where(col(DealContact.deal_id) == record_id))
        session.execute(delete(Deal).where(col(Deal.id) == record_id))
    session.flush()
