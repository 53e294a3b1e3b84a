"""A ticket's history, and tickets following their conversations.

Kept apart from `crm.forwarding.tickets` (it imports only the tables) because the conversation
service and the assignment rules, which the mail store calls, must reach it without importing
the forwarding package (whose channels import outbound sending, which imports them back).

A ticket follows its conversation: closing the conversation closes the ticket (its time to close
counts in the reports); the conversation opening again, whether a user reopens it or the
customer writes again, reopens the ticket (stage "in progress", no close time). Each change is
one `TicketEvent`: what changed, from what to what, by whom (None: the system) and why.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete
from sqlmodel import Session, col, select

from core.types import ConversationStatus, TicketChange, TicketStage, utcnow
from crm.models import Ticket, TicketEvent

# Why a ticket changed (`TicketEvent.reason`).
EDITED = "edited"  # a user changed the ticket itself
NEW_CONVERSATION = "new_conversation"
CONVERSATION_CLOSED = "conversation_closed"
CONVERSATION_REOPENED = "conversation_reopened"  # a user reopened the conversation
NEW_MAIL = "new_mail"  # the customer wrote again to a closed or snoozed conversation
CONVERSATIONS_MERGED = "conversations_merged"


def record(
    session: Session,
    ticket: Ticket,
    change: TicketChange,
    old: object,
    new: object,
    *,
    actor_user_id: int | None,
    reason: str,
) -> None:
    def text(value: object) -> str | None:
        return None if value is None else str(value)[:64]

    session.add(
        TicketEvent(
            tenant_id=ticket.tenant_id,
            ticket_id=ticket.id or 0,
            change=change,
            old_value=text(old),
            new_value=text(new),
            actor_user_id=actor_user_id,
            reason=reason,
        )
    )


def set_stage(
    session: Session, ticket: Ticket, stage: TicketStage, *, actor_user_id: int | None, reason: str
) -> bool:
    """Move the ticket to `stage` (closing or reopening it with it); False if already there."""
    if stage is ticket.stage:
        return False
    record(
        session,
        ticket,
        TicketChange.STAGE,
        ticket.stage.value,
        stage.value,
        actor_user_id=actor_user_id,
        reason=reason,
    )
    ticket.stage = stage
    ticket.closed_at = utcnow() if stage is TicketStage.CLOSED else None
    session.add(ticket)
    return True


def follow_conversations(
    session: Session,
    thread_ids: Iterable[int],
    status: ConversationStatus,
    *,
    actor_user_id: int | None,
    reason: str,
) -> list[int]:
    """The tickets of these conversations follow their new status (see the module docstring).
    Returns the ids of the tickets changed."""
    ids = sorted(set(thread_ids))
    if not ids or status is ConversationStatus.SNOOZED:
        return []
    query = select(Ticket).where(col(Ticket.thread_id).in_(ids))
    if status is ConversationStatus.CLOSED:
        query, stage = query.where(col(Ticket.closed_at).is_(None)), TicketStage.CLOSED
    else:
        query, stage = query.where(col(Ticket.closed_at).is_not(None)), TicketStage.IN_PROGRESS
    changed: list[int] = []
    for ticket in session.exec(query.order_by(col(Ticket.id))).all():
        if set_stage(session, ticket, stage, actor_user_id=actor_user_id, reason=reason):
            changed.append(ticket.id or 0)
    session.flush()
    return changed


def absorb(session: Session, *, source: int, target: int, actor_user_id: int | None) -> None:
    """Conversation `source` is merged into `target` and deleted (by a user, or by threading when
    a reply joins two): its ticket cannot stay on it. Alone, it moves to `target`. When both have
    one, the older ticket (lower number) is kept on `target`, and the other goes, its history with
    it, noted in the history of the one kept (a conversation has one ticket)."""
    rows = session.exec(select(Ticket).where(col(Ticket.thread_id).in_([source, target]))).all()
    by_thread = {t.thread_id: t for t in rows}
    moving, staying = by_thread.get(source), by_thread.get(target)
    if moving is None:
        return
    if staying is None:
        moving.thread_id = target
        session.add(moving)
        session.flush()
        return
    keep, drop = (moving, staying) if moving.number < staying.number else (staying, moving)
    session.execute(delete(TicketEvent).where(col(TicketEvent.ticket_id) == drop.id))
    session.delete(drop)
    session.flush()  # frees the conversation's one ticket slot before the kept one takes it
    keep.thread_id = target
    record(
        session,
        keep,
        TicketChange.MERGED,
        f"#{drop.number}",
        f"#{keep.number}",
        actor_user_id=actor_user_id,
        reason=CONVERSATIONS_MERGED,
    )
    session.add(keep)
    session.flush()
