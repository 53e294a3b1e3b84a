"""Incremental export of linked mail for reporting jobs: every link created after a cursor (the
last link id seen), with its message's facts, scoped to what the caller may see. A BI job keeps
the returned cursor and asks again later; nothing is missed or sent twice (ids only grow)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import InvalidInput
from core.types import Direction
from crm import access
from crm.models import Message, MessageLink

MAX_PAGE = 5000


@dataclass(frozen=True, slots=True)
class LinkedMail:
    link_id: int
    record_kind: str
    record_id: int
    reason: str
    linked_at: datetime
    message_pk: int
    message_id: str
    thread_id: int | None
    date: datetime | None
    direction: Direction
    from_email: str
    subject: str


@dataclass(frozen=True, slots=True)
class ExportPage:
    items: tuple[LinkedMail, ...]
    cursor: int  # pass as `since` next time
    more: bool


def linked_mail(*, session: Session, caller: Caller, since: int = 0, limit: int = 1000) -> ExportPage:
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput("invalid_page_size", f"A page holds 1 to {MAX_PAGE} rows.", field="limit")
    rows = session.exec(
        select(MessageLink, Message)
        .join(Message, col(Message.id) == col(MessageLink.message_pk))
        .where(
            MessageLink.tenant_id == caller.tenant_id,
            col(MessageLink.id) > since,
            access.message_visible(caller),
        )
        .order_by(col(MessageLink.id))
        .limit(limit + 1)
    ).all()
    items = tuple(
        LinkedMail(
            link_id=link.id or 0,
            record_kind=str(link.record_kind),
            record_id=link.record_id,
            reason=str(link.reason),
            linked_at=link.created_at,
            message_pk=message.id or 0,
            message_id=message.message_id,
            thread_id=message.thread_id,
            date=message.date,
            direction=message.direction,
            from_email=message.from_email,
            subject=message.subject,
        )
        for link, message in rows[:limit]
    )
    return ExportPage(items=items, cursor=items[-1].link_id if items else since, more=len(rows) > limit)
