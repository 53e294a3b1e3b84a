"""Stored mail: threads, messages (once per tenant), their references, and mail skipped on purpose."""

from datetime import datetime
from typing import Any

from sqlalchemy import Column, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from core.types import (
    ConversationStatus,
    Direction,
    SkipReason,
    StrEnumType,
)
from crm.models._columns import created, json_column, timestamp


class Thread(SQLModel, table=True):
    __tablename__ = "thread"
    __table_args__ = (
        Index("ix_thread_tenant_last", "tenant_id", "last_date", "id"),
        Index("ix_thread_tenant_status", "tenant_id", "status", "assignee_user_id"),
        # The sidebar's counts read these alone (0018): status x assignee, and waiting for reply.
        Index("ix_thread_tenant_state", "tenant_id", "status", "assignee_user_id", "snoozed_until"),
        Index("ix_thread_tenant_waiting", "tenant_id", "last_direction", "last_date", "status"),
        # Snoozes whose time has come, read apart from the tallies (0022).
        Index("ix_thread_tenant_snoozed", "tenant_id", "status", "snoozed_until"),
        # One status's conversations in date order: the Snoozed, Pending and Closed lists (0027).
        Index("ix_thread_tenant_status_last", "tenant_id", "status", "last_date", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    subject: str = Field(default="", sa_type=Text)
    normalized_subject: str = Field(default="", sa_type=Text)
    first_date: datetime | None = timestamp()
    last_date: datetime | None = timestamp(index=True)
    message_count: int = Field(default=0)
    # The team's work on the conversation (0008): see crm.conversations.
    status: ConversationStatus = Field(
        default=ConversationStatus.OPEN, sa_type=StrEnumType(ConversationStatus), nullable=False
    )
    snoozed_until: datetime | None = timestamp()
    assignee_user_id: int | None = Field(default=None, foreign_key="app_user.id", index=True)
    # Direction of the newest message (0017): "waiting for reply" without reading the messages.
    last_direction: Direction = Field(
        default=Direction.INBOUND, sa_type=StrEnumType(Direction), nullable=False
    )
    # The accounts holding its mail as ",3,7," (0022), kept from `thread_account` by triggers: the
    # key of the sidebar's tallies (`ThreadTally`), so a conversation in two accounts a member sees
    # is counted once.
    account_key: str = Field(default="", sa_type=Text, sa_column_kwargs={"server_default": ""})


class Message(SQLModel, table=True):
    """One e-mail, stored once per tenant whatever the number of folders/accounts holding it."""

    __tablename__ = "message"
    __table_args__ = (
        UniqueConstraint("tenant_id", "message_id"),
        Index("ix_message_subject_fallback", "tenant_id", "normalized_subject", "participants_key"),
        Index("ix_message_thread_date", "thread_id", "date"),
        Index("ix_message_tenant_date", "tenant_id", "date"),
        Index("ix_message_content_hash", "tenant_id", "content_hash"),
        Index("ix_message_tenant_from", "tenant_id", "from_email"),
        Index("ix_message_attributed_user", "tenant_id", "attributed_user_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    message_id: str = Field(sa_type=Text)
    message_id_synthetic: bool = Field(default=False)
    content_hash: str = Field(max_length=64)
    subject: str = Field(default="", sa_type=Text)
    normalized_subject: str = Field(default="", sa_type=Text)
    participants_key: str = Field(default="", max_length=64)
    date: datetime | None = timestamp()
    from_email: str = Field(default="", max_length=320, index=True)
    from_name: str = Field(default="", sa_type=Text)
    to_addrs: list[dict[str, str]] = json_column(list)
    cc_addrs: list[dict[str, str]] = json_column(list)
    bcc_addrs: list[dict[str, str]] = json_column(list)
    reply_to: list[dict[str, str]] = json_column(list)
    in_reply_to: str | None = Field(default=None, sa_type=Text)
    references: list[str] = json_column(list)
    text_body: str = Field(default="", sa_type=Text)
    html_body: str = Field(default="", sa_type=Text)
    attachments: list[dict[str, Any]] = json_column(list)
    headers: dict[str, str] = json_column(dict)
    attached_message_senders: list[dict[str, str]] = json_column(list)
    size: int = Field(default=0)
    recipient_count: int = Field(default=0)
    direction: Direction = Field(default=Direction.INBOUND, sa_type=StrEnumType(Direction), nullable=False)
    thread_id: int | None = Field(default=None, foreign_key="thread.id")
    # Malformed mail is stored with a flag and its raw bytes, never dropped.
    malformed: bool = Field(default=False, index=True)
    parse_errors: list[str] = json_column(list)
    raw: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    # Oversized mail: headers only, the body was not downloaded.
    headers_only: bool = Field(default=False)
    # The tenant user a BCC-dropbox message was sent by (0002).
    attributed_user_id: int | None = Field(default=None, foreign_key="app_user.id")
    created_at: datetime = created()


class MessageRef(SQLModel, table=True):
    """Message-IDs a message points at (In-Reply-To + References), indexed for threading both
    ways: a reply that arrives before its parent still joins the parent's thread later."""

    __tablename__ = "message_ref"
    __table_args__ = (Index("ix_message_ref_lookup", "tenant_id", "ref_message_id"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    message_pk: int = Field(foreign_key="message.id", index=True)
    ref_message_id: str = Field(sa_type=Text)


class SkippedMessage(SQLModel, table=True):
    """Mail deliberately not stored as conversation mail (e.g. over 100 recipients)."""

    __tablename__ = "skipped_message"
    __table_args__ = (UniqueConstraint("tenant_id", "message_id"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    account_id: int = Field(foreign_key="mail_account.id", index=True)
    message_id: str = Field(sa_type=Text)
    subject: str = Field(default="", sa_type=Text)
    from_email: str = Field(default="", max_length=320)
    date: datetime | None = timestamp()
    recipient_count: int = Field(default=0)
    reason: SkipReason = Field(sa_type=StrEnumType(SkipReason), nullable=False)
    detail: str = Field(default="", sa_type=Text)
    created_at: datetime = created()


class ThreadAccount(SQLModel, table=True):
    """Which accounts hold mail of a conversation (0016): the visibility of a conversation and
    the per-account views read this small table instead of every message's locations. Kept by
    database triggers on `imap_uid` and on `message.thread_id`, so every writer is covered."""

    __tablename__ = "thread_account"
    __table_args__ = (Index("ix_thread_account_account", "account_id", "thread_id"),)

    thread_id: int = Field(foreign_key="thread.id", primary_key=True, ondelete="CASCADE")
    account_id: int = Field(foreign_key="mail_account.id", primary_key=True)


class ThreadTally(SQLModel, table=True):
    """How many conversations share one (accounts, status, assignee, last direction) (0022): the
    sidebar's counts sum these few rows instead of reading every conversation. Kept by triggers on
    `thread` (so every writer is covered, and counts stay exact); `n` may reach 0, never below.
    Snoozes are tallied as stored: one whose time has come is moved to open when counting."""

    __tablename__ = "thread_tally"

    tenant_id: int = Field(foreign_key="tenant.id", primary_key=True)
    account_key: str = Field(sa_type=Text, primary_key=True)
    status: ConversationStatus = Field(sa_type=StrEnumType(ConversationStatus), primary_key=True)
    assignee_user_id: int = Field(primary_key=True)  # 0: nobody (NULL cannot be part of a key)
    ours_last: bool = Field(primary_key=True)  # the newest message is ours (waiting for reply)
    n: int = Field(default=0)


class ThreadDeal(SQLModel, table=True):
    """A conversation with mail linked to a deal (0022), and the accounts holding that linked mail
    (",3,7,"): the per-deal-stage views read these pairs instead of every linked message. Kept by
    triggers on `message_link`, `imap_uid` and `message.thread_id`; a member sees the pair when one
    of its accounts is theirs (the rule of `access.message_visible`, for the linked messages)."""

    __tablename__ = "thread_deal"
    __table_args__ = (Index("ix_thread_deal_tenant", "tenant_id", "deal_id"),)

    thread_id: int = Field(foreign_key="thread.id", primary_key=True, ondelete="CASCADE")
    deal_id: int = Field(primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    link_key: str = Field(default="", sa_type=Text)


class ThreadStage(SQLModel, table=True):
    """A conversation linked to deals in one stage (0026), with the accounts holding its mail
    linked to those deals and the conversation's status: `thread_deal` grouped by the deals'
    stages, one row per conversation and stage. Kept by triggers on `thread_deal`, `deal` (stage
    changes, deletes) and `thread.status`; the per-stage counts tally these rows."""

    __tablename__ = "thread_stage"
    __table_args__ = (Index("ix_thread_stage_tenant", "tenant_id", "stage"),)

    thread_id: int = Field(foreign_key="thread.id", primary_key=True, ondelete="CASCADE")
    stage: str = Field(primary_key=True, max_length=100)
    tenant_id: int = Field(foreign_key="tenant.id")
    stage_key: str = Field(default="", sa_type=Text)
    status: ConversationStatus = Field(sa_type=StrEnumType(ConversationStatus))


class ThreadStageTally(SQLModel, table=True):
    """Changes to the number of conversations per (stage, accounts, status) (0026): one row per
    change, appended by the triggers of `thread_stage` and summed when read, so that writers never
    wait for each other on a shared counter row (see the migration). Folded by
    `crm.inbox_counts` when the rows of a tenant pile up."""

    __tablename__ = "thread_stage_tally"
    __table_args__ = (Index("ix_thread_stage_tally_tenant", "tenant_id", "stage"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    stage: str = Field(max_length=100)
    stage_key: str = Field(sa_type=Text)
    status: ConversationStatus = Field(sa_type=StrEnumType(ConversationStatus))
    n: int


class ThreadReadTally(SQLModel, table=True):
    """Changes to the number of conversations a user has read since their last mail, per
    (accounts, status) (0026): appended by triggers on `thread_read` and `thread`, summed when
    read; unread for a user is the open conversations they see minus these. Folded like
    `ThreadStageTally`."""

    __tablename__ = "thread_read_tally"
    __table_args__ = (Index("ix_thread_read_tally_user", "user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id")
    account_key: str = Field(sa_type=Text)
    status: ConversationStatus = Field(sa_type=StrEnumType(ConversationStatus))
    n: int
