"""IMAP bookkeeping: folder cursors, where each message lives (UIDs), fetch failures, runs.

Kept apart from CRM rows: a UIDVALIDITY resync rewrites these and never touches messages or links."""

from datetime import datetime
from typing import Any

from sqlalchemy import Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from core.types import (
    AccountStatus,
    FolderRole,
    FolderSyncStatus,
    RunStatus,
    StrEnumType,
    UidState,
)
from crm.models._columns import created, json_column, timestamp


class FolderState(SQLModel, table=True):
    """Restartable cursor of one synced folder. Written in the same transaction as the batch it
    covers, so after a crash the next run resumes exactly after the last committed batch."""

    __tablename__ = "folder_state"
    __table_args__ = (UniqueConstraint("account_id", "role"),)

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="mail_account.id", index=True)
    role: FolderRole = Field(sa_type=StrEnumType(FolderRole), nullable=False)
    name: str = Field(max_length=1000)
    uidvalidity: int | None = None
    highest_uid: int = Field(default=0)
    uidnext: int | None = None
    highestmodseq: int | None = None
    messages: int | None = None  # server's message count at the last completed pass
    status: FolderSyncStatus = Field(
        default=FolderSyncStatus.OK, sa_type=StrEnumType(FolderSyncStatus), nullable=False
    )
    uidvalidity_resyncs: int = Field(default=0)
    initial_sync_done: bool = Field(default=False)
    last_error_code: str | None = Field(default=None, max_length=64)  # 0005, as on MailAccount
    last_error_params: dict[str, Any] = json_column(dict)
    last_synced_at: datetime | None = timestamp()
    last_success_at: datetime | None = timestamp()


class ImapUid(SQLModel, table=True):
    """Where a message lives on a server: (folder, UIDVALIDITY, UID) -> message or skip record."""

    __tablename__ = "imap_uid"
    __table_args__ = (UniqueConstraint("folder_id", "uidvalidity", "uid"),)

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="mail_account.id", index=True)
    folder_id: int = Field(foreign_key="folder_state.id")
    uidvalidity: int
    uid: int
    state: UidState = Field(sa_type=StrEnumType(UidState), nullable=False)
    message_pk: int | None = Field(default=None, foreign_key="message.id", index=True)
    skipped_pk: int | None = Field(default=None, foreign_key="skipped_message.id")
    flags: list[str] = json_column(list)
    internal_date: datetime | None = timestamp()
    expunged_at: datetime | None = timestamp()
    created_at: datetime = created()


class FetchFailure(SQLModel, table=True):
    """Attempts at a message that failed to fetch or store; quarantined after a few."""

    __tablename__ = "fetch_failure"
    __table_args__ = (UniqueConstraint("folder_id", "uidvalidity", "uid"),)

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="mail_account.id", index=True)
    folder_id: int = Field(foreign_key="folder_state.id")
    uidvalidity: int
    uid: int
    attempts: int = Field(default=0)
    last_error: str = Field(default="", sa_type=Text)
    quarantined: bool = Field(default=False)
    first_failed_at: datetime = created()
    last_failed_at: datetime = created()


class SyncRun(SQLModel, table=True):
    __tablename__ = "sync_run"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="mail_account.id", index=True)
    started_at: datetime = created()
    ended_at: datetime | None = timestamp()
    status: RunStatus = Field(default=RunStatus.RUNNING, sa_type=StrEnumType(RunStatus), nullable=False)
    new_messages: int = Field(default=0)
    new_locations: int = Field(default=0)
    skipped: int = Field(default=0)
    malformed: int = Field(default=0)
    quarantined: int = Field(default=0)
    expunged: int = Field(default=0)
    errors: list[str] = json_column(list)
    error_status: AccountStatus | None = Field(default=None, sa_type=StrEnumType(AccountStatus))
