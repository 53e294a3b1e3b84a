"""What the mailbox services return: views of accounts, folders, skipped mail and connection
checks. Plain frozen values (never a row: rows carry the encrypted secrets and the worker lease);
an account's last error is rendered from its stored code and parameters, and the code is kept."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session, col, select

from core import problems
from core.connection import CheckOutcome
from core.types import AccountKind, AccountStatus, FolderRole
from crm.models import FolderState, MailAccount, OAuthGrant


@dataclass(frozen=True, slots=True)
class CheckView:
    """A connection check's result in plain values (`problem`: e.g. "authentication")."""

    ok: bool
    message: str
    problem: str | None = None
    service: str | None = None  # "imap" or "smtp": where the problem is


def check_view(check: CheckOutcome) -> CheckView:
    problem = getattr(check, "problem", None)
    service = getattr(check, "service", None)
    return CheckView(
        ok=check.ok,
        message=check.message,
        problem=None if problem is None else str(getattr(problem, "value", problem)),
        service=None if service is None else str(service),
    )


@dataclass(frozen=True, slots=True)
class FolderView:
    role: FolderRole
    name: str
    status: str
    last_success_at: datetime | None
    last_error: str | None
    last_error_code: str | None


@dataclass(frozen=True, slots=True)
class OAuthView:
    """How an OAuth account logs in: never a token, only what an admin needs to judge it."""

    provider: str
    scopes: tuple[str, ...]
    state: str  # "connected", or "needs_reconnect" once the provider refused the refresh token
    connected_at: datetime
    refreshed_at: datetime | None
    access_expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class AccountView:
    """An account as shown to people and scripts: never a secret, never the worker lease."""

    id: int
    email: str
    display_name: str
    active: bool
    status: AccountStatus
    kind: AccountKind  # "forwarding": a hosted address (crm.forwarding), not synced over IMAP
    imap: str
    smtp: str | None
    username: str
    sync_interval_seconds: int
    last_error: str | None  # rendered from the stored code + parameters
    last_error_code: str | None
    last_error_at: datetime | None
    last_success_at: datetime | None
    next_attempt_at: datetime | None
    deactivated_at: datetime | None
    folders: tuple[FolderView, ...]
    # Set for a mailbox connected by OAuth2 consent (Google, Microsoft 365...); None: password.
    oauth: OAuthView | None = None


@dataclass(frozen=True, slots=True)
class SaveResult:
    """A saved account and the check that ran before (None when no check was asked or needed)."""

    account: AccountView
    check: CheckView | None
    checked: bool


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


def _folder_view(folder: FolderState) -> FolderView:
    return FolderView(
        role=folder.role,
        name=folder.name,
        status=folder.status.value,
        last_success_at=folder.last_success_at,
        last_error=problems.render(folder.last_error_code, folder.last_error_params),
        last_error_code=folder.last_error_code,
    )


def _oauth_view(grant: OAuthGrant | None) -> OAuthView | None:
    if grant is None:
        return None
    return OAuthView(
        provider=grant.provider,
        scopes=tuple(grant.scopes),
        state="connected" if grant.usable else "needs_reconnect",
        connected_at=grant.connected_at,
        refreshed_at=grant.refreshed_at,
        access_expires_at=grant.access_expires_at,
    )


def _view(account: MailAccount, folders: list[FolderState], grant: OAuthGrant | None = None) -> AccountView:
    smtp = None
    if account.smtp_host and account.smtp_security:
        smtp = f"{account.smtp_host}:{account.smtp_port} ({account.smtp_security.value})"
    return AccountView(
        id=account.id or 0,
        email=account.email,
        display_name=account.display_name,
        active=account.active,
        status=account.status,
        kind=account.kind,
        imap=(
            f"{account.imap_host}:{account.imap_port} ({account.imap_security.value})"
            if account.kind is AccountKind.IMAP
            else "none: a hosted forwarding address"
        ),
        smtp=smtp,
        username=account.username,
        sync_interval_seconds=account.sync_interval_seconds,
        last_error=problems.render(account.last_error_code, account.last_error_params),
        last_error_code=account.last_error_code,
        last_error_at=account.last_error_at,
        last_success_at=account.last_success_at,
        next_attempt_at=account.next_attempt_at,
        deactivated_at=account.deactivated_at,
        folders=tuple(_folder_view(f) for f in sorted(folders, key=lambda f: f.role.value)),
        oauth=_oauth_view(grant),
    )


def views_of(session: Session, accounts: list[MailAccount]) -> list[AccountView]:
    folders = session.exec(
        select(FolderState).where(col(FolderState.account_id).in_([a.id for a in accounts]))
    ).all()
    by_account: dict[int, list[FolderState]] = {}
    for folder in folders:
        by_account.setdefault(folder.account_id, []).append(folder)
    ids = [a.id for a in accounts]
    grants = {
        g.account_id: g
        for g in session.exec(select(OAuthGrant).where(col(OAuthGrant.account_id).in_(ids))).all()
    }
    return [_view(a, by_account.get(a.id or 0, []), grants.get(a.id or 0)) for a in accounts]


def account_view(session: Session, account: MailAccount) -> AccountView:
    """The view of one row (for `crm` modules that already hold it)."""
    return views_of(session, [account])[0]
