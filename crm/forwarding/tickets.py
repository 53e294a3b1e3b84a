"""Tickets: one per new conversation of a channel with tickets on, numbered per tenant, with
the stage and priority the admin chose as defaults and the owner the assignment rules gave the
conversation. A ticket is closed when its stage becomes CLOSED (time to close: opened_at to
closed_at), reopened when it leaves it; it follows its conversation closing and reopening, and
every change is kept in its history (`crm.ticket_events`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func
from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import InvalidInput, not_found
from core.types import Direction, TicketChange, TicketPriority, TicketStage, utcnow
from crm import access, ticket_events
from crm.models import Message, Thread, Ticket, TicketEvent


@dataclass(frozen=True, slots=True)
class TicketView:
    id: int
    number: int
    thread_id: int
    account_id: int
    subject: str
    # Who started the conversation (its first customer mail, as credited: the original sender
    # of a forward, not the forwarder).
    customer_email: str
    customer_name: str
    stage: TicketStage
    priority: TicketPriority
    owner_user_id: int | None
    opened_at: datetime
    closed_at: datetime | None


@dataclass(frozen=True, slots=True)
class TicketEventView:
    at: datetime
    change: TicketChange
    old_value: str | None
    new_value: str | None
    actor_user_id: int | None  # None: the system (new mail, the ticket's defaults)
    reason: str  # edited | new_conversation | conversation_closed | conversation_reopened | new_mail


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
    opened: list[Ticket] = []
    for thread in sorted(threads, key=lambda t: t.id or 0):
        tid = thread.id or 0
        if tid in has_ticket or tid not in inbound or thread.message_count != new_here[tid]:
            continue
        number = int(number) + 1
        ticket = Ticket(
            tenant_id=tenant_id,
            number=number,
            thread_id=tid,
            account_id=account_id,
            stage=stage,
            priority=priority,
            owner_user_id=thread.assignee_user_id,
            closed_at=utcnow() if stage is TicketStage.CLOSED else None,
        )
        session.add(ticket)
        opened.append(ticket)
        numbers.append(number)
    session.flush()
    for ticket in opened:
        ticket_events.record(
            session,
            ticket,
            TicketChange.OPENED,
            None,
            ticket.stage.value,
            actor_user_id=None,
            reason=ticket_events.NEW_CONVERSATION,
        )
    session.flush()
    return numbers


def _customers(session: Session, thread_ids: Sequence[int]) -> dict[int, tuple[str, str]]:
    """The first customer mail's sender of each conversation (one query for a whole page)."""
    if not thread_ids:
        return {}
    firsts = (
        select(func.min(Message.id))
        .where(col(Message.thread_id).in_(list(thread_ids)), Message.direction == Direction.INBOUND)
        .group_by(col(Message.thread_id))
    )
    rows = session.exec(
        select(Message.thread_id, Message.from_email, Message.from_name).where(col(Message.id).in_(firsts))
    ).all()
    return {int(t or 0): (e, n) for t, e, n in rows}


def _view(ticket: Ticket, subject: str, customer: tuple[str, str] | None) -> TicketView:
    email, name = customer or ("", "")
    return TicketView(
        id=ticket.id or 0,
        number=ticket.number,
        thread_id=ticket.thread_id,
        account_id=ticket.account_id,
        subject=subject,
        customer_email=email,
        customer_name=name,
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
    priority: TicketPriority | None = None,
    owner_user_id: int | None = None,
    unowned: bool = False,
    open_only: bool = False,
    limit: int = 100,
) -> list[TicketView]:
    """Tickets of the conversations the caller sees, newest first; filtered by stage, priority
    and owner (a user, or `unowned`)."""
    query = (
        select(Ticket, Thread.subject)
        .join(Thread, col(Thread.id) == col(Ticket.thread_id))
        .where(Ticket.tenant_id == caller.tenant_id, access.thread_visible(caller))
        .order_by(col(Ticket.number).desc())
        .limit(max(1, min(limit, 500)))
    )
    if stage is not None:
        query = query.where(Ticket.stage == stage)
    if priority is not None:
        query = query.where(Ticket.priority == priority)
    if unowned:
        query = query.where(col(Ticket.owner_user_id).is_(None))
    elif owner_user_id is not None:
        query = query.where(Ticket.owner_user_id == owner_user_id)
    if open_only:
        query = query.where(col(Ticket.closed_at).is_(None))
    rows = session.exec(query).all()
    customers = _customers(session, [t.thread_id for t, _ in rows])
    return [_view(t, s, customers.get(t.thread_id)) for t, s in rows]


def _get(session: Session, caller: Caller, ticket_id: int) -> Ticket:
    ticket = session.get(Ticket, ticket_id)
    if ticket is None or ticket.tenant_id != caller.tenant_id:
        raise not_found("ticket", ticket_id)
    access.get_thread(session, caller, ticket.thread_id)
    return ticket


def _one(session: Session, ticket: Ticket) -> TicketView:
    subject = session.get_one(Thread, ticket.thread_id).subject
    return _view(ticket, subject, _customers(session, [ticket.thread_id]).get(ticket.thread_id))


def get_ticket(*, session: Session, caller: Caller, ticket_id: int) -> TicketView:
    ticket = _get(session, caller, ticket_id)
    return _one(session, ticket)


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
    actor, why = caller.user_id, ticket_events.EDITED
    if owner_user_id is not None and not clear_owner:  # checked first: a refusal changes nothing
        user = access.get_user(session, caller, owner_user_id)
        if not user.active:
            raise InvalidInput("user_inactive", "The owner must be an active user.", field="owner_user_id")
    if stage is not None:
        ticket_events.set_stage(session, ticket, stage, actor_user_id=actor, reason=why)
    if priority is not None and priority is not ticket.priority:
        ticket_events.record(
            session,
            ticket,
            TicketChange.PRIORITY,
            ticket.priority.value,
            priority.value,
            actor_user_id=actor,
            reason=why,
        )
        ticket.priority = priority
    owner = None if clear_owner else owner_user_id if owner_user_id is not None else ticket.owner_user_id
    if owner != ticket.owner_user_id:
        ticket_events.record(
            session, ticket, TicketChange.OWNER, ticket.owner_user_id, owner, actor_user_id=actor, reason=why
        )
        ticket.owner_user_id = owner
    session.add(ticket)
    session.flush()
    return _one(session, ticket)


def ticket_history(*, session: Session, caller: Caller, ticket_id: int) -> list[TicketEventView]:
    """Every change of the ticket, oldest first."""
    ticket = _get(session, caller, ticket_id)
    rows = session.exec(
        select(TicketEvent).where(TicketEvent.ticket_id == ticket.id).order_by(col(TicketEvent.id))
    ).all()
    return [
        TicketEventView(
            at=r.at,
            change=r.change,
            old_value=r.old_value,
            new_value=r.new_value,
            actor_user_id=r.actor_user_id,
            reason=r.reason,
        )
        for r in rows
    ]


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
