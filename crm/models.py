"""SQLModel tables. Schema changes go through Alembic (migrations/), never `create_all`.

IMAP bookkeeping (`FolderState`, `ImapUid`, `FetchFailure`) is kept apart from CRM rows
(`Message`, `Thread`, links): a UIDVALIDITY resync rewrites the former and never touches the latter.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from crm.types import (
    AccountStatus,
    Direction,
    FolderRole,
    FolderSyncStatus,
    RunStatus,
    Security,
    SkipReason,
    StrEnumType,
    UidState,
    UTCDateTime,
    utcnow,
)


def _ts(*, nullable: bool = True, index: bool = False) -> Any:
    return Field(default=None, sa_type=UTCDateTime, nullable=nullable, index=index)


def _created() -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime, nullable=False)


def _json(default: Any) -> Any:
    return Field(default_factory=default, sa_column=Column(JSON, nullable=False))


class Tenant(SQLModel, table=True):
    __tablename__ = "tenant"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    account_quota: int = Field(default=5)
    # The company's own mail domains: never linked as a customer company, never made a lead.
    own_domains: list[str] = _json(list)
    auto_create_leads: bool = Field(default=False)
    bcc_account_id: int | None = Field(default=None)
    created_at: datetime = _created()


class User(SQLModel, table=True):
    __tablename__ = "app_user"  # "user" is reserved in PostgreSQL
    __table_args__ = (UniqueConstraint("tenant_id", "email"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    email: str = Field(max_length=320)
    first_name: str = Field(default="", max_length=100)
    last_name: str = Field(default="", max_length=100)
    job_title: str = Field(default="", max_length=200)
    phone: str = Field(default="", max_length=50)
    is_admin: bool = Field(default=False)
    default_account_id: int | None = Field(default=None)
    created_at: datetime = _created()


class MailAccount(SQLModel, table=True):
    __tablename__ = "mail_account"
    __table_args__ = (UniqueConstraint("tenant_id", "email"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    email: str = Field(max_length=320)
    display_name: str = Field(default="", max_length=200)
    imap_host: str = Field(max_length=255)
    imap_port: int
    imap_security: Security = Field(sa_type=StrEnumType(Security), nullable=False)
    smtp_host: str | None = Field(default=None, max_length=255)
    smtp_port: int | None = None
    smtp_security: Security | None = Field(default=None, sa_type=StrEnumType(Security))
    username: str = Field(max_length=320)
    # Fernet token of the password; never returned by the API, never logged.
    secret_encrypted: str = Field(sa_type=Text, nullable=False)
    # SMTP login when it differs from IMAP's (0003); None: same username and password.
    smtp_username: str | None = Field(default=None, max_length=320)
    smtp_secret_encrypted: str | None = Field(default=None, sa_type=Text)
    # Mail of this account was stored at least once: from then on it can only be deactivated.
    processed_any: bool = Field(default=False)
    # A CA bundle to trust for a self-hosted server (verification stays on).
    ca_file: str | None = Field(default=None, max_length=1000)
    active: bool = Field(default=True, index=True)
    sync_interval_seconds: int = Field(default=300)
    # History window: the first sync only takes mail since this date (None: all mail).
    sync_since: datetime | None = _ts()
    status: AccountStatus = Field(
        default=AccountStatus.NEW, sa_type=StrEnumType(AccountStatus), nullable=False
    )
    last_error: str | None = Field(default=None, sa_type=Text)
    last_error_at: datetime | None = _ts()
    last_success_at: datetime | None = _ts()
    consecutive_failures: int = Field(default=0)
    auth_failures: int = Field(default=0)
    next_attempt_at: datetime | None = _ts()
    # Worker lease: a worker claims the account with a compare-and-set on these two columns,
    # so several workers sharing one PostgreSQL never sync the same account at once.
    lease_owner: str | None = Field(default=None, max_length=200)
    lease_expires_at: datetime | None = _ts()
    created_at: datetime = _created()
    deactivated_at: datetime | None = _ts()


class AccountAccess(SQLModel, table=True):
    __tablename__ = "account_access"
    __table_args__ = (UniqueConstraint("user_id", "account_id"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    account_id: int = Field(foreign_key="mail_account.id", index=True)
    # The user's default signature when composing from this account (0003).
    default_signature_id: int | None = Field(default=None, foreign_key="signature.id")
    created_at: datetime = _created()


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
    last_error: str | None = Field(default=None, sa_type=Text)
    last_synced_at: datetime | None = _ts()
    last_success_at: datetime | None = _ts()


class Thread(SQLModel, table=True):
    __tablename__ = "thread"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    subject: str = Field(default="", sa_type=Text)
    normalized_subject: str = Field(default="", sa_type=Text)
    first_date: datetime | None = _ts()
    last_date: datetime | None = _ts(index=True)
    message_count: int = Field(default=0)


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
    date: datetime | None = _ts()
    from_email: str = Field(default="", max_length=320, index=True)
    from_name: str = Field(default="", sa_type=Text)
    to_addrs: list[dict[str, str]] = _json(list)
    cc_addrs: list[dict[str, str]] = _json(list)
    bcc_addrs: list[dict[str, str]] = _json(list)
    reply_to: list[dict[str, str]] = _json(list)
    in_reply_to: str | None = Field(default=None, sa_type=Text)
    references: list[str] = _json(list)
    text_body: str = Field(default="", sa_type=Text)
    html_body: str = Field(default="", sa_type=Text)
    attachments: list[dict[str, Any]] = _json(list)
    headers: dict[str, str] = _json(dict)
    attached_message_senders: list[dict[str, str]] = _json(list)
    size: int = Field(default=0)
    recipient_count: int = Field(default=0)
    direction: Direction = Field(default=Direction.INBOUND, sa_type=StrEnumType(Direction), nullable=False)
    thread_id: int | None = Field(default=None, foreign_key="thread.id")
    # Malformed mail is stored with a flag and its raw bytes, never dropped.
    malformed: bool = Field(default=False, index=True)
    parse_errors: list[str] = _json(list)
    raw: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    # Oversized mail: headers only, the body was not downloaded.
    headers_only: bool = Field(default=False)
    # The tenant user a BCC-dropbox message was sent by (0002).
    attributed_user_id: int | None = Field(default=None, foreign_key="app_user.id")
    created_at: datetime = _created()


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
    date: datetime | None = _ts()
    recipient_count: int = Field(default=0)
    reason: SkipReason = Field(sa_type=StrEnumType(SkipReason), nullable=False)
    detail: str = Field(default="", sa_type=Text)
    created_at: datetime = _created()


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
    flags: list[str] = _json(list)
    internal_date: datetime | None = _ts()
    expunged_at: datetime | None = _ts()
    created_at: datetime = _created()


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
    first_failed_at: datetime = _created()
    last_failed_at: datetime = _created()


class SyncRun(SQLModel, table=True):
    __tablename__ = "sync_run"

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="mail_account.id", index=True)
    started_at: datetime = _created()
    ended_at: datetime | None = _ts()
    status: RunStatus = Field(default=RunStatus.RUNNING, sa_type=StrEnumType(RunStatus), nullable=False)
    new_messages: int = Field(default=0)
    new_locations: int = Field(default=0)
    skipped: int = Field(default=0)
    malformed: int = Field(default=0)
    quarantined: int = Field(default=0)
    expunged: int = Field(default=0)
    errors: list[str] = _json(list)
    error_status: AccountStatus | None = Field(default=None, sa_type=StrEnumType(AccountStatus))


# ---------------------------------------------------------------------------------------------
# CRM records and links (migration 0002)


class Company(SQLModel, table=True):
    __tablename__ = "company"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    name: str = Field(max_length=300)
    created_at: datetime = _created()


class CompanyDomain(SQLModel, table=True):
    __tablename__ = "company_domain"
    __table_args__ = (UniqueConstraint("tenant_id", "domain"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    company_id: int = Field(foreign_key="company.id", index=True)
    domain: str = Field(max_length=255)


class Contact(SQLModel, table=True):
    __tablename__ = "contact"
    __table_args__ = (Index("ix_contact_owner", "tenant_id", "owner_user_id"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    first_name: str = Field(default="", max_length=200)
    last_name: str = Field(default="", max_length=200)
    full_name: str = Field(default="", max_length=400)
    phone: str = Field(default="", max_length=100)
    company_id: int | None = Field(default=None, foreign_key="company.id", index=True)
    owner_user_id: int | None = Field(default=None, foreign_key="app_user.id")
    # How the contact came to be: "manual", "import", "lead" (created from an unknown sender).
    source: str = Field(default="manual", max_length=20)
    created_at: datetime = _created()


class ContactEmail(SQLModel, table=True):
    __tablename__ = "contact_email"
    __table_args__ = (UniqueConstraint("tenant_id", "email"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    contact_id: int = Field(foreign_key="contact.id", index=True)
    email: str = Field(max_length=320)  # lower-cased


class Deal(SQLModel, table=True):
    __tablename__ = "deal"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    title: str = Field(max_length=300)
    stage: str = Field(default="new", max_length=100)
    amount: float | None = None
    currency: str = Field(default="EUR", max_length=3)
    status: str = Field(default="open", max_length=10)  # open | won | lost
    owner_user_id: int | None = Field(default=None, foreign_key="app_user.id")
    company_id: int | None = Field(default=None, foreign_key="company.id")
    created_at: datetime = _created()


class DealContact(SQLModel, table=True):
    __tablename__ = "deal_contact"
    __table_args__ = (UniqueConstraint("deal_id", "contact_id"),)

    id: int | None = Field(default=None, primary_key=True)
    deal_id: int = Field(foreign_key="deal.id", index=True)
    contact_id: int = Field(foreign_key="contact.id", index=True)


class MessageAddress(SQLModel, table=True):
    """Every address of a message, indexed: a contact or domain added later finds its mail with
    an index lookup (targeted backfill), never a scan of all mail."""

    __tablename__ = "message_address"
    __table_args__ = (
        UniqueConstraint("message_pk", "role", "email"),
        Index("ix_message_address_email", "tenant_id", "email"),
        Index("ix_message_address_domain", "tenant_id", "domain"),
        Index("ix_message_address_base_domain", "tenant_id", "base_domain"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    message_pk: int = Field(foreign_key="message.id", index=True)
    role: str = Field(max_length=10)  # from | to | cc | bcc | forwarded
    email: str = Field(max_length=320)
    domain: str = Field(max_length=255)
    # registrable_domain(domain), 0004: finds a company domain's mail and its subdomains' by index.
    base_domain: str = Field(default="", max_length=255)


class MessageLink(SQLModel, table=True):
    """A message on a CRM record, with the reason it is there ("why is this mail on this deal")."""

    __tablename__ = "message_link"
    __table_args__ = (
        UniqueConstraint("message_pk", "record_kind", "record_id"),
        Index("ix_message_link_record", "tenant_id", "record_kind", "record_id", "message_pk"),
    )

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    message_pk: int = Field(foreign_key="message.id", index=True)
    record_kind: str = Field(max_length=10)  # contact | company | deal
    record_id: int
    reason: str = Field(max_length=20)  # crm.linking.LinkReason
    detail: str = Field(default="", sa_type=Text)
    created_by_user_id: int | None = Field(default=None, foreign_key="app_user.id")
    created_at: datetime = _created()


class LinkSuppression(SQLModel, table=True):
    """A user removed a record from a thread's mail: rules never put it back on that thread
    (replies, re-syncs, backfills) until a user links it again by hand."""

    __tablename__ = "link_suppression"
    __table_args__ = (UniqueConstraint("thread_id", "record_kind", "record_id"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    thread_id: int = Field(foreign_key="thread.id", index=True)
    record_kind: str = Field(max_length=10)
    record_id: int
    created_by_user_id: int | None = Field(default=None, foreign_key="app_user.id")
    created_at: datetime = _created()


# ---------------------------------------------------------------------------------------------
# Mailbox administration (migration 0003)


class Signature(SQLModel, table=True):
    """Up to three per account; `html` is the sanitized mail-merge template."""

    __tablename__ = "signature"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    account_id: int = Field(foreign_key="mail_account.id", index=True)
    name: str = Field(max_length=100)
    html: str = Field(sa_type=Text)
    text: str = Field(default="", sa_type=Text)
    created_at: datetime = _created()
    updated_at: datetime = _created()
