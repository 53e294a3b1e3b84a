"""Hosted forwarding addresses per team inbox (issue 13), their tickets, and the tickets report.

A channel is an account of kind "forwarding": its users, signatures, sending settings and
assignment rule are the account routes' (`/api/accounts/{account_id}/...`); these routes add
what only a hosted address has.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, SecretStr

from core.db import get_engine, session_scope
from core.secrets import SecretBox
from core.settings import get_settings
from core.types import Security, TicketPriority, TicketStage
from crm import forwarding
from crm.forwarding import SenderName, tickets
from crm.forwarding.channels import ChannelView, ConfirmationView, DeliveryView, TestView
from crm.forwarding.tickets import TicketEventView, TicketReport, TicketView
from crm.outbound import smtp_setup
from crm.outbound.senders import VerificationView
from inbox_api.deps import CallerDep, SessionDep
from sync.smtp_setup import make_test_sender

router = APIRouter(prefix="/api", tags=["forwarding"])


class ChannelIn(BaseModel):
    name: str = Field(min_length=1, max_length=200)
    local_part: str | None = Field(default=None, max_length=64, description="Default: from the name")
    original_address: str = Field(
        default="", max_length=320, description="The team's address forwarding here"
    )
    create_tickets: bool = False
    ticket_stage: TicketStage = TicketStage.NEW
    ticket_priority: TicketPriority = TicketPriority.MEDIUM


class ChannelEditIn(BaseModel):
    local_part: str | None = Field(default=None, max_length=64, description="Only before activation")
    original_address: str | None = Field(default=None, max_length=320)
    create_tickets: bool | None = None
    ticket_stage: TicketStage | None = None
    ticket_priority: TicketPriority | None = None
    sender_name: SenderName | None = Field(default=None, description="user, company or user_at_company")


class SmtpIn(BaseModel):
    host: str | None = Field(default=None, max_length=255, description="None or empty: no SMTP")
    port: int | None = Field(default=None, ge=1, le=65535, description="Default: 587, 465 or 25 by security")
    security: Security | None = Field(
        default=None, description="starttls (default, usually 587), tls (implicit, 465) or plain"
    )
    username: str | None = Field(default=None, max_length=320, description="Default: the one saved before")
    password: SecretStr | None = Field(
        default=None, max_length=1000, description="Write-only; default: the one saved before"
    )
    test_to: str | None = Field(
        default=None, max_length=320, description="Where the test mail goes (required with a host)"
    )


class SenderIn(BaseModel):
    email: str = Field(min_length=3, max_length=320, description="The custom From of the replies")


class TicketEditIn(BaseModel):
    stage: TicketStage | None = None
    priority: TicketPriority | None = None
    owner_user_id: int | None = None
    clear_owner: bool = False


@router.get("/forwarding", summary="Forwarding addresses of the team inboxes I may see")
def list_channels(session: SessionDep, caller: CallerDep) -> list[ChannelView]:
    return forwarding.list_channels(session=session, caller=caller)


@router.post("/forwarding", status_code=201, summary="Create a team inbox's forwarding address (admins)")
def create_channel(body: ChannelIn, session: SessionDep, caller: CallerDep) -> ChannelView:
    return forwarding.create_channel(
        session=session,
        caller=caller,
        box=SecretBox.from_settings(),
        domain=get_settings().inbound_domain,
        name=body.name,
        local_part=body.local_part,
        original_address=body.original_address,
        create_tickets=body.create_tickets,
        ticket_stage=body.ticket_stage,
        ticket_priority=body.ticket_priority,
    )


@router.get("/forwarding/{channel_id}", summary="One forwarding address, with its warnings and test")
def get_channel(channel_id: int, session: SessionDep, caller: CallerDep) -> ChannelView:
    return forwarding.get_channel(session=session, caller=caller, channel_id=channel_id)


@router.patch("/forwarding/{channel_id}", summary="Change a forwarding address's settings (admins)")
def edit_channel(channel_id: int, body: ChannelEditIn, session: SessionDep, caller: CallerDep) -> ChannelView:
    if body.local_part is not None:
        forwarding.set_local_part(
            session=session,
            caller=caller,
            channel_id=channel_id,
            local_part=body.local_part,
            domain=get_settings().inbound_domain,
        )
    return forwarding.update_channel(
        session=session,
        caller=caller,
        channel_id=channel_id,
        original_address=body.original_address,
        create_tickets=body.create_tickets,
        ticket_stage=body.ticket_stage,
        ticket_priority=body.ticket_priority,
        sender_name=body.sender_name,
    )


@router.put(
    "/forwarding/{channel_id}/smtp",
    summary="The SMTP server replies from this address leave through: saved once a test mail was accepted",
)
def set_smtp(channel_id: int, body: SmtpIn, session: SessionDep, caller: CallerDep) -> ChannelView:
    """Like `PUT /api/accounts/{account_id}/smtp` on the channel's account: a test mail goes out
    first and the settings are saved only once the server accepted it (409 `smtp_test_failed`
    with its cause otherwise). An empty host removes the SMTP server (no test needed)."""
    if not (body.host or "").strip():
        return forwarding.remove_smtp(session=session, caller=caller, channel_id=channel_id)
    channel = forwarding.get_channel(session=session, caller=caller, channel_id=channel_id)
    session.commit()  # no transaction held while the SMTP server answers
    box = SecretBox.from_settings()
    smtp_setup.save_smtp_settings(
        sessions=session_scope,
        caller=caller,
        account_id=channel.account_id,
        given=smtp_setup.SmtpSettingsIn(
            host=body.host or "",
            security=body.security or Security.STARTTLS,
            port=body.port,
            username=body.username,
            password=body.password,
            test_to=body.test_to or "",
        ),
        box=box,
        send_test=make_test_sender(get_settings(), db=get_engine(), box=box),
    )
    return forwarding.get_channel(session=session, caller=caller, channel_id=channel_id)


@router.post(
    "/forwarding/{channel_id}/sender",
    summary="Send replies as a custom address, once the link mailed to it is followed (admins)",
)
def request_sender(channel_id: int, body: SenderIn, session: SessionDep, caller: CallerDep) -> ChannelView:
    return forwarding.request_sender(session=session, caller=caller, channel_id=channel_id, email=body.email)


@router.get(
    "/forwarding/{channel_id}/sender",
    summary="Custom senders waiting for their link (admins; resend: /api/sending/sender/{id}/resend)",
)
def pending_senders(channel_id: int, session: SessionDep, caller: CallerDep) -> list[VerificationView]:
    return list(forwarding.pending_sender_requests(session=session, caller=caller, channel_id=channel_id))


@router.post("/forwarding/{channel_id}/activate", summary="Fix the address for good (admins)")
def activate_channel(channel_id: int, session: SessionDep, caller: CallerDep) -> ChannelView:
    return forwarding.activate(session=session, caller=caller, channel_id=channel_id)


@router.delete(
    "/forwarding/{channel_id}/loop-warning", summary="Dismiss the forwarding-loop warning (admins)"
)
def dismiss_loop(channel_id: int, session: SessionDep, caller: CallerDep) -> ChannelView:
    return forwarding.dismiss_loop(session=session, caller=caller, channel_id=channel_id)


@router.get(
    "/forwarding/{channel_id}/deliveries", summary="What arrived at the address, and what became of it"
)
def list_deliveries(
    channel_id: int, session: SessionDep, caller: CallerDep, limit: Annotated[int, Query(ge=1, le=500)] = 100
) -> list[DeliveryView]:
    return forwarding.list_deliveries(session=session, caller=caller, channel_id=channel_id, limit=limit)


@router.get(
    "/forwarding/{channel_id}/confirmations",
    summary="Providers' forwarding confirmations: code and link (admins)",
)
def list_confirmations(channel_id: int, session: SessionDep, caller: CallerDep) -> list[ConfirmationView]:
    return forwarding.list_confirmations(session=session, caller=caller, channel_id=channel_id)


@router.post(
    "/forwarding/{channel_id}/test",
    summary="Send a test to the team's original address; it must come back through the forward",
)
def send_test(channel_id: int, session: SessionDep, caller: CallerDep) -> TestView:
    return forwarding.send_test(session=session, caller=caller, channel_id=channel_id)


@router.get("/tickets", summary="Tickets of the conversations I may see, newest first")
def list_tickets(
    session: SessionDep,
    caller: CallerDep,
    stage: TicketStage | None = None,
    priority: TicketPriority | None = None,
    owner_user_id: int | None = None,
    unowned: bool = False,
    open_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[TicketView]:
    return tickets.list_tickets(
        session=session,
        caller=caller,
        stage=stage,
        priority=priority,
        owner_user_id=owner_user_id,
        unowned=unowned,
        open_only=open_only,
        limit=limit,
    )


@router.get("/tickets/report", summary="Tickets opened and closed in a period, and the time to close")
def ticket_report(
    session: SessionDep, caller: CallerDep, since: datetime | None = None, until: datetime | None = None
) -> TicketReport:
    return tickets.ticket_report(session=session, caller=caller, since=since, until=until)


@router.get("/tickets/{ticket_id}", summary="One ticket")
def get_ticket(ticket_id: int, session: SessionDep, caller: CallerDep) -> TicketView:
    return tickets.get_ticket(session=session, caller=caller, ticket_id=ticket_id)


@router.get("/tickets/{ticket_id}/history", summary="Every change of a ticket, oldest first")
def ticket_history(ticket_id: int, session: SessionDep, caller: CallerDep) -> list[TicketEventView]:
    return tickets.ticket_history(session=session, caller=caller, ticket_id=ticket_id)


@router.patch("/tickets/{ticket_id}", summary="Change a ticket's stage, priority or owner")
def edit_ticket(ticket_id: int, body: TicketEditIn, session: SessionDep, caller: CallerDep) -> TicketView:
    return tickets.update_ticket(
        session=session,
        caller=caller,
        ticket_id=ticket_id,
        stage=body.stage,
        priority=body.priority,
        owner_user_id=body.owner_user_id,
        clear_owner=body.clear_owner,
    )
