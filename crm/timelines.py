"""A record's mail timeline (contact, company, deal), and how much of each message it shows.

Records are shared by the whole tenant, mail is not: a message on a contact may sit in a
colleague's personal mailbox. What a user sees of it on the timeline depends on the account it
came from: the message in full when the user may see it anyway (the visibility rule of
`crm.access`); otherwise the account's sharing level says: full, subject (who, when, subject),
metadata (who and when) or hidden. Without a level set, a shared mailbox (several users) shares
in full and a personal one (one user) only metadata. A message in several accounts shows at
the most open of their levels.

Pages are keyset-paginated on (date, message id), newest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, func, literal, or_
from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import InvalidInput
from core.types import Direction, SharingLevel, UTCDateTime
from crm import access, records
from crm.inbox_views import Participant, snippet_of
from crm.keyset import EPOCH, decode_cursor, encode_cursor
from crm.models import AccountAccess, ImapUid, MailAccount, Message, MessageLink
from crm.rules.linking import RecordKind

MAX_PAGE = 100
_OPENNESS = (SharingLevel.HIDDEN, SharingLevel.METADATA, SharingLevel.SUBJECT, SharingLevel.FULL)


@dataclass(frozen=True, slots=True)
class TimelineItem:
    level: SharingLevel  # how much of this message the caller may see
    date: datetime | None
    direction: Direction
    sender: Participant | None
    message_pk: int | None  # only at FULL: the message can be opened
    thread_id: int | None
    subject: str | None  # FULL and SUBJECT
    snippet: str | None  # FULL only


@dataclass(frozen=True, slots=True)
class TimelinePage:
    items: tuple[TimelineItem, ...]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class SharingView:
    account_id: int
    level: SharingLevel  # effective
    explicit: bool  # set by an admin (else the default for a shared or personal mailbox)


def _check_record(session: Session, caller: Caller, kind: RecordKind, record_id: int) -> None:
    if kind is RecordKind.CONTACT:
        records.get_contact(session=session, caller=caller, contact_id=record_id)
    elif kind is RecordKind.COMPANY:
        records.get_company(session=session, caller=caller, company_id=record_id)
    else:
        records.get_deal(session=session, caller=caller, deal_id=record_id)


def effective_levels(session: Session, account_ids: list[int]) -> dict[int, SharingLevel]:
    """The sharing level of each account: its own, else by how many users it has."""
    if not account_ids:
        return {}
    users = dict(
        session.exec(
            select(AccountAccess.account_id, func.count(col(AccountAccess.id)))
            .where(col(AccountAccess.account_id).in_(account_ids))
            .group_by(col(AccountAccess.account_id))
        ).all()
    )
    levels: dict[int, SharingLevel] = {}
    for account in session.exec(select(MailAccount).where(col(MailAccount.id).in_(account_ids))).all():
        ident = account.id or 0
        if not account.active:
            levels[ident] = SharingLevel.HIDDEN  # a deactivated mailbox leaves every view
        elif account.sharing is not None:
            levels[ident] = account.sharing
        else:
            levels[ident] = SharingLevel.FULL if users.get(ident, 0) > 1 else SharingLevel.METADATA
    return levels


def timeline(
    *,
    session: Session,
    caller: Caller,
    kind: RecordKind,
    record_id: int,
    cursor: str | None = None,
    limit: int = 50,
) -> TimelinePage:
    _check_record(session, caller, kind, record_id)
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput("invalid_page_size", f"A page holds 1 to {MAX_PAGE} items.", field="limit")
    date_key = func.coalesce(col(Message.date), literal(EPOCH, UTCDateTime))
    query = (
        select(Message)
        .join(MessageLink, col(MessageLink.message_pk) == col(Message.id))
        .where(
            Message.tenant_id == caller.tenant_id,
            MessageLink.tenant_id == caller.tenant_id,
            MessageLink.record_kind == kind,
            MessageLink.record_id == record_id,
        )
    )
    position = decode_cursor(cursor) if cursor else None

    def after(where: tuple[datetime, int] | None) -> Any:
        if where is None:
            return query
        when, pk = where
        return query.where(or_(date_key < when, and_(date_key == when, col(Message.id) < pk)))

    items: list[TimelineItem] = []
    exhausted = False
    # Hidden messages are skipped, so filling a page may take more than one read.
    while len(items) < limit and not exhausted:
        batch = session.exec(
            after(position).order_by(date_key.desc(), col(Message.id).desc()).limit(limit)
        ).all()
        exhausted = len(batch) < limit
        levels = _levels(session, caller, list(batch))  # the whole batch in three queries
        for message in batch:
            position = (message.date or EPOCH, message.id or 0)
            item = _item(message, levels.get(message.id or 0, (SharingLevel.HIDDEN, False)))
            if item is not None:
                items.append(item)
                if len(items) == limit:
                    break
    more = position is not None and session.exec(after(position).limit(1)).first() is not None
    next_cursor = encode_cursor(position[0], position[1]) if (more and position is not None) else None
    return TimelinePage(items=tuple(items), next_cursor=next_cursor)


def _levels(
    session: Session, caller: Caller, messages: list[Message]
) -> dict[int, tuple[SharingLevel, bool]]:
    """Per message: what the caller may see of it, and whether they may open it (their mail)."""
    pks = [m.id or 0 for m in messages]
    if not pks:
        return {}
    mine = set(
        session.exec(select(Message.id).where(col(Message.id).in_(pks), access.message_visible(caller))).all()
    )
    others = [pk for pk in pks if pk not in mine]
    located: dict[int, set[int]] = {}
    if others:
        for pk, account_id in session.exec(
            select(ImapUid.message_pk, ImapUid.account_id).where(col(ImapUid.message_pk).in_(others))
        ).all():
            located.setdefault(pk or 0, set()).add(account_id)
    account_levels = effective_levels(session, sorted({a for accounts in located.values() for a in accounts}))
    out: dict[int, tuple[SharingLevel, bool]] = {pk or 0: (SharingLevel.FULL, True) for pk in mine}
    for pk in others:
        levels = [account_levels[a] for a in located.get(pk, set())]
        out[pk] = (max(levels, key=_OPENNESS.index, default=SharingLevel.HIDDEN), False)
    return out


def _item(message: Message, decided: tuple[SharingLevel, bool]) -> TimelineItem | None:
    level, visible = decided
    if level is SharingLevel.HIDDEN:
        return None
    full = level is SharingLevel.FULL
    return TimelineItem(
        level=level,
        date=message.date,
        direction=message.direction,
        sender=Participant(message.from_email, message.from_name) if message.from_email else None,
        message_pk=message.id if full and visible else None,
        thread_id=message.thread_id if full and visible else None,
        subject=message.subject if level in (SharingLevel.FULL, SharingLevel.SUBJECT) else None,
        snippet=snippet_of(message.text_body) if full else None,
    )


# ---------------------------------------------------------------------------------------------
# Settings (admins)


def get_sharing(*, session: Session, caller: Caller, account_id: int) -> SharingView:
    account = access.get_account(session, caller, account_id)
    level = effective_levels(session, [account.id or 0])[account.id or 0]
    return SharingView(account_id=account.id or 0, level=level, explicit=account.sharing is not None)


def set_sharing(
    *, session: Session, caller: Caller, account_id: int, level: SharingLevel | None
) -> SharingView:
    """Set an account's level (None: back to the default for a shared or personal mailbox)."""
    account = access.get_account(session, caller, account_id)
    access.require_admin(caller, "change what an account shares on record timelines")
    account.sharing = level
    session.add(account)
    session.flush()
    return get_sharing(session=session, caller=caller, account_id=account_id)
