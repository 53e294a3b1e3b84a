"""The team's work on conversations (0008): read marks per user, internal notes, and the activity
that makes up each conversation's history and the tenant's audit log."""

from datetime import datetime
from typing import Any

from sqlalchemy import Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from core.types import ActivityKind, StrEnumType
from crm.models._columns import created, json_column, timestamp


class ThreadRead(SQLModel, table=True):
    """When a user last read a conversation: unread for them when newer mail arrived since.
    Never touches the server's \\Seen flag."""

    __tablename__ = "thread_read"
    __table_args__ = (UniqueConstraint("user_id", "thread_id"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id")
    thread_id: int = Field(foreign_key="thread.id", index=True)
    read_at: datetime = created()


class Note(SQLModel, table=True):
    """An internal note on a conversation: the team sees it, the customer never does."""

    __tablename__ = "note"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    thread_id: int = Field(foreign_key="thread.id", index=True)
    author_user_id: int = Field(foreign_key="app_user.id")
    body: str = Field(sa_type=Text)
    mentions: list[int] = json_column(list)  # user ids
    created_at: datetime = created()


class Activity(SQLModel, table=True):
    """Who did what, when: a conversation's history (thread_id set) and the audit log."""

    __tablename__ = "activity"
    __table_args__ = (
        Index("ix_activity_thread", "thread_id", "id"),
        Index("ix_activity_tenant", "tenant_id", "id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    thread_id: int | None = Field(default=None, foreign_key="thread.id")
    actor_user_id: int | None = Field(default=None, foreign_key="app_user.id")
    kind: ActivityKind = Field(sa_type=StrEnumType(ActivityKind), nullable=False)
    data: dict[str, Any] = json_column(dict)
    created_at: datetime = created()


class Presence(SQLModel, table=True):
    """Who is viewing or replying to a conversation right now; gone 30 s after the last
    heartbeat (a closed tab sends nothing). A table, not memory: several API processes share it."""

    __tablename__ = "presence"
    __table_args__ = (
        UniqueConstraint("user_id", "thread_id"),
        Index("ix_presence_thread", "thread_id", "expires_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    user_id: int = Field(foreign_key="app_user.id")
    thread_id: int = Field(foreign_key="thread.id")
    state: str = Field(max_length=16)  # viewing | replying
    updated_at: datetime = created()
    expires_at: datetime = timestamp(nullable=False)


class AssignmentRule(SQLModel, table=True):
    """How new conversations of one account find an owner (0011), and when mail we sent without an
    answer shows as "waiting for reply"."""

    __tablename__ = "assignment_rule"

    account_id: int = Field(foreign_key="mail_account.id", primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    mode: str = Field(default="none", max_length=20)  # none | round_robin | contact_owner
    user_ids: list[int] = json_column(list)  # the round-robin rota, in order
    max_open: int | None = Field(default=None)  # cap of open conversations per user
    last_user_id: int | None = Field(default=None)  # where the rota stands
    follow_up_days: int = Field(default=3)
    updated_at: datetime = created()


class ThreadSplit(SQLModel, table=True):
    """Two conversations a user split apart (0015): threading never joins them again, even when
    later mail refers to messages of both."""

    __tablename__ = "thread_split"
    __table_args__ = (UniqueConstraint("thread_a", "thread_b"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    thread_a: int = Field(foreign_key="thread.id")
    thread_b: int = Field(foreign_key="thread.id")
    created_at: datetime = created()


class ImageSender(SQLModel, table=True):
    """A sender whose remote images a user chose to always see (0023): their mail then loads its
    images through the app's image proxy without asking. Per user, never the team's choice."""

    __tablename__ = "image_sender"
    __table_args__ = (UniqueConstraint("user_id", "sender_email"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    user_id: int = Field(foreign_key="app_user.id")
    sender_email: str = Field(max_length=320)
    created_at: datetime = created()
