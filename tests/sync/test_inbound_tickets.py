"""A ticket follows its conversation, through the real listener, on SQLite and PostgreSQL:
closing the conversation closes the ticket, the customer writing again (or a user reopening
it) reopens it, and every change, edits included, is in the ticket's history."""

from __future__ import annotations

import smtplib

import pytest
from sqlalchemy import Engine

from core.caller import Caller
from core.db import session_scope
from core.errors import DomainError
from core.settings import Settings
from core.types import ConversationStatus, TicketChange, TicketPriority, TicketStage
from crm import assignment, conversations, grants, tenants, thread_edits
from crm.forwarding import tickets
from crm.ticket_events import (
    CONVERSATION_CLOSED,
    CONVERSATION_REOPENED,
    CONVERSATIONS_MERGED,
    EDITED,
    NEW_CONVERSATION,
    NEW_MAIL,
)
from tests.sync.inbound_harness import inbound_settings, listener, mail, make_world


def send(port: int, rcpt: str, raw: bytes) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        assert client.sendmail("sales@ourco.example", [rcpt], raw) == {}


def history(db: Engine, caller: Caller, ticket_id: int) -> list[tuple[str, str | None, str | None, str]]:
    with session_scope(db) as session:
        rows = tickets.ticket_history(session=session, caller=caller, ticket_id=ticket_id)
    return [(r.change.value, r.old_value, r.new_value, r.reason) for r in rows]


def test_ticket_follows_its_conversation_with_history(db: Engine, settings: Settings) -> None:
    world = make_world(db, create_tickets=True)
    admin = world.admin
    with session_scope(db) as session:
        grants.grant_access(
            session=session, caller=admin, account_id=world.account_id, user_id=world.admin_id
        )
        assignment.set_rule(
            session=session,
            caller=admin,
            account_id=world.account_id,
            mode=assignment.AssignMode.ROUND_ROBIN,
            user_ids=[world.admin_id],
        )
        helper = tenants.create_user(session=session, caller=admin, email="ann@ourco.example")
    s = inbound_settings(settings)
    with listener(s, db):
        send(s.inbound_port, world.address, mail(message_id="<t1@acme.example>"))
        with session_scope(db) as session:
            [ticket] = tickets.list_tickets(session=session, caller=admin)
            assert ticket.stage is TicketStage.NEW and ticket.closed_at is None
            # Closing the conversation closes the ticket, by that user.
            conversations.set_status(
                session=session, caller=admin, thread_id=ticket.thread_id, status=ConversationStatus.CLOSED
            )
            closed = tickets.get_ticket(session=session, caller=admin, ticket_id=ticket.id)
            assert closed.stage is TicketStage.CLOSED and closed.closed_at is not None
            assert tickets.ticket_report(session=session, caller=admin).closed == 1
        # The customer writes again: the conversation and its ticket reopen.
        send(
            s.inbound_port,
            world.address,
            mail(
                subject="Re: Pricing question",
                message_id="<t2@acme.example>",
                headers={"In-Reply-To": "<t1@acme.example>"},
            ),
        )
        with session_scope(db) as session:
            assert len(tickets.list_tickets(session=session, caller=admin)) == 1  # no second ticket
            again = tickets.get_ticket(session=session, caller=admin, ticket_id=ticket.id)
            state = conversations.get_state(session=session, caller=admin, thread_id=ticket.thread_id)
            assert state.status is ConversationStatus.OPEN
            assert again.stage is TicketStage.IN_PROGRESS and again.closed_at is None
            assert tickets.list_tickets(session=session, caller=admin, open_only=True)[0].id == ticket.id
            # Closed again, then a user reopens the conversation: the ticket reopens too.
            for status in (ConversationStatus.CLOSED, ConversationStatus.OPEN):
                conversations.set_status(
                    session=session, caller=admin, thread_id=ticket.thread_id, status=status
                )
            reopened = tickets.get_ticket(session=session, caller=admin, ticket_id=ticket.id)
            assert reopened.stage is TicketStage.IN_PROGRESS and reopened.closed_at is None
            # Edits by hand: priority and owner, each in the history; a refused one changes nothing.
            tickets.update_ticket(
                session=session,
                caller=admin,
                ticket_id=ticket.id,
                priority=TicketPriority.URGENT,
                owner_user_id=helper.id,
            )
    with session_scope(db) as session:
        tenants.set_user_active(session=session, caller=admin, user_id=helper.id, active=False)
    with session_scope(db) as session, pytest.raises(DomainError) as refused:
        tickets.update_ticket(
            session=session,
            caller=admin,
            ticket_id=ticket.id,
            priority=TicketPriority.LOW,
            owner_user_id=helper.id,
        )
    assert refused.value.code == "user_inactive"
    events = history(db, admin, ticket.id)
    assert events == [
        (TicketChange.OPENED.value, None, "new", NEW_CONVERSATION),
        (TicketChange.STAGE.value, "new", "closed", CONVERSATION_CLOSED),
        (TicketChange.STAGE.value, "closed", "in_progress", NEW_MAIL),
        (TicketChange.STAGE.value, "in_progress", "closed", CONVERSATION_CLOSED),
        (TicketChange.STAGE.value, "closed", "in_progress", CONVERSATION_REOPENED),
        (TicketChange.PRIORITY.value, "medium", "urgent", EDITED),
        (TicketChange.OWNER.value, str(world.admin_id), str(helper.id), EDITED),
    ]
    with session_scope(db) as session:
        rows = tickets.ticket_history(session=session, caller=admin, ticket_id=ticket.id)
        # Who: the system for the opening and the customer's new mail, the user otherwise.
        assert [r.actor_user_id for r in rows] == [None, world.admin_id, None] + [world.admin_id] * 4
        # Filters of the tickets view: by stage, priority and owner.
        assert [
            t.id for t in tickets.list_tickets(session=session, caller=admin, priority=TicketPriority.URGENT)
        ] == [ticket.id]
        assert tickets.list_tickets(session=session, caller=admin, priority=TicketPriority.LOW) == []
        assert [
            t.id for t in tickets.list_tickets(session=session, caller=admin, owner_user_id=helper.id)
        ] == [ticket.id]
        assert tickets.list_tickets(session=session, caller=admin, unowned=True) == []
        assert tickets.list_tickets(session=session, caller=admin, stage=TicketStage.CLOSED) == []


def test_merging_ticketed_conversations_keeps_one_ticket(db: Engine, settings: Settings) -> None:
    """Two conversations with tickets merged (by a user here; threading does the same): the
    older ticket stays, on the merged conversation, and says so in its history; the other goes
    with its conversation. A ticket on the merged-away conversation alone moves with it."""
    world = make_world(db, create_tickets=True)
    admin = world.admin
    s = inbound_settings(settings)
    with listener(s, db):
        send(s.inbound_port, world.address, mail(message_id="<m1@acme.example>", subject="First"))
        send(s.inbound_port, world.address, mail(message_id="<m2@acme.example>", subject="Second"))
        send(s.inbound_port, world.address, mail(message_id="<m3@acme.example>", subject="Third"))
    with session_scope(db) as session:
        third, second, first = tickets.list_tickets(session=session, caller=admin)
        # The second (number 2) merged into the first's conversation... the first's ticket stays.
        thread_edits.merge(
            session=session, caller=admin, target_id=first.thread_id, source_id=second.thread_id
        )
    with session_scope(db) as session:
        assert [t.number for t in tickets.list_tickets(session=session, caller=admin)] == [3, 1]
        kept = tickets.get_ticket(session=session, caller=admin, ticket_id=first.id)
        assert kept.thread_id == first.thread_id
        events = tickets.ticket_history(session=session, caller=admin, ticket_id=first.id)
        assert (events[-1].change, events[-1].old_value, events[-1].reason) == (
            TicketChange.MERGED,
            "#2",
            CONVERSATIONS_MERGED,
        )
        # ...and the first's conversation (now holding ticket 1) merged into the third's, which
        # has the newer ticket: the older one stays, moved onto the surviving conversation.
        thread_edits.merge(
            session=session, caller=admin, target_id=third.thread_id, source_id=first.thread_id
        )
    with session_scope(db) as session:
        [survivor] = tickets.list_tickets(session=session, caller=admin)
        assert (survivor.number, survivor.thread_id) == (1, third.thread_id)
        last = tickets.ticket_history(session=session, caller=admin, ticket_id=survivor.id)[-1]
        assert (last.change, last.old_value) == (TicketChange.MERGED, "#3")
