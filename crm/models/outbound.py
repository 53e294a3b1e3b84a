"""Outgoing mail (issue 10): the durable send queue, per-account sending choices, and the key
that signs our Message-IDs."""

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from core.types import StrEnumType
from crm.models._columns import created, json_column, timestamp


class OutboundState(enum.StrEnum):
    """The queue's state machine (see crm.outbound.queue for the transitions)."""

    QUEUED = "queued"  # waiting for its time (undo delay or send later)
    SENDING = "sending"  # claimed by a worker under a lease
    SENT = "sent"
    DEFERRED = "deferred"  # a temporary failure; retried at next_attempt_at
    FAILED = "failed"  # permanent failure, attempts exhausted, or a send that may have happened
    CANCELLED = "cancelled"  # recalled within the undo delay
    # The account's daily limit is reached: goes at next_attempt_at (crm.outbound.limits).
    WAITING_LIMIT = "waiting_for_limit"


class MailKind(enum.StrEnum):
    REPLY = "reply"
    FORWARD = "forward"
    COMPOSE = "compose"
    NOTIFICATION = "notification"
    TEST = "test"
    VERIFICATION = "verification"


class SenderName(enum.StrEnum):
    """The display name of From, chosen per account."""

    USER = "user"  # "Ann Smith"
    COMPANY = "company"  # "Acme"
    USER_AT_COMPANY = "user_at_company"  # "Ann Smith at Acme"


class LimitUnit(enum.StrEnum):
    """What a provider's daily limit counts."""

    MESSAGES = "messages"
    RECIPIENTS = "recipients"  # every address of To, Cc and Bcc


class SendPhase(enum.StrEnum):
    """How far a claimed send got: decides what a worker does after a crash."""

    CLAIMED = "claimed"  # nothing was handed to the server: safe to retry
    DATA = "data"  # the message body may have reached the server: never resent automatically


class OutboundMail(SQLModel, table=True):
    __tablename__ = "outbound_mail"
    __table_args__ = (
        UniqueConstraint("tenant_id", "message_id"),
        Index("ix_outbound_due", "state", "next_attempt_at"),
        Index("ix_outbound_tenant_created", "tenant_id", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    # None: system mail through the deployment's own SMTP (tenant sending modes, 0021).
    account_id: int | None = Field(default=None, foreign_key="mail_account.id", index=True)
    user_id: int | None = Field(default=None, foreign_key="app_user.id")
    thread_id: int | None = Field(default=None, foreign_key="thread.id")
    kind: MailKind = Field(sa_type=StrEnumType(MailKind), nullable=False)
    state: OutboundState = Field(sa_type=StrEnumType(OutboundState), nullable=False)
    phase: SendPhase | None = Field(default=None, sa_type=StrEnumType(SendPhase))
    # Our Message-ID: the idempotency key of the send, of the Sent copy and of the stored message.
    message_id: str = Field(sa_type=Text)
    subject: str = Field(default="", sa_type=Text)
    from_email: str = Field(max_length=320)
    from_name: str = Field(default="", sa_type=Text)
    recipients: list[str] = json_column(list)  # the envelope (To + Cc + Bcc)
    to_addrs: list[dict[str, str]] = json_column(list)
    cc_addrs: list[dict[str, str]] = json_column(list)
    bcc_addrs: list[dict[str, str]] = json_column(list)
    # The complete message as built at compose time: every attempt sends the same bytes.
    raw: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    size: int = Field(default=0)
    attempts: int = Field(default=0)
    next_attempt_at: datetime | None = timestamp()
    last_response_code: int | None = None
    last_response: str = Field(default="", sa_type=Text)  # the server's last answer (mail log)
    error_code: str | None = Field(default=None, max_length=64)
    error_params: dict[str, Any] = json_column(dict)
    lease_owner: str | None = Field(default=None, max_length=200)
    lease_expires_at: datetime | None = timestamp()
    sent_at: datetime | None = timestamp()
    stored_message_pk: int | None = Field(default=None, foreign_key="message.id")
    sent_folder_done: bool = Field(default=False)  # appended (or the server saves it itself)
    created_at: datetime = created()
    updated_at: datetime = created()


class OutboundAccount(SQLModel, table=True):
    """Sending choices of one mail account (a row only once an admin changed a default)."""

    __tablename__ = "outbound_account"

    account_id: int = Field(foreign_key="mail_account.id", primary_key=True)
    sender_name: SenderName = Field(default=SenderName.USER, sa_type=StrEnumType(SenderName), nullable=False)
    # Gmail and Microsoft 365 file submitted mail in Sent themselves: no IMAP APPEND then.
    server_saves_sent: bool = Field(default=False)
    # Daily sending limit over a rolling 24 h (0021). None: the provider's default
    # (crm.outbound.limits); 0: no limit.
    daily_limit: int | None = None
    daily_limit_unit: LimitUnit | None = Field(default=None, sa_type=StrEnumType(LimitUnit))


class MessageIdKey(SQLModel, table=True):
    """A tenant's key for the HMAC in our Message-IDs (created on first use)."""

    __tablename__ = "message_id_key"

    tenant_id: int = Field(foreign_key="tenant.id", primary_key=True)
    key: str = Field(max_length=128)


class SendingMode(enum.StrEnum):
    """How a tenant's notifications and system mail leave (issue 10, item 5)."""

    DEFAULT = "default"  # the deployment's SMTP and address, with the tenant's name
    BRANDED = "branded"  # the deployment's SMTP, From the tenant's verified address
    OWN = "own"  # the tenant's own SMTP: one of its mail accounts (recommended)


class TenantMailSettings(SQLModel, table=True):
    """A tenant's sending choices (a row once an admin changed a default)."""

    __tablename__ = "tenant_mail_settings"

    tenant_id: int = Field(foreign_key="tenant.id", primary_key=True)
    mode: SendingMode = Field(default=SendingMode.DEFAULT, sa_type=StrEnumType(SendingMode), nullable=False)
    own_account_id: int | None = Field(default=None, foreign_key="mail_account.id")
    # The verified From of notification mail (branded mode); kept until a new one is verified.
    from_email: str | None = Field(default=None, max_length=320)
    notifications_enabled: bool = Field(default=True)


class SenderVerification(SQLModel, table=True):
    """An address a tenant asked to send from, waiting for its link to be followed (item 6).
    The token itself is never stored: only a hash of its secret part (single use: cleared)."""

    __tablename__ = "sender_verification"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    # The forwarding channel's account whose reply sender this is (0025); None: the tenant's
    # notification sender.
    account_id: int | None = Field(default=None, foreign_key="mail_account.id")
    email: str = Field(max_length=320)
    token_hash: str | None = Field(default=None, max_length=64)
    expires_at: datetime | None = timestamp()
    sends: int = Field(default=0)  # verification mails sent for this request
    last_sent_at: datetime | None = timestamp()
    verified_at: datetime | None = timestamp()
    created_at: datetime = created()


class Draft(SQLModel, table=True):
    """A reply or new mail being written, saved on the server (item 2): one per user and
    conversation; private to its author unless shared with the team."""

    __tablename__ = "outbound_draft"
    __table_args__ = (UniqueConstraint("user_id", "thread_id"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    user_id: int = Field(foreign_key="app_user.id")
    thread_id: int | None = Field(default=None, foreign_key="thread.id")
    account_id: int | None = Field(default=None, foreign_key="mail_account.id")
    shared: bool = Field(default=False)
    subject: str | None = Field(default=None, sa_type=Text)
    html: str = Field(default="", sa_type=Text)
    to_addrs: list[str] = json_column(list)
    cc_addrs: list[str] = json_column(list)
    bcc_addrs: list[str] = json_column(list)
    created_at: datetime = created()
    updated_at: datetime = created()


class NotificationTemplate(SQLModel, table=True):
    """A tenant's wording of one notification event (crm.outbound.notifications); none: the
    built-in wording."""

    __tablename__ = "notification_template"

    tenant_id: int = Field(foreign_key="tenant.id", primary_key=True)
    event: str = Field(max_length=64, primary_key=True)
    subject: str = Field(sa_type=Text)
    text: str = Field(sa_type=Text)
    html: str = Field(sa_type=Text)
    updated_at: datetime = created()


class NotificationPref(SQLModel, table=True):
    """A user's choice for one notification event (none: on)."""

    __tablename__ = "notification_pref"

    user_id: int = Field(foreign_key="app_user.id", primary_key=True)
    event: str = Field(max_length=64, primary_key=True)
    enabled: bool = Field(default=True)
    digest_hour: int | None = None  # daily digest only: the hour (UTC) it is sent
    digest_sent_at: datetime | None = timestamp()  # daily digest only: the last one queued
    # new_in_watched_inbox only: the shared inboxes (account ids) the user watches.
    watched_account_ids: list[int] = json_column(list)
