"""Mailboxes (mail accounts): connect, edit, read settings for a test, lifecycle, list.

Admins connect, edit, deactivate and delete accounts; a member sees only the accounts granted
to them (`crm.access.account_visible`), and anything about another account is `account_not_found`.

No network and no long lock on a request path. Adding or editing an account is three steps:
1. validate: pure (`validate_new_account`), or a short read (`_plan_edit`);
2. verify the connection with NO database session open: `crm` does not import `sync`, so the
   check is injected (`verify`: `ConnectionSettings` -> anything with `ok` and `message`,
   `sync.check.make_verifier` in practice); `verify=None` means "do not check";
3. save in a short transaction that takes the tenant lock and checks the rules (quota,
   duplicates) again, so two admins adding accounts at once cannot both squeeze past the quota.
`connect_account` and `edit_account` run the steps with a session factory (`sessions`): each
step's transaction is committed and closed before the next, none is open during the check. A
failing check raises `ConnectionCheckFailed` and nothing is written, unless `force=True`: then
the settings are saved and the failure is kept as the account's last error.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from pydantic import SecretStr
from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from core import problems
from core.caller import Caller
from core.connection import CheckOutcome, ConnectionSettings
from core.errors import Conflict, InvalidInput, not_found
from core.secrets import SecretBox
from core.types import AccountStatus, FolderRole, Security, utcnow
from crm import access, tenants
from crm.models import (
    AccountAccess,
    FetchFailure,
    FolderState,
    ImapUid,
    MailAccount,
    Signature,
    SkippedMessage,
    SyncRun,
    Tenant,
    User,
)

DEFAULT_SMTP_PORTS = {Security.TLS: 465, Security.STARTTLS: 587, Security.PLAIN: 25}
MIN_SYNC_INTERVAL_SECONDS = 10

SessionFactory = Callable[[], AbstractContextManager[Session]]
Verifier = Callable[[ConnectionSettings], CheckOutcome]


# ---------------------------------------------------------------------------------------------
# Inputs


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
class SmtpInput:
    """Outgoing-mail settings given when an account is connected (all optional)."""

    host: str | None = None
    port: int | None = None
    security: Security | None = None
    username: str | None = None  # None: the IMAP username
    password: SecretStr | None = None  # None: the IMAP password


@dataclass(frozen=True, slots=True)
class AccountChanges:
    """An edit: None leaves a field as it is. An empty string clears `ca_file`, `smtp_host`
    (removes SMTP altogether) and `smtp_username` (back to the IMAP username);
    `clear_smtp_password` goes back to the IMAP password."""

    display_name: str | None = None
    imap_host: str | None = None
    imap_port: int | None = None
    imap_security: Security | None = None
    username: str | None = None
    password: SecretStr | None = None
    ca_file: str | None = None
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_security: Security | None = None
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    clear_smtp_password: bool = False
    sync_interval_seconds: int | None = None


# ---------------------------------------------------------------------------------------------
# Views


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
class AccountView:
    """An account as shown to people and scripts: never a secret, never the worker lease."""

    id: int
    email: str
    display_name: str
    active: bool
    status: AccountStatus
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


class ConnectionCheckFailed(Conflict):
    """The login check failed, so the settings were not saved; `check` is its result."""

    def __init__(self, check: CheckView) -> None:
        self.check = check
        super().__init__(
            "connection_check_failed",
            f"{check.message.rstrip('.')}. Nothing was saved.",
            problem=check.problem,
            service=check.service,
            detail=check.message,
        )


def _folder_view(folder: FolderState) -> FolderView:
    return FolderView(
        role=folder.role,
        name=folder.name,
        status=folder.status.value,
        last_success_at=folder.last_success_at,
        last_error=problems.render(folder.last_error_code, folder.last_error_params),
        last_error_code=folder.last_error_code,
    )


def _view(account: MailAccount, folders: list[FolderState]) -> AccountView:
    smtp = None
    if account.smtp_host and account.smtp_security:
        smtp = f"{account.smtp_host}:{account.smtp_port} ({account.smtp_security.value})"
    return AccountView(
        id=account.id or 0,
        email=account.email,
        display_name=account.display_name,
        active=account.active,
        status=account.status,
        imap=f"{account.imap_host}:{account.imap_port} ({account.imap_security.value})",
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
    )


def _views(session: Session, accounts: list[MailAccount]) -> list[AccountView]:
    folders = session.exec(
        select(FolderState).where(col(FolderState.account_id).in_([a.id for a in accounts]))
    ).all()
    by_account: dict[int, list[FolderState]] = {}
    for folder in folders:
        by_account.setdefault(folder.account_id, []).append(folder)
    return [_view(a, by_account.get(a.id or 0, [])) for a in accounts]


def account_view(session: Session, account: MailAccount) -> AccountView:
    """The view of one row (for `crm` modules that already hold it)."""
    return _views(session, [account])[0]


# ---------------------------------------------------------------------------------------------
# Validation (pure)


def _check_port(port: int | None, what: str) -> None:
    if port is not None and not 0 < port < 65536:
        raise InvalidInput(
            "invalid_port",
            f"{what} port {port} is not a valid port number (1-65535).",
            field=f"{what.lower()}_port",
            port=port,
        )


def _smtp_defaults(
    host: str | None, port: int | None, security: Security | None
) -> tuple[str | None, int | None, Security | None]:
    """No SMTP host: no SMTP at all. Otherwise STARTTLS by default (never plaintext unless asked),
    and the usual port of the chosen security."""
    host = (host or "").strip() or None
    if host is None:
        return None, None, None
    security = security or Security.STARTTLS
    port = port or DEFAULT_SMTP_PORTS[security]
    _check_port(port, "SMTP")
    return host, port, security


@dataclass(frozen=True, slots=True)
class NewAccount:
    """An account to add, validated and normalized; nothing was read from the database."""

    data: AccountInput
    password: SecretStr
    smtp_username: str | None
    smtp_password: SecretStr | None

    @property
    def settings(self) -> ConnectionSettings:
        d = self.data
        return ConnectionSettings(
            imap_host=d.imap_host,
            imap_port=d.imap_port,
            imap_security=d.imap_security,
            username=d.username,
            password=self.password,
            ca_file=d.ca_file,
            smtp_host=d.smtp_host,
            smtp_port=d.smtp_port,
            smtp_security=d.smtp_security,
            smtp_username=self.smtp_username,
            smtp_password=self.smtp_password,
        )


def validate_new_account(
    data: AccountInput, password: SecretStr, smtp: SmtpInput | None = None
) -> NewAccount:
    """Step 1 of an add: the rules that need no database (address, ports, SMTP defaults)."""
    email = tenants.normalize_email(data.email)
    imap_host = data.imap_host.strip()
    if not imap_host:
        raise InvalidInput("imap_host_required", "The IMAP host cannot be empty.", field="imap_host")
    _check_port(data.imap_port, "IMAP")
    smtp = smtp or SmtpInput(data.smtp_host, data.smtp_port, data.smtp_security)
    smtp_host, smtp_port, smtp_security = _smtp_defaults(smtp.host, smtp.port, smtp.security)
    return NewAccount(
        data=replace(
            data,
            email=email,
            imap_host=imap_host,
            smtp_host=smtp_host,
            smtp_port=smtp_port,
            smtp_security=smtp_security,
        ),
        password=password,
        smtp_username=(smtp.username or None) if smtp_host else None,
        smtp_password=smtp.password if smtp_host else None,
    )


# ---------------------------------------------------------------------------------------------
# Add


def _refuse_duplicate(session: Session, tenant_id: int, email: str) -> None:
    existing = session.exec(
        select(MailAccount).where(MailAccount.tenant_id == tenant_id, MailAccount.email == email)
    ).first()
    if existing is not None:
        raise Conflict(
            "account_exists",
            f"{email} is already connected (account {existing.id}).",
            email=email,
            account_id=existing.id,
        )


def check_new_account(*, session: Session, caller: Caller, new: NewAccount) -> None:
    """Step 1, with a short read: a duplicate or a full quota is refused before any network
    round trip (both are checked again when saving)."""
    access.require_admin(caller, "connect mail accounts")
    tenant = session.get(Tenant, caller.tenant_id)
    if tenant is None:
        raise not_found("tenant", caller.tenant_id)
    _refuse_duplicate(session, caller.tenant_id, new.data.email)
    tenants.ensure_quota(session=session, tenant=tenant)


def _record_check_failure(account: MailAccount, check: CheckView | None) -> None:
    """A forced save keeps the failed check visible in the account list until a sync succeeds."""
    if check is not None and not check.ok:
        account.last_error_code = "connection_check_failed"
        account.last_error_params = {
            "detail": check.message,
            "problem": check.problem,
            "service": check.service,
        }
        account.last_error_at = utcnow()


def save_new_account(
    *, session: Session, caller: Caller, new: NewAccount, box: SecretBox, check: CheckView | None = None
) -> SaveResult:
    """Step 3 of an add: under the tenant lock, the rules again, then the insert. `check` is the
    result of step 2 (a failed one only reaches here when the save was forced)."""
    access.require_admin(caller, "connect mail accounts")
    tenant = tenants.lock_tenant_row(session, caller.tenant_id)
    _refuse_duplicate(session, caller.tenant_id, new.data.email)
    tenants.ensure_quota(session=session, tenant=tenant)
    d = new.data
    account = MailAccount(
        tenant_id=caller.tenant_id,
        email=d.email,
        display_name=d.display_name,
        imap_host=d.imap_host,
        imap_port=d.imap_port,
        imap_security=d.imap_security,
        smtp_host=d.smtp_host,
        smtp_port=d.smtp_port,
        smtp_security=d.smtp_security,
        username=d.username,
        secret_encrypted=box.encrypt(new.password),
        smtp_username=new.smtp_username,
        smtp_secret_encrypted=box.encrypt(new.smtp_password) if new.smtp_password else None,
        ca_file=d.ca_file,
        sync_interval_seconds=d.sync_interval_seconds,
        sync_since=d.sync_since,
    )
    _record_check_failure(account, check)
    session.add(account)
    session.flush()
    return SaveResult(account=account_view(session, account), check=check, checked=check is not None)


def _verify(verify: Verifier, settings: ConnectionSettings, force: bool) -> CheckView:
    """Step 2: the connection check (the caller holds no database session now)."""
    check = check_view(verify(settings))
    if not check.ok and not force:
        raise ConnectionCheckFailed(check)
    return check


def connect_account(
    *,
    sessions: SessionFactory,
    caller: Caller,
    data: AccountInput,
    password: SecretStr,
    box: SecretBox,
    smtp: SmtpInput | None = None,
    verify: Verifier | None = None,
    force: bool = False,
) -> SaveResult:
    """Add a mailbox after checking that it can log in (IMAP, and SMTP when given): validate,
    then check with no session open, then save in a short transaction of its own."""
    new = validate_new_account(data, password, smtp)
    with sessions() as session:
        check_new_account(session=session, caller=caller, new=new)
    check = _verify(verify, new.settings, force) if verify is not None else None
    with sessions() as session:
        return save_new_account(session=session, caller=caller, new=new, box=box, check=check)


def add_account(
    *,
    session: Session,
    caller: Caller,
    data: AccountInput,
    password: SecretStr,
    box: SecretBox,
    smtp: SmtpInput | None = None,
) -> AccountView:
    """Add a mailbox without a connection check (no network, so one transaction is enough)."""
    new = validate_new_account(data, password, smtp)
    return save_new_account(session=session, caller=caller, new=new, box=box).account


# ---------------------------------------------------------------------------------------------
# Edit


@dataclass(frozen=True, slots=True)
class _EditPlan:
    values: dict[str, Any]  # column -> new value (secrets already encrypted)
    connection_changed: bool
    settings: ConnectionSettings  # what to check: the settings after the edit


def _plan_edit(account: MailAccount, c: AccountChanges, box: SecretBox) -> _EditPlan:
    """Step 1 of an edit: the new values and whether they change how we connect."""
    imap_host = c.imap_host.strip() if c.imap_host is not None else account.imap_host
    if not imap_host:
        raise InvalidInput("imap_host_required", "The IMAP host cannot be empty.", field="imap_host")
    imap_port = c.imap_port if c.imap_port is not None else account.imap_port
    _check_port(imap_port, "IMAP")
    imap_security = c.imap_security or account.imap_security
    username = c.username if c.username is not None else account.username
    if not username.strip():
        raise InvalidInput("username_required", "The username cannot be empty.", field="username")
    ca_file = account.ca_file if c.ca_file is None else (c.ca_file or None)
    if c.smtp_host is not None:
        smtp_host, smtp_port, smtp_security = _smtp_defaults(c.smtp_host, c.smtp_port, c.smtp_security)
    else:
        smtp_host, smtp_port, smtp_security = _smtp_defaults(
            account.smtp_host, c.smtp_port or account.smtp_port, c.smtp_security or account.smtp_security
        )
        if c.smtp_security and not c.smtp_port and account.smtp_host:
            # A new security with the old port would rarely work: take the new default port.
            smtp_port = DEFAULT_SMTP_PORTS[c.smtp_security]
    if (c.smtp_port or c.smtp_security) and smtp_host is None:
        raise InvalidInput(
            "smtp_host_required",
            "An SMTP port or security needs an SMTP host: give the host first.",
            field="smtp_host",
        )
    smtp_username = account.smtp_username if c.smtp_username is None else (c.smtp_username or None)
    if c.sync_interval_seconds is not None and c.sync_interval_seconds < MIN_SYNC_INTERVAL_SECONDS:
        raise InvalidInput(
            "invalid_sync_interval",
            f"The sync interval must be at least {MIN_SYNC_INTERVAL_SECONDS} seconds.",
            field="sync_interval_seconds",
            minimum=MIN_SYNC_INTERVAL_SECONDS,
        )
    connection_changed = (
        (imap_host, imap_port, imap_security, username, ca_file)
        != (account.imap_host, account.imap_port, account.imap_security, account.username, account.ca_file)
        or (smtp_host, smtp_port, smtp_security, smtp_username)
        != (account.smtp_host, account.smtp_port, account.smtp_security, account.smtp_username)
        or c.password is not None
        or c.smtp_password is not None
        or c.clear_smtp_password
    )
    if c.smtp_password is not None:
        smtp_secret: str | None = box.encrypt(c.smtp_password)
    elif c.clear_smtp_password or smtp_host is None:
        smtp_secret = None
    else:
        smtp_secret = account.smtp_secret_encrypted
    if smtp_host is None:
        smtp_secret = None
    values: dict[str, Any] = {
        "imap_host": imap_host,
        "imap_port": imap_port,
        "imap_security": imap_security,
        "username": username,
        "ca_file": ca_file,
        "smtp_host": smtp_host,
        "smtp_port": smtp_port,
        "smtp_security": smtp_security,
        "smtp_username": smtp_username if smtp_host else None,
        "smtp_secret_encrypted": smtp_secret,
    }
    if c.display_name is not None:
        values["display_name"] = c.display_name
    if c.sync_interval_seconds is not None:
        values["sync_interval_seconds"] = c.sync_interval_seconds
    if c.password is not None:
        values["secret_encrypted"] = box.encrypt(c.password)
    settings = ConnectionSettings(
        imap_host=imap_host,
        imap_port=imap_port,
        imap_security=imap_security,
        username=username,
        password=c.password or box.decrypt(account.secret_encrypted),
        ca_file=ca_file,
        smtp_host=smtp_host,
        smtp_port=smtp_port,
        smtp_security=smtp_security,
        smtp_username=smtp_username if smtp_host else None,
        smtp_password=box.decrypt(smtp_secret) if smtp_secret else None,
    )
    return _EditPlan(values=values, connection_changed=connection_changed, settings=settings)


def edit_account(
    *,
    sessions: SessionFactory,
    caller: Caller,
    account_id: int,
    changes: AccountChanges,
    box: SecretBox,
    verify: Verifier | None = None,
    force: bool = False,
) -> SaveResult:
    """Change an account's settings; when a connection setting changes, log in with the new
    settings first (with no session open). Folder cursors are left alone: a server that really
    changed reports another UIDVALIDITY and the engine resyncs that folder on its own."""
    access.require_admin(caller, "edit mail accounts")
    with sessions() as session:
        plan = _plan_edit(access.get_account(session, caller, account_id), changes, box)
    check = None
    if verify is not None and plan.connection_changed:
        check = _verify(verify, plan.settings, force)
    with sessions() as session:
        account = access.get_account(session, caller, account_id)
        for name, value in plan.values.items():
            setattr(account, name, value)
        if plan.connection_changed:
            # New settings deserve a fresh try: end any backoff or 'needs new credentials' pause.
            account.auth_failures = 0
            account.consecutive_failures = 0
            account.next_attempt_at = None
            if account.status in (AccountStatus.NEEDS_CREDENTIALS, AccountStatus.AUTH_FAILED):
                account.status = AccountStatus.NEW
        _record_check_failure(account, check)
        session.add(account)
        session.flush()
        return SaveResult(account=account_view(session, account), check=check, checked=check is not None)


def set_password(
    *, session: Session, caller: Caller, account_id: int, password: SecretStr, box: SecretBox
) -> AccountView:
    """New credentials end the 'needs new credentials' wait: the next sync tries again."""
    access.require_admin(caller, "change an account's password")
    account = access.get_account(session, caller, account_id)
    account.secret_encrypted = box.encrypt(password)
    account.auth_failures = 0
    account.consecutive_failures = 0
    account.next_attempt_at = None
    if account.status in (AccountStatus.NEEDS_CREDENTIALS, AccountStatus.AUTH_FAILED):
        account.status = AccountStatus.NEW
    session.add(account)
    session.flush()
    return account_view(session, account)


def connection_settings_of(
    *, session: Session, caller: Caller, account_id: int, box: SecretBox
) -> ConnectionSettings:
    """The stored settings of an account, passwords decrypted, to test them: read in a short
    session, checked after it closed."""
    access.require_admin(caller, "test an account's connection")
    account = access.get_account(session, caller, account_id)
    return ConnectionSettings(
        imap_host=account.imap_host,
        imap_port=account.imap_port,
        imap_security=account.imap_security,
        username=account.username,
        password=box.decrypt(account.secret_encrypted),
        ca_file=account.ca_file,
        smtp_host=account.smtp_host,
        smtp_port=account.smtp_port,
        smtp_security=account.smtp_security,
        smtp_username=account.smtp_username,
        smtp_password=box.decrypt(account.smtp_secret_encrypted) if account.smtp_secret_encrypted else None,
    )


# ---------------------------------------------------------------------------------------------
# Lifecycle


def deactivate_account(*, session: Session, caller: Caller, account_id: int) -> AccountView:
    """Stop syncing and hide the account from inboxes; its mail, folder cursors, access grants and
    users' defaults stay, so reactivating brings everything back where it stopped."""
    access.require_admin(caller, "deactivate mail accounts")
    account = access.get_account(session, caller, account_id)
    if account.active:
        account.active = False
        account.deactivated_at = utcnow()
        session.add(account)
        session.flush()
    return account_view(session, account)


def reactivate_account(*, session: Session, caller: Caller, account_id: int) -> AccountView:
    """Sync again from the saved cursors; counts towards the quota again, so it is checked."""
    access.require_admin(caller, "reactivate mail accounts")
    account = access.get_account(session, caller, account_id)
    if not account.active:
        tenant = tenants.lock_tenant_row(session, account.tenant_id)
        tenants.ensure_quota(session=session, tenant=tenant)
        account.active = True
        account.deactivated_at = None
        account.next_attempt_at = None
        session.add(account)
        session.flush()
    return account_view(session, account)


def delete_account(*, session: Session, caller: Caller, account_id: int) -> None:
    """Delete an account that never mattered: nobody has access and no mail of it was ever
    processed. Anything else must be deactivated instead, so no stored mail loses its source."""
    access.require_admin(caller, "delete mail accounts")
    account = access.get_account(session, caller, account_id)
    holders = list(
        session.exec(
            select(User.email)
            .join(AccountAccess, col(AccountAccess.user_id) == col(User.id))
            .where(AccountAccess.account_id == account_id)
            .order_by(col(User.email))
        ).all()
    )
    reasons = []
    if holders:
        reasons.append(f"{len(holders)} user(s) have access to it ({', '.join(holders)})")
    if account.processed_any:
        reasons.append("mail of this account has already been processed into the CRM")
    if reasons:
        raise Conflict(
            "account_in_use",
            f"Account {account_id} ({account.email}) cannot be deleted: {'; and '.join(reasons)}. "
            "Deactivate it instead: it stops syncing and leaves the inboxes, and its mail is kept.",
            account_id=account_id,
            users=holders,
            processed=account.processed_any,
        )
    # Children first (foreign keys): locations and failures point at folder states.
    for table in (ImapUid, FetchFailure, SkippedMessage, FolderState, SyncRun, Signature):
        session.execute(delete(table).where(col(table.account_id) == account_id))
    session.execute(
        update(User).where(col(User.default_account_id) == account_id).values(default_account_id=None)
    )
    session.execute(
        update(Tenant).where(col(Tenant.bcc_account_id) == account_id).values(bcc_account_id=None)
    )
    session.delete(account)
    session.flush()


# ---------------------------------------------------------------------------------------------
# Reading


def list_accounts(*, session: Session, caller: Caller) -> list[AccountView]:
    """The accounts the caller sees (admins: all of the tenant's; members: granted and active)."""
    rows = session.exec(
        select(MailAccount).where(access.account_visible(caller)).order_by(col(MailAccount.id))
    ).all()
    return _views(session, list(rows))


def get_account(*, session: Session, caller: Caller, account_id: int) -> AccountView:
    return account_view(session, access.get_account(session, caller, account_id))


def list_skipped(
    *, session: Session, caller: Caller, account_id: int | None = None, limit: int = 200
) -> list[SkippedView]:
    """Mail not synced as conversation mail (e.g. over the recipient limit), newest first, of the
    accounts the caller sees: what is checked when someone asks why a message is missing."""
    query = (
        select(SkippedMessage)
        .join(MailAccount, col(MailAccount.id) == col(SkippedMessage.account_id))
        .where(SkippedMessage.tenant_id == caller.tenant_id, access.account_visible(caller))
        .order_by(col(SkippedMessage.created_at).desc())
        .limit(limit)
    )
    if account_id is not None:
        access.get_account(session, caller, account_id)
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
