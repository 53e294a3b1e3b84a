"""Drafts saved on the server (issue 10, item 2): one per user and conversation (saving again
updates it), private to its author by default, shareable with the team (then everyone who may
see the conversation may read it; only the author changes or deletes it). Drafts of new mail
(no conversation) are as many as the user wants.

Recipients are stored as typed but checked like a mail's (header injection, parse) when saved,
so a draft can always be sent as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, or_
from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import InvalidInput, not_found
from core.types import utcnow
from crm import access
from crm.models import Draft, Thread
from crm.outbound.headers import check_header, parse_addresses

MAX_HTML = 2_000_000


@dataclass(frozen=True, slots=True)
class DraftView:
    id: int
    user_id: int
    thread_id: int | None
    account_id: int | None
    shared: bool
    mine: bool
    subject: str | None
    html: str
    to: tuple[str, ...]
    cc: tuple[str, ...]
    bcc: tuple[str, ...]
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DraftIn:
    html: str = ""
    subject: str | None = None
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    account_id: int | None = None
    shared: bool = False


def _view(caller: Caller, row: Draft) -> DraftView:
    return DraftView(
        id=row.id or 0,
        user_id=row.user_id,
        thread_id=row.thread_id,
        account_id=row.account_id,
        shared=row.shared,
        mine=row.user_id == caller.user_id,
        subject=row.subject,
        html=row.html,
        to=tuple(row.to_addrs),
        cc=tuple(row.cc_addrs),
        bcc=tuple(row.bcc_addrs),
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _checked(session: Session, caller: Caller, given: DraftIn) -> DraftIn:
    for field, values in (("to", given.to), ("cc", given.cc), ("bcc", given.bcc)):
        parse_addresses(field, values)
    if given.subject is not None:
        check_header("subject", given.subject)
    if len(given.html) > MAX_HTML:
        raise InvalidInput("draft_too_large", "The draft is too long.", field="html")
    if given.account_id is not None:
        access.get_account(session, caller, given.account_id)
    return given


def _user(caller: Caller) -> int:
    if caller.user_id is None:
        raise InvalidInput("user_required", "Drafts belong to a user: say which one.", field="user_id")
    return caller.user_id


def _fill(row: Draft, given: DraftIn, now: datetime) -> None:
    row.html, row.subject, row.account_id, row.shared = (
        given.html,
        given.subject,
        given.account_id,
        given.shared,
    )
    row.to_addrs, row.cc_addrs, row.bcc_addrs = list(given.to), list(given.cc), list(given.bcc)
    row.updated_at = now


def save_for_thread(*, session: Session, caller: Caller, thread_id: int, given: DraftIn) -> DraftView:
    """The caller's draft in a conversation, created or replaced (one per user and thread)."""
    user_id = _user(caller)
    access.get_thread(session, caller, thread_id)
    _checked(session, caller, given)
    now = utcnow()
    row = session.exec(select(Draft).where(Draft.user_id == user_id, Draft.thread_id == thread_id)).first()
    if row is None:
        row = Draft(tenant_id=caller.tenant_id, user_id=user_id, thread_id=thread_id, created_at=now)
    _fill(row, given, now)
    session.add(row)
    session.flush()
    return _view(caller, row)


def create(*, session: Session, caller: Caller, given: DraftIn) -> DraftView:
    """A draft of a new mail (no conversation)."""
    user_id = _user(caller)
    _checked(session, caller, given)
    now = utcnow()
    row = Draft(tenant_id=caller.tenant_id, user_id=user_id, created_at=now)
    _fill(row, given, now)
    session.add(row)
    session.flush()
    return _view(caller, row)


def _readable(caller: Caller) -> ColumnElement[bool]:
    """Mine; or shared, in the tenant, in a conversation the caller may see (or of no thread)."""
    seen_threads = select(col(Thread.id)).where(access.thread_visible(caller))
    return (col(Draft.tenant_id) == caller.tenant_id) & or_(
        col(Draft.user_id) == caller.user_id,
        col(Draft.shared).is_(True)
        & or_(col(Draft.thread_id).is_(None), col(Draft.thread_id).in_(seen_threads)),
    )


def _get(session: Session, caller: Caller, draft_id: int, *, write: bool = False) -> Draft:
    row = session.exec(select(Draft).where(Draft.id == draft_id, _readable(caller))).first()
    if row is None or (write and row.user_id != caller.user_id):
        raise not_found("draft", draft_id)
    return row


def get(*, session: Session, caller: Caller, draft_id: int) -> DraftView:
    return _view(caller, _get(session, caller, draft_id))


def update(*, session: Session, caller: Caller, draft_id: int, given: DraftIn) -> DraftView:
    row = _get(session, caller, draft_id, write=True)
    _checked(session, caller, given)
    _fill(row, given, utcnow())
    session.add(row)
    session.flush()
    return _view(caller, row)


def delete(*, session: Session, caller: Caller, draft_id: int) -> None:
    """Only its author deletes a draft (also done after sending it)."""
    session.delete(_get(session, caller, draft_id, write=True))
    session.flush()


def list_drafts(*, session: Session, caller: Caller, thread_id: int | None = None) -> Sequence[DraftView]:
    """The caller's drafts and those the team shared; in one conversation when given."""
    query = select(Draft).where(_readable(caller))
    if thread_id is not None:
        access.get_thread(session, caller, thread_id)
        query = query.where(Draft.thread_id == thread_id)
    rows = session.exec(query.order_by(col(Draft.updated_at).desc(), col(Draft.id).desc()).limit(500)).all()
    return [_view(caller, r) for r in rows]
