"""Tenants, their users, mail accounts, per-account access and signatures."""

from datetime import datetime
from typing import Any

from sqlalchemy import Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from core.types import (
    AccountKind,
    AccountStatus,
    Security,
    SharingLevel,
    StrEnumType,
)
from crm.models._columns import created, json_column, timestamp


class Tenant(SQLModel, table=True):
    __tablename__ = "tenant"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    account_quota: int = Field(default=5)
    # The company's own mail domains: never linked as a customer company, never made a lead.
    own_domains: list[str] = json_column(list)
    auto_create_leads: bool = Field(default=False)
    bcc_account_id: int | None = Field(default=None)
    created_at: datetime = created()


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
    created_at: datetime = created()
    # A deactivated user keeps their history but can no longer sign in; their sessions and API
    # tokens stop working at once (0007).
    active: bool = Field(default=True)
    deactivated_at: datetime | None = timestamp()


class MailAccount(SQLModel, table=True):
    __tablename__ = "mail_account"
    __table_args__ = (UniqueConstraint("tenant_id", "email"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id", index=True)
    email: str = Field(max_length=320)
    display_name: str = Field(default="", max_length=200)
    # IMAP (synced) or a hosted forwarding address (0020; crm/forwarding): the latter has no
    # server to sync, its IMAP fields are placeholders the sync never reads.
    kind: AccountKind = Field(
        default=AccountKind.IMAP,
        sa_type=StrEnumType(AccountKind),
        nullable=False,
        sa_column_kwargs={"server_default": "imap"},
    )
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
    # What record timelines show of this account's mail to users without access (0012); None:
    # full for a shared mailbox (several users), metadata for a personal one.
    sharing: SharingLevel | None = Field(default=None, sa_type=StrEnumType(SharingLevel))
    sync_interval_seconds: int = Field(default=300)
    # History window: the first sync only takes mail since this date (None: all mail).
    sync_since: datetime | None = timestamp()
    status: AccountStatus = Field(
        default=AccountStatus.NEW, sa_type=StrEnumType(AccountStatus), nullable=False
    )
    # The last error as a code and its parameters (0005), rendered when shown (core.problems):
    # a stored sentence could not be reworded, translated or mapped to a status by a face.
    last_error_code: str | None = Field(default=None, max_length=64)
    last_error_params: dict[str, Any] = json_column(dict)
    last_error_at: datetime | None = timestamp()
    last_success_at: datetime | None = timestamp()
    consecutive_failures: int = Field(default=0)
    auth_failures: int = Field(default=0)
    next_attempt_at: datetime | None = timestamp()
    # Worker lease: a worker claims the account with a compare-and-set on these two columns,
    # so several workers sharing one PostgreSQL never sync the same account at once.
    lease_owner: str | None = Field(default=None, max_length=200)
    lease_expires_at: datetime | None = timestamp()
    created_at: datetime = created()
    deactivated_at: datetime | None = timestamp()


class AccountAccess(SQLModel, table=True):
    __tablename__ = "account_access"
    __table_args__ = (UniqueConstraint("user_id", "account_id"),)

    id: int | None = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="app_user.id", index=True)
    account_id: int = Field(foreign_key="mail_account.id", index=True)
    # The user's default signature when composing from this account (0003).
    default_signature_id: int | None = Field(default=None, foreign_key="signature.id")
    created_at: datetime = created()


class Signature(SQLModel, table=True):
    """Up to three per account; `html` is the sanitized mail-merge template."""

    __tablename__ = "signature"

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: int = Field(foreign_key="tenant.id")
    account_id: int = Field(foreign_key="mail_account.id", index=True)
    name: str = Field(max_length=100)
    html: str = Field(sa_type=Text)
    text: str = Field(default="", sa_type=Text)
    created_at: datetime = created()
    updated_at: datetime = created()
