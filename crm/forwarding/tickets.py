"""Tickets: one per new conversation of a channel with tickets on, numbered per tenant, with
the stage and priority the admin chose as defaults and the owner the assignment rules gave the
conversation. A ticket is closed when its stage becomes CLOSED (time to close: opened_at to
closed_at), reopened when it leaves it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import InvalidInput, not_found
from core.types import Direction, TicketPriority, TicketStage, utcnow
from crm import access
from crm.models import Message, Thread, Ticket


@dataclass(frozen=True, slots=True)
class TicketView:
    id: int
    number: int
    thread_id: int
    account_id: int
    subject: str
    stage: TicketStage
    priority: TicketPriority
    owner_user_id: int | None
    opened_at: datetime
    closed_at: datetime | None


@dataclass(frozen=True, slots=True)
class TicketReport:
    since: datetime | None
    until: datetime | None
    opened: int
    closed: int
    open_now: int
    average_hours_to_close: float | None
    median_hours_to_close: float | None


def open_for_new_conversations(
    *,
    session: Session,
    tenant_id: int,
    account_id: int,
    message_pks: Sequence[int],
    stage: TicketStage,
    priority: TicketPriority,
) -> list[int]:
    """Tickets for the conversations these freshly stored messages started (a thread whose
    messages are all among them, with customer mail in it). In the store's transaction, under
    its tenant lock, so numbers never collide. Returns the new ticket numbers."""
    rows = session.exec(
        select(Message.thread_id, Message.direction).where(col(Message.id).in_(list(message_pks)))
    ).all()
    new_here: dict[int, int] = {}
    inbound: set[int] = set()
    for thread_id, direction in rows:
        if thread_id is None:
            continue
        new_here[thread_id] = new_here.get(thread_id, 0) + 1
        if direction is Direction.INBOUND:
            inbound.add(thread_id)
    if not new_here:
        return []
    threads = session.exec(select(Thread).where(col(Thread.id).in_(sorted(new_here)))).all()
    has_ticket = set(
        session.exec(select(Ticket.thread_id).where(col(Ticket.thread_id).in_(sorted(new_here)))).all()
    )
    number = session.exec(
        select(func.coalesce(func.max(Ticket.number), 0)).where(Ticket.tenant_id == tenant_id)
    ).one()
    numbers: list[int] = []
    for thread in sorted(threads, key=lambda t: t.id or 0):
        tid = thread.id or 0
        if tid in has_ticket or tid not in inbound or thread.message_count != new_here[tid]:
            continue
        number = int(number) + 1
        session.add(
            Ticket(
                tenant_id=tenant_id,
                number=number,
                thread_id=tid,
                account_id=account_id,
                stage=stage,
                priority=priority,
                owner_user_id=thread.assignee_user_id,
                closed_at=utcnow() if stage is TicketStage.CLOSED else None,
            )
        )
        numbers.append(number)
    session.flush()
    return numbers


def _view(ticket: Ticket, subject: str) -> TicketView:
    return TicketView(
        id=ticket.id or 0,
        number=ticket.number,
        thread_id=ticket.thread_id,
        account_id=ticket.account_id,
        subject=subject,
        stage=ticket.stage,
        priority=ticket.priority,
        owner_user_id=ticket.owner_user_id,
        opened_at=ticket.opened_at,
        closed_at=ticket.closed_at,
    )


def list_tickets(
    *,
    session: Session,
    caller: Caller,
    stage: TicketStage | None = None,
    open_only: bool = False,
    limit: int = 100,
) -> list[TicketView]:
    """Tickets of the conversations the caller sees, newest first."""
    query = (
        select(Ticket, Thread.subject)
        .join(Thread, col(Thread.id) == col(Ticket.thread_id))
        .where(Ticket.tenant_id == caller.tenant_id, access.thread_visible(caller))
        .order_by(col(Ticket.number).desc())
        .limit(max(1, min(limit, 500)))
    )
    if stage is not None:
        query = query.where(Ticket.stage == stage)
    if open_only:
        query = query.where(col(Ticket.closed_at).is_(None))
    return [_view(t, s) for t, s in session.exec(query).all()]


def _get(session: Session, caller: Caller, ticket_id: int) -> Ticket:
    ticket = session.get(Ticket, ticket_id)
    if ticket is None or ticket.tenant_id != caller.tenant_id:
        raise not_found("ticket", ticket_id)
    access.get_thread(session, caller, ticket.thread_id)
    return ticket


def get_ticket(*, session: Session, caller: Caller, ticket_id: int) -> TicketView:
    ticket = _get(session, caller, ticket_id)
    return _view(ticket, session.get_one(Thread, ticket.thread_id).subject)


def update_ticket(
    *,
    session: Session,
    caller: Caller,
    ticket_id: int,
    stage: TicketStage | None = None,
    priority: TicketPriority | None = None,
    owner_user_id: int | None = None,
    clear_owner: bool = False,
) -> TicketView:
    ticket = _get(session, caller, ticket_id)
    if stage is not None and stage is not ticket.stage:
        ticket.stage = stage
        ticket.closed_at = utcnow() if stage is TicketStage.CLOSED else None
    if priority is not None:
        ticket.priority = priority
    if clear_owner:
        ticket.owner_user_id = None
    elif owner_user_id is not None:
        user = access.get_user(session, caller, owner_user_id)
        if not user.active:
            raise InvalidInput("user_inactive", "The owner must be an active user.", field="owner_user_id")
        ticket.owner_user_id = owner_user_id
    session.add(ticket)
    session.flush()
    return _view(ticket, session.get_one(Thread, ticket.thread_id).subject)


def ticket_report(
    *, session: Session, caller: Caller, since: datetime | None = None, until: datetime | None = None
) -> TicketReport:
    """Opened and closed in the window, open now, and the time to close of those closed in it
    (of the conversations the caller sees)."""
    rows = session.exec(
        select(Ticket.opened_at, Ticket.closed_at)
        .join(Thread, col(Thread.id) == col(Ticket.thread_id))
        .where(Ticket.tenant_id == caller.tenant_id, access.thread_visible(caller))
    ).all()

    def inside(when: datetime | None) -> bool:
        return when is not None and (since is None or when >= since) and (until is None or when < until)

    opened = sum(1 for o, _ in rows if inside(o))
    durations = sorted((c - o).total_seconds() / 3600 for o, c in rows if c is not None and inside(c))
    median: float | None = None
    if durations:
        mid = len(durations) // 2
        median = durations[mid] if len(durations) % 2 else (durations[mid - 1] + durations[mid]) / 2
    return TicketReport(
        since=since,
        until=until,
        opened=opened,
        closed=len(durations),
        open_now=sum(1 for _, c in rows if c is None),
        average_hours_to_close=round(sum(durations) / len(durations), 2) if durations else None,
        median_hours_to_close=round(median, 2) if median is not None else None,
    )
