"""Hosted forwarding addresses (0020): the channel of a team inbox, what arrived at it, and
the tickets opened for new conversations.

A channel is a `MailAccount` of kind FORWARDING (quota, access, signatures, sending and the
inbox views need nothing new) with one virtual INBOX `FolderState`; each accepted message gets
an `ImapUid` there whose UID is its `InboundDelivery` id. That keeps `crm.mailstore` the one
writer of mail (same threading, linking, assignment and >100-recipient rule as synced mail)
and the thread-account triggers cover forwarded mail too.
"""

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from core.types import DeliveryOutcome, StrEnumType, TicketChange, TicketPriority, TicketStage
from crm.models._columns import created, json_column, timestamp


class ForwardingChannel(SQLModel, table=True):
    __tablename__ = "forwarding_channel"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    account_id: int = Field(foreign_key="mail_account.id", unique=True)
    # <local_part>-<suffix>@<domain>, unique over all tenants (the listener routes by it). The
    # local part may change until `activated_at`, the random suffix never.
    local_part: str = Field(max_length=64)
    suffix: str = Field(max_length=16)
    address: str = Field(max_length=320, unique=True)
    activated_at: datetime | None = timestamp()
    # The team's own address that forwards here (for "send a test" and the sender default).
    original_address: str = Field(default="", max_length=320)
    # The custom From of replies (0025), set only when its emailed link was followed
    # (crm.outbound.senders); None: replies are sent from the hosted address.
    sender_email: str | None = Field(default=None, max_length=320)
    # Tickets for each new conversation, with these defaults.
    create_tickets: bool = Field(default=False)
    ticket_stage: TicketStage = Field(
        default=TicketStage.NEW, sa_type=StrEnumType(TicketStage), nullable=False
    )
    ticket_priority: TicketPriority = Field(
        default=TicketPriority.MEDIUM, sa_type=StrEnumType(TicketPriority), nullable=False
    )
    # A forwarding loop seen (the same Message-ID over and over): shown until dismissed.
    loop_message_id: str | None = Field(default=None, sa_type=Text)
    loop_detected_at: datetime | None = timestamp()
    # "Send a test": the token mailed to the original address, and when it came back.
    test_token: str | None = Field(default=None, max_length=64)
    test_sent_at: datetime | None = timestamp()
    test_received_at: datetime | None = timestamp()
    created_at: datetime = created()


class InboundDelivery(SQLModel, table=True):
    """One message handed to one channel over SMTP/LMTP. `dedupe_key` (envelope + Message-ID)
    makes a retry after a crash between our commit and our 250 store nothing twice."""

    __tablename__ = "inbound_delivery"
    __table_args__ = (
        UniqueConstraint("account_id", "dedupe_key"),
        Index("ix_inbound_delivery_message", "account_id", "message_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    account_id: int = Field(foreign_key="mail_account.id")
    dedupe_key: str = Field(max_length=64)
    message_id: str = Field(sa_type=Text)
    mail_from: str = Field(default="", max_length=320)
    subject: str = Field(default="", sa_type=Text)
    outcome: DeliveryOutcome = Field(sa_type=StrEnumType(DeliveryOutcome), nullable=False)
    detail: str = Field(default="", sa_type=Text)
    # Who the message is credited to, and who forwarded it (None: written to us directly).
    credited_from: str = Field(default="", max_length=320)
    forwarded_by: str | None = Field(default=None, max_length=320)
    # A forward whose original sender could not be found (credited to the forwarder).
    unattributed: bool = Field(default=False)
    message_pk: int | None = Field(default=None, foreign_key="message.id")
    # Provider confirmation (provider, code, link, requested_by) and similar facts.
    data: dict[str, Any] = json_column(dict)
    arrivals: int = Field(default=1)
    received_at: datetime = created()
    last_arrival_at: datetime = created()


class Ticket(SQLModel, table=True):
    """A ticket for a conversation that started at a channel with tickets on (number per tenant)."""

    __tablename__ = "ticket"
    __table_args__ = (
        UniqueConstraint("tenant_id", "number"),
        Index("ix_ticket_opened", "tenant_id", "opened_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    number: int
    thread_id: int = Field(foreign_key="thread.id", unique=True)
    account_id: int = Field(foreign_key="mail_account.id")
    stage: TicketStage = Field(sa_type=StrEnumType(TicketStage), nullable=False)
    priority: TicketPriority = Field(sa_type=StrEnumType(TicketPriority), nullable=False)
    owner_user_id: int | None = Field(default=None, foreign_key="app_user.id")
    opened_at: datetime = created()
    closed_at: datetime | None = timestamp()


class TicketEvent(SQLModel, table=True):
    """One change in a ticket's history (0025): opened, stage, priority or owner, with who made
    it (None: the system) and why (a user's edit, the conversation closed or reopened, new mail)."""

    __tablename__ = "ticket_event"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    ticket_id: int = Field(foreign_key="ticket.id", index=True)
    change: TicketChange = Field(sa_type=StrEnumType(TicketChange), nullable=False)
    old_value: str | None = Field(default=None, max_length=64)
    new_value: str | None = Field(default=None, max_length=64)
    actor_user_id: int | None = Field(default=None, foreign_key="app_user.id")
    reason: str = Field(default="", max_length=32)
    at: datetime = created()
