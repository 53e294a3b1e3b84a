"""Tenants, users and mail accounts: the services the CLI and the HTTP API both call.

Keyword-only functions taking a session; the caller owns the transaction. Passwords arrive as
`SecretStr` and leave only encrypted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from pydantic import SecretStr
from sqlalchemy import func
from sqlmodel import Session, col, select

from core import problems
from core.secrets import SecretBox
from core.types import AccountStatus, FolderRole, Security, utcnow
from crm.errors import InvalidInput, NotFound, QuotaExceeded
from crm.models import FolderState, MailAccount, SkippedMessage, Tenant, User


@dataclass(frozen=True, slots=True)
class AccountInput:
    email: str
    imap_host: str
    imap_port: int
    imap_security: Security
    username: str
    display_name: str = ""
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_security: Security | None = None
    ca_file: str | None = None
    sync_interval_seconds: int = 300
    sync_since: datetime | None = None


@dataclass(frozen=True, slots=True)
class FolderView:
    role: FolderRole
    name: str
    last_success_at: datetime | None
    last_error: str | None
    status: str


@dataclass(frozen=True, slots=True)
class AccountView:
    """What `account list` shows; never the secret."""

    id: int
    email: str
    display_name: str
    active: bool
    status: AccountStatus
    last_error: str | None
    last_success_at: datetime | None
    next_attempt_at: datetime | None
    imap: str
    folders: tuple[FolderView, ...]


def create_tenant(
    *, session: Session, name: str, account_quota: int = 5, own_domains: list[str] | None = None
) -> Tenant:
    tenant = Tenant(
        name=name, account_quota=account_quota, own_domains=[d.lower() for d in own_domains or []]
    )
    session.add(tenant)
    session.flush()
    return tenant


def first_tenant(*, session: Session) -> Tenant | None:
    return session.exec(select(Tenant).order_by(col(Tenant.id)).limit(1)).first()


def get_tenant(*, session: Session, tenant_id: int | None) -> Tenant:
    tenant = session.get(Tenant, tenant_id) if tenant_id is not None else first_tenant(session=session)
    if tenant is None:
        raise NotFound("No tenant exists yet: run `crm-inbox init` first.")
    return tenant


def create_user(
    *,
    session: Session,
    tenant_id: int,
    email: str,
    first_name: str = "",
    last_name: str = "",
    is_admin: bool = False,
) -> User:
    user = User(
        tenant_id=tenant_id,
        email=email.lower(),
        first_name=first_name,
        last_name=last_name,
        is_admin=is_admin,
    )
    session.add(user)
    session.flush()
    return user


def count_active_accounts(*, session: Session, tenant_id: int) -> int:
    return session.exec(
        select(func.count(col(MailAccount.id))).where(MailAccount.tenant_id == tenant_id, MailAccount.active)
    ).one()


def ensure_quota(*, session: Session, tenant: Tenant, adding: int = 1) -> None:
    used = count_active_accounts(session=session, tenant_id=tenant.id or 0)
    if used + adding > tenant.account_quota:
        raise QuotaExceeded(
            f"The plan of {tenant.name} allows {tenant.account_quota} active mail account(s) and "
            f"{used} are in use. Deactivate an account or raise the quota (crm-inbox tenant quota)."
        )


def add_account(
    *, session: Session, tenant_id: int, data: AccountInput, password: SecretStr, box: SecretBox
) -> MailAccount:
    tenant = get_tenant(session=session, tenant_id=tenant_id)
    email = data.email.strip().lower()
    if "@" not in email:
        raise InvalidInput(f"{data.email!r} is not an e-mail address.")
    exists = session.exec(
        select(MailAccount).where(MailAccount.tenant_id == tenant.id, MailAccount.email == email)
    ).first()
    if exists is not None:
        raise InvalidInput(f"{email} is already connected (account {exists.id}).")
    ensure_quota(session=session, tenant=tenant)
    if not 0 < data.imap_port < 65536:
        raise InvalidInput(f"IMAP port {data.imap_port} is not a valid port number.")
    account = MailAccount(
        tenant_id=tenant.id or 0,
        email=email,
        display_name=data.display_name,
        imap_host=data.imap_host.strip(),
        imap_port=data.imap_port,
        imap_security=data.imap_security,
        smtp_host=data.smtp_host,
        smtp_port=data.smtp_port,
        smtp_security=data.smtp_security,
        username=data.username,
        secret_encrypted=box.encrypt(password),
        ca_file=data.ca_file,
        sync_interval_seconds=data.sync_interval_seconds,
        sync_since=data.sync_since,
    )
    session.add(account)
    session.flush()
    return account


def get_account(*, session: Session, account_id: int, tenant_id: int | None = None) -> MailAccount:
    account = session.get(MailAccount, account_id)
    if account is None or (tenant_id is not None and account.tenant_id != tenant_id):
        raise NotFound(f"No mail account with id {account_id}.")
    return account


def set_password(*, session: Session, account_id: int, password: SecretStr, box: SecretBox) -> MailAccount:
    """New credentials end the 'needs new credentials' wait: the next sync tries again."""
    account = get_account(session=session, account_id=account_id)
    account.secret_encrypted = box.encrypt(password)
    account.auth_failures = 0
    account.consecutive_failures = 0
    account.next_attempt_at = None
    if account.status in (AccountStatus.NEEDS_CREDENTIALS, AccountStatus.AUTH_FAILED):
        account.status = AccountStatus.NEW
    session.add(account)
    return account


def list_accounts(*, session: Session, tenant_id: int | None = None) -> list[AccountView]:
    query = select(MailAccount).order_by(col(MailAccount.id))
    if tenant_id is not None:
        query = query.where(MailAccount.tenant_id == tenant_id)
    accounts = session.exec(query).all()
    folders = session.exec(
        select(FolderState).where(col(FolderState.account_id).in_([a.id for a in accounts]))
    ).all()
    by_account: dict[int, list[FolderView]] = {}
    for folder in sorted(folders, key=lambda f: f.role.value):
        by_account.setdefault(folder.account_id, []).append(
            FolderView(
                role=folder.role,
                name=folder.name,
                last_success_at=folder.last_success_at,
                last_error=problems.render(folder.last_error_code, folder.last_error_params),
                status=folder.status.value,
            )
        )
    return [
        AccountView(
            id=a.id or 0,
            email=a.email,
            display_name=a.display_name,
            active=a.active,
            status=a.status,
            last_error=problems.render(a.last_error_code, a.last_error_params),
            last_success_at=a.last_success_at,
            next_attempt_at=a.next_attempt_at,
            imap=f"{a.imap_host}:{a.imap_port} ({a.imap_security.value})",
            folders=tuple(by_account.get(a.id or 0, [])),
        )
        for a in accounts
    ]


@dataclass(frozen=True, slots=True)
class SkippedView:
    account_id: int
    message_id: str
    date: datetime | None
    from_email: str
    subject: str
    recipient_count: int
    reason: str
    detail: str


def list_skipped(
    *, session: Session, tenant_id: int, account_id: int | None = None, limit: int = 200
) -> list[SkippedView]:
    """Mail not synced as conversation mail (e.g. over the recipient limit), newest first: what
    an admin checks when someone asks why a message is missing."""
    query = (
        select(SkippedMessage)
        .where(SkippedMessage.tenant_id == tenant_id)
        .order_by(col(SkippedMessage.created_at).desc())
        .limit(limit)
    )
    if account_id is not None:
        query = query.where(SkippedMessage.account_id == account_id)
    return [
        SkippedView(
            account_id=row.account_id,
            message_id=row.message_id,
            date=row.date,
            from_email=row.from_email,
            subject=row.subject,
            recipient_count=row.recipient_count,
            reason=row.reason.value,
            detail=row.detail,
        )
        for row in session.exec(query).all()
    ]


def deactivate_account(*, session: Session, account_id: int) -> MailAccount:
    account = get_account(session=session, account_id=account_id)
    account.active = False
    account.deactivated_at = utcnow()
    session.add(account)
    return account
