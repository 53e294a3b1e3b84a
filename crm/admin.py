"""Mailbox administration: quota, lifecycle, connection-checked add/edit, access, signatures.

The one place that writes these rows. Keyword-only functions taking a session; the caller owns
the transaction (commit or roll back), exactly like `crm.accounts`, which these build on.

Connection checks and layering. `crm` must not import `sync`, yet an account must not be saved
with settings that cannot log in. So `connect_account` and `edit_account` take an optional
`verify` callable (dependency injection): it receives a plain `ConnectionSettings` (decrypted
password included, as a `SecretStr`) and returns anything with `ok` and `message`
(`sync.check.CheckResult` in practice: `sync.check.verify_connection`). `verify=None` means "do
not check" (an explicit choice of the caller, like `--no-check`). A failing check raises
`ConnectionCheckFailed` and nothing is written, unless `force=True`: then the settings are saved
and the check's message is kept as the account's `last_error`.

The check talks to a server, so it runs *before* the first write of the call, after the
validation reads only: the caller's transaction holds no write lock (nor a row lock) while we wait
on the network (STYLE habit 7). Row locks (`SELECT ... FOR UPDATE`, PostgreSQL; SQLite serialises
writers anyway) are taken after the check, and the rules (quota, duplicates) are checked again
under them, so two admins adding accounts at once cannot both squeeze past the quota.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from pydantic import SecretStr
from sqlalchemy import delete, func, update
from sqlmodel import Session, col, select

import signatures
from core.connection import CheckOutcome, ConnectionSettings
from core.secrets import SecretBox
from core.types import AccountStatus, Security, utcnow
from crm import accounts
from crm.errors import InvalidInput, NotFound, Refused
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

MAX_SIGNATURES_PER_ACCOUNT = 3
DEFAULT_SMTP_PORTS = {Security.TLS: 465, Security.STARTTLS: 587, Security.PLAIN: 25}

# ---------------------------------------------------------------------------------------------
# Errors


class ConnectionCheckFailed(Refused):
    """The login check failed, so the settings were not saved. `check` is the verifier's result."""

    def __init__(self, check: CheckOutcome) -> None:
        self.check = check
        super().__init__(
            f"{check.message.rstrip('.')}. Nothing was saved: fix the settings, or force the save "
            "(--force) to store them anyway."
        )


class SignatureInvalid(InvalidInput):
    """A signature was refused by the signature service (unsafe, unknown merge tag, inline SVG...);
    the message is the service's, written for the person editing the signature."""


# ---------------------------------------------------------------------------------------------
# Connection checks (the verifier is injected; see the module docstring)


Verifier = Callable[[ConnectionSettings], CheckOutcome]


@dataclass(frozen=True, slots=True)
class SmtpInput:
    """Outgoing-mail settings given when an account is connected (all optional)."""

    host: str | None = None
    port: int | None = None
    security: Security | None = None
    username: str | None = None  # None: the IMAP username
    password: SecretStr | None = None  # None: the IMAP password


@dataclass(frozen=True, slots=True)
class SaveResult:
    """A saved account and the check that ran before (None when no check was asked or needed)."""

    account: MailAccount
    check: CheckOutcome | None
    checked: bool


def _check_port(port: int | None, what: str) -> None:
    if port is not None and not 0 < port < 65536:
        raise InvalidInput(f"{what} port {port} is not a valid port number (1-65535).")


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


def _release_read(session: Session) -> None:
    """End the read-only transaction before going to the network: no database session (and no
    SQLite snapshot or PostgreSQL connection) is held while a mail server is slow to answer.
    Only when nothing is pending, so a caller's unsaved changes are never dropped."""
    if session.in_transaction() and not (session.new or session.dirty or session.deleted):
        session.rollback()


def _run_check(session: Session, verify: Verifier, settings: ConnectionSettings, force: bool) -> CheckOutcome:
    _release_read(session)
    check = verify(settings)
    if not check.ok and not force:
        raise ConnectionCheckFailed(check)
    return check


def _record_forced_failure(account: MailAccount, check: CheckOutcome | None) -> None:
    """A forced save keeps the failed check visible in `account list` until a sync succeeds."""
    if check is not None and not check.ok:
        account.last_error_code, account.last_error_params = "stored_text", {"text": check.message}
        account.last_error_at = utcnow()


def _lock_tenant(session: Session, tenant_id: int) -> Tenant:
    tenant = session.exec(select(Tenant).where(Tenant.id == tenant_id).with_for_update()).first()
    if tenant is None:
        raise NotFound(f"No tenant with id {tenant_id}.")
    return tenant


def _find_duplicate(session: Session, tenant_id: int, email: str) -> MailAccount | None:
    return session.exec(
        select(MailAccount).where(MailAccount.tenant_id == tenant_id, MailAccount.email == email)
    ).first()


def connect_account(
    *,
    session: Session,
    tenant_id: int,
    data: accounts.AccountInput,
    password: SecretStr,
    box: SecretBox,
    smtp: SmtpInput | None = None,
    verify: Verifier | None = None,
    force: bool = False,
) -> SaveResult:
    """Add a mailbox after checking that it can log in (IMAP, and SMTP when given).

    The cheap rules (address, duplicate, quota, ports) are checked first so a refused add never
    costs a network round trip; they are checked again under the tenant lock before the insert.
    """
    tenant = accounts.get_tenant(session=session, tenant_id=tenant_id)
    email = data.email.strip().lower()
    if "@" not in email:
        raise InvalidInput(f"{data.email!r} is not an e-mail address.")
    existing = _find_duplicate(session, tenant.id or 0, email)
    if existing is not None:
        raise InvalidInput(f"{email} is already connected (account {existing.id}).")
    accounts.ensure_quota(session=session, tenant=tenant)
    _check_port(data.imap_port, "IMAP")
    smtp = smtp or SmtpInput(data.smtp_host, data.smtp_port, data.smtp_security)
    smtp_host, smtp_port, smtp_security = _smtp_defaults(smtp.host, smtp.port, smtp.security)
    data = replace(data, smtp_host=smtp_host, smtp_port=smtp_port, smtp_security=smtp_security)
    check = None
    if verify is not None:
        check = _run_check(
            session,
            verify,
            ConnectionSettings(
                imap_host=data.imap_host.strip(),
                imap_port=data.imap_port,
                imap_security=data.imap_security,
                username=data.username,
                password=password,
                ca_file=data.ca_file,
                smtp_host=smtp_host,
                smtp_port=smtp_port,
                smtp_security=smtp_security,
                smtp_username=smtp.username if smtp_host else None,
                smtp_password=smtp.password if smtp_host else None,
            ),
            force,
        )
    _lock_tenant(session, tenant.id or 0)
    account = accounts.add_account(
        session=session, tenant_id=tenant.id or 0, data=data, password=password, box=box
    )
    if smtp_host:
        account.smtp_username = smtp.username or None
        account.smtp_secret_encrypted = box.encrypt(smtp.password) if smtp.password else None
    _record_forced_failure(account, check)
    session.add(account)
    session.flush()
    return SaveResult(account=account, check=check, checked=check is not None)


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


def connection_settings_of(
    *, session: Session, tenant_id: int, account_id: int, box: SecretBox
) -> ConnectionSettings:
    """The stored settings of an account, password decrypted, for `account test`. Read in a short
    session, checked after it closed."""
    account = accounts.get_account(session=session, account_id=account_id, tenant_id=tenant_id)
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


def edit_account(
    *,
    session: Session,
    tenant_id: int,
    account_id: int,
    changes: AccountChanges,
    box: SecretBox,
    verify: Verifier | None = None,
    force: bool = False,
) -> SaveResult:
    """Change an account's settings; when a connection setting changes, log in with the new
    settings first. Folder cursors are left alone: a server that really changed reports another
    UIDVALIDITY and the engine resyncs that folder on its own."""
    account = accounts.get_account(session=session, account_id=account_id, tenant_id=tenant_id)
    c = changes
    imap_host = c.imap_host.strip() if c.imap_host is not None else account.imap_host
    if not imap_host:
        raise InvalidInput("The IMAP host cannot be empty.")
    imap_port = c.imap_port if c.imap_port is not None else account.imap_port
    _check_port(imap_port, "IMAP")
    imap_security = c.imap_security or account.imap_security
    username = c.username if c.username is not None else account.username
    if not username.strip():
        raise InvalidInput("The username cannot be empty.")
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
        raise InvalidInput("Give an SMTP host (--smtp-host) before its port or security.")
    smtp_username = account.smtp_username if c.smtp_username is None else (c.smtp_username or None)
    if c.sync_interval_seconds is not None and c.sync_interval_seconds < 10:
        raise InvalidInput("The sync interval must be at least 10 seconds.")

    connection_changed = (
        (imap_host, imap_port, imap_security, username, ca_file)
        != (account.imap_host, account.imap_port, account.imap_security, account.username, account.ca_file)
        or (smtp_host, smtp_port, smtp_security, smtp_username)
        != (account.smtp_host, account.smtp_port, account.smtp_security, account.smtp_username)
        or c.password is not None
        or c.smtp_password is not None
        or c.clear_smtp_password
    )
    check = None
    if verify is not None and connection_changed:
        password = c.password or box.decrypt(account.secret_encrypted)
        if c.smtp_password is not None:
            smtp_password: SecretStr | None = c.smtp_password
        elif c.clear_smtp_password or not account.smtp_secret_encrypted:
            smtp_password = None
        else:
            smtp_password = box.decrypt(account.smtp_secret_encrypted)
        check = _run_check(
            session,
            verify,
            ConnectionSettings(
                imap_host=imap_host,
                imap_port=imap_port,
                imap_security=imap_security,
                username=username,
                password=password,
                ca_file=ca_file,
                smtp_host=smtp_host,
                smtp_port=smtp_port,
                smtp_security=smtp_security,
                smtp_username=smtp_username if smtp_host else None,
                smtp_password=smtp_password if smtp_host else None,
            ),
            force,
        )

    if c.display_name is not None:
        account.display_name = c.display_name
    if c.sync_interval_seconds is not None:
        account.sync_interval_seconds = c.sync_interval_seconds
    account.imap_host, account.imap_port, account.imap_security = imap_host, imap_port, imap_security
    account.username, account.ca_file = username, ca_file
    account.smtp_host, account.smtp_port, account.smtp_security = smtp_host, smtp_port, smtp_security
    account.smtp_username = smtp_username if smtp_host else None
    if smtp_host is None or c.clear_smtp_password:
        account.smtp_secret_encrypted = None
    if c.smtp_password is not None and smtp_host:
        account.smtp_secret_encrypted = box.encrypt(c.smtp_password)
    if c.password is not None:
        account.secret_encrypted = box.encrypt(c.password)
    if connection_changed:
        # New settings deserve a fresh try: end any backoff or 'needs new credentials' pause.
        account.auth_failures = 0
        account.consecutive_failures = 0
        account.next_attempt_at = None
        if account.status in (AccountStatus.NEEDS_CREDENTIALS, AccountStatus.AUTH_FAILED):
            account.status = AccountStatus.NEW
    _record_forced_failure(account, check)
    session.add(account)
    session.flush()
    return SaveResult(account=account, check=check, checked=check is not None)


# ---------------------------------------------------------------------------------------------
# Lifecycle and quota


def deactivate_account(*, session: Session, tenant_id: int, account_id: int) -> MailAccount:
    """Stop syncing and hide the account from inboxes; its mail, folder cursors, access grants and
    users' defaults stay, so reactivating brings everything back where it stopped."""
    account = accounts.get_account(session=session, account_id=account_id, tenant_id=tenant_id)
    if account.active:
        accounts.deactivate_account(session=session, account_id=account_id)
        session.flush()
    return account


def reactivate_account(*, session: Session, tenant_id: int, account_id: int) -> MailAccount:
    """Sync again from the saved cursors; counts towards the quota again, so it is checked."""
    account = accounts.get_account(session=session, account_id=account_id, tenant_id=tenant_id)
    if account.active:
        return account
    tenant = _lock_tenant(session, account.tenant_id)
    accounts.ensure_quota(session=session, tenant=tenant)
    account.active = True
    account.deactivated_at = None
    account.next_attempt_at = None
    session.add(account)
    session.flush()
    return account


def delete_account(*, session: Session, tenant_id: int, account_id: int) -> None:
    """Delete an account that never mattered: nobody has access and no mail of it was ever
    processed. Anything else must be deactivated instead, so no stored mail loses its source."""
    account = accounts.get_account(session=session, account_id=account_id, tenant_id=tenant_id)
    holders = session.exec(
        select(User.email)
        .join(AccountAccess, col(AccountAccess.user_id) == col(User.id))
        .where(AccountAccess.account_id == account_id)
        .order_by(col(User.email))
    ).all()
    reasons = []
    if holders:
        reasons.append(f"{len(holders)} user(s) have access to it ({', '.join(holders)})")
    if account.processed_any:
        reasons.append("mail of this account has already been processed into the CRM")
    if reasons:
        raise Refused(
            f"Account {account_id} ({account.email}) cannot be deleted: {'; and '.join(reasons)}. "
            "Deactivate it instead (crm-inbox account deactivate): it stops syncing and leaves "
            "the inboxes, and its mail is kept."
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


@dataclass(frozen=True, slots=True)
class TenantView:
    id: int
    name: str
    account_quota: int
    active_accounts: int
    inactive_accounts: int
    users: int


def tenant_view(*, session: Session, tenant_id: int | None) -> TenantView:
    tenant = accounts.get_tenant(session=session, tenant_id=tenant_id)
    tid = tenant.id or 0
    total = session.exec(select(func.count(col(MailAccount.id))).where(MailAccount.tenant_id == tid)).one()
    active = accounts.count_active_accounts(session=session, tenant_id=tid)
    users = session.exec(select(func.count(col(User.id))).where(User.tenant_id == tid)).one()
    return TenantView(
        id=tid,
        name=tenant.name,
        account_quota=tenant.account_quota,
        active_accounts=active,
        inactive_accounts=total - active,
        users=users,
    )


def set_quota(*, session: Session, tenant_id: int, quota: int) -> TenantView:
    """Lowering the quota below the accounts in use is allowed (an operator's decision): those
    keep syncing, but none can be added or reactivated until the count is under it."""
    if quota < 0:
        raise InvalidInput(f"The quota must be 0 or more, not {quota}.")
    tenant = _lock_tenant(session, tenant_id)
    tenant.account_quota = quota
    session.add(tenant)
    session.flush()
    return tenant_view(session=session, tenant_id=tenant_id)


# ---------------------------------------------------------------------------------------------
# Access


def _user(session: Session, user_id: int, tenant_id: int) -> User:
    user = session.get(User, user_id)
    if user is None or user.tenant_id != tenant_id:
        raise NotFound(f"No user with id {user_id}.")
    return user


def find_user(*, session: Session, ref: str, tenant_id: int) -> User:
    """A user of the tenant by id or e-mail (the CLI accepts either)."""
    if ref.isdigit():
        return _user(session, int(ref), tenant_id)
    query = select(User).where(User.email == ref.strip().lower(), User.tenant_id == tenant_id)
    found = session.exec(query).first()
    if found is None:
        raise NotFound(f"No user with e-mail {ref}.")
    return found


def _access(session: Session, user_id: int, account_id: int, tenant_id: int) -> AccountAccess | None:
    """The grant of one user on one account, only when the account is in the tenant."""
    return session.exec(
        select(AccountAccess)
        .join(MailAccount, col(MailAccount.id) == col(AccountAccess.account_id))
        .where(
            AccountAccess.user_id == user_id,
            AccountAccess.account_id == account_id,
            MailAccount.tenant_id == tenant_id,
        )
    ).first()


def _same_tenant(user: User, account: MailAccount) -> None:
    if user.tenant_id != account.tenant_id:
        raise InvalidInput(f"User {user.email} and account {account.email} belong to different tenants.")


def grant_access(*, session: Session, tenant_id: int, account_id: int, user_id: int) -> AccountAccess:
    """Give a user an account's mail (a shared mailbox has many users, a personal one one).
    Idempotent: granting twice returns the existing grant."""
    account = accounts.get_account(session=session, account_id=account_id, tenant_id=tenant_id)
    user = _user(session, user_id, tenant_id)
    _same_tenant(user, account)
    existing = _access(session, user_id, account_id, tenant_id)
    if existing is not None:
        return existing
    access = AccountAccess(user_id=user_id, account_id=account_id)
    session.add(access)
    session.flush()
    return access


def revoke_access(*, session: Session, tenant_id: int, account_id: int, user_id: int) -> None:
    """Take the account away from a user; its mail stays where it is (it belongs to the tenant).
    The user's default account is cleared if it was this one."""
    user = _user(session, user_id, tenant_id)
    access = _access(session, user_id, account_id, tenant_id)
    if access is None:
        raise NotFound(f"User {user.email} has no access to account {account_id}.")
    session.delete(access)
    if user.default_account_id == account_id:
        user.default_account_id = None
        session.add(user)
    session.flush()


def accounts_visible_to(*, session: Session, tenant_id: int, user_id: int) -> list[MailAccount]:
    """The accounts whose mail a user sees: granted and active (a deactivated account leaves the
    inboxes until it is reactivated)."""
    _user(session, user_id, tenant_id)
    return list(
        session.exec(
            select(MailAccount)
            .join(AccountAccess, col(AccountAccess.account_id) == col(MailAccount.id))
            .where(AccountAccess.user_id == user_id, MailAccount.tenant_id == tenant_id, MailAccount.active)
            .order_by(col(MailAccount.email))
        ).all()
    )


def set_default_account(*, session: Session, tenant_id: int, user_id: int, account_id: int | None) -> User:
    """The account a user composes from by default; None clears it."""
    user = _user(session, user_id, tenant_id)
    if account_id is not None:
        account = accounts.get_account(session=session, account_id=account_id, tenant_id=tenant_id)
        if _access(session, user_id, account_id, tenant_id) is None:
            raise Refused(
                f"{account.email} cannot be the default account of {user.email}: the user has no "
                f"access to it. Grant access first (crm-inbox access grant {account_id} {user.email})."
            )
        if not account.active:
            raise Refused(
                f"{account.email} cannot be the default account of {user.email}: it is deactivated. "
                "Reactivate it first or choose another account."
            )
    user.default_account_id = account_id
    session.add(user)
    session.flush()
    return user


def default_account(*, session: Session, tenant_id: int, user_id: int) -> MailAccount | None:
    """The user's default account if it is still usable (accessible and active), else None: a
    default kept through a deactivation comes back with the account."""
    user = _user(session, user_id, tenant_id)
    if user.default_account_id is None:
        return None
    account = session.get(MailAccount, user.default_account_id)
    if (
        account is None
        or account.tenant_id != tenant_id
        or not account.active
        or _access(session, user_id, account.id or 0, tenant_id) is None
    ):
        return None
    return account


def set_default_signature(
    *, session: Session, tenant_id: int, user_id: int, account_id: int, signature_id: int | None
) -> AccountAccess:
    """A user's default signature when composing from one account; None clears it."""
    user = _user(session, user_id, tenant_id)
    access = _access(session, user_id, account_id, tenant_id)
    if access is None:
        raise Refused(
            f"User {user.email} has no access to account {account_id}, so no default signature can "
            "be set for it. Grant access first (crm-inbox access grant)."
        )
    if signature_id is not None:
        signature = session.get(Signature, signature_id)
        # Another tenant's signature is reported like a missing one (nothing leaks across tenants).
        if signature is None or signature.tenant_id != tenant_id or signature.account_id != account_id:
            own = list_signatures(session=session, tenant_id=tenant_id, account_id=account_id)
            names = ", ".join(f"{s.id} ({s.name})" for s in own)
            raise InvalidInput(
                f"Signature {signature_id} is not a signature of account {account_id}. "
                f"Its signatures are: {names or 'none yet'}."
            )
    access.default_signature_id = signature_id
    session.add(access)
    session.flush()
    return access


# ---------------------------------------------------------------------------------------------
# Signatures


@dataclass(frozen=True, slots=True)
class SignatureSaved:
    """A saved signature and the warnings to show the person who wrote it (e.g. an SVG image)."""

    signature: Signature
    warnings: tuple[str, ...]


def _prepare(html: str, text: str | None) -> tuple[str, str, tuple[str, ...]]:
    """Sanitize + validate the HTML template (and the text one when given): what is stored is
    exactly what was validated."""
    try:
        prepared = signatures.prepare_signature_template(html)
        if text is not None and text.strip():
            signatures.validate_template(text)
            text_version = text.strip()
        else:
            text_version = prepared.text
    except signatures.SignatureError as exc:
        raise SignatureInvalid(str(exc)) from exc
    if not prepared.html.strip():
        raise InvalidInput("The signature is empty once cleaned: give it some text or an image.")
    return prepared.html, text_version, tuple(prepared.warnings)


def _check_name(session: Session, account_id: int, name: str, own_id: int | None = None) -> str:
    name = name.strip()
    if not name:
        raise InvalidInput("A signature needs a name (e.g. 'Formal', 'Short').")
    if len(name) > 100:
        raise InvalidInput("A signature name has at most 100 characters.")
    clash = session.exec(
        select(Signature).where(Signature.account_id == account_id, Signature.name == name)
    ).first()
    if clash is not None and clash.id != own_id:
        raise InvalidInput(f"Account {account_id} already has a signature named {name!r} (id {clash.id}).")
    return name


def add_signature(
    *, session: Session, tenant_id: int, account_id: int, name: str, html: str, text: str | None = None
) -> SignatureSaved:
    """Save a new signature (at most three per account). `text` is the plain-text template;
    without it the text version is derived from the HTML."""
    # Lock the account row so two concurrent adds cannot both pass the count (PostgreSQL).
    account = session.exec(
        select(MailAccount)
        .where(MailAccount.id == account_id, MailAccount.tenant_id == tenant_id)
        .with_for_update()
    ).first()
    if account is None:
        raise NotFound(f"No mail account with id {account_id}.")
    existing = list_signatures(session=session, tenant_id=tenant_id, account_id=account_id)
    if len(existing) >= MAX_SIGNATURES_PER_ACCOUNT:
        names = ", ".join(f"{s.name!r} (id {s.id})" for s in existing)
        raise Refused(
            f"Account {account.email} already has {MAX_SIGNATURES_PER_ACCOUNT} signatures, the most "
            f"an account can have: {names}. Edit or delete one of them instead."
        )
    name = _check_name(session, account_id, name)
    clean_html, text_version, warnings = _prepare(html, text)
    signature = Signature(
        tenant_id=account.tenant_id, account_id=account_id, name=name, html=clean_html, text=text_version
    )
    session.add(signature)
    session.flush()
    return SignatureSaved(signature=signature, warnings=warnings)


def _signature(session: Session, signature_id: int, tenant_id: int) -> Signature:
    signature = session.get(Signature, signature_id)
    if signature is None or signature.tenant_id != tenant_id:
        raise NotFound(f"No signature with id {signature_id}.")
    return signature


def update_signature(
    *,
    session: Session,
    tenant_id: int,
    signature_id: int,
    name: str | None = None,
    html: str | None = None,
    text: str | None = None,
) -> SignatureSaved:
    """Rename and/or replace a signature's templates. New HTML without new text re-derives the text."""
    signature = _signature(session, signature_id, tenant_id)
    warnings: tuple[str, ...] = ()
    if name is not None:
        signature.name = _check_name(session, signature.account_id, name, signature.id)
    if html is not None:
        signature.html, signature.text, warnings = _prepare(html, text)
    elif text is not None:
        signature.text = _prepare(signature.html, text)[1]
    signature.updated_at = utcnow()
    session.add(signature)
    session.flush()
    return SignatureSaved(signature=signature, warnings=warnings)


def delete_signature(*, session: Session, tenant_id: int, signature_id: int) -> None:
    """Delete a signature; users who had it as default get no default for that account."""
    signature = _signature(session, signature_id, tenant_id)
    session.execute(
        update(AccountAccess)
        .where(col(AccountAccess.default_signature_id) == signature_id)
        .values(default_signature_id=None)
    )
    session.delete(signature)
    session.flush()


def list_signatures(*, session: Session, tenant_id: int, account_id: int) -> list[Signature]:
    """An account's signatures; an account of another tenant is not found."""
    accounts.get_account(session=session, account_id=account_id, tenant_id=tenant_id)
    return list(
        session.exec(
            select(Signature)
            .where(Signature.account_id == account_id, Signature.tenant_id == tenant_id)
            .order_by(col(Signature.id))
        ).all()
    )


def merge_context(
    *, session: Session, tenant_id: int, user_id: int, account_id: int
) -> signatures.MergeContext:
    """The mail-merge values of one mail: the sending user, their company (the tenant), the account."""
    user = _user(session, user_id, tenant_id)
    account = accounts.get_account(session=session, account_id=account_id, tenant_id=tenant_id)
    _same_tenant(user, account)
    tenant = session.get_one(Tenant, account.tenant_id)
    return signatures.MergeContext(
        sender=signatures.SenderInfo(
            first_name=user.first_name,
            last_name=user.last_name,
            full_name=f"{user.first_name} {user.last_name}".strip(),
            job_title=user.job_title,
            phone=user.phone,
            email=user.email,
        ),
        company=signatures.CompanyInfo(name=tenant.name),
        account=signatures.AccountInfo(email=account.email, display_name=account.display_name),
    )


def _render(signature: Signature, ctx: signatures.MergeContext) -> signatures.RenderedSignature:
    try:
        rendered = signatures.render_signature(signature.html, ctx)
        text = rendered.text
        if signature.text.strip():
            text = signatures.render_text(signature.text, ctx).strip()
    except signatures.SignatureError as exc:
        raise SignatureInvalid(str(exc)) from exc
    return signatures.RenderedSignature(html=rendered.html, text=text)


def render_signature(
    *, session: Session, tenant_id: int, signature_id: int, user_id: int
) -> signatures.RenderedSignature:
    """A signature filled in for one sender (preview, or a mail about to be sent)."""
    signature = _signature(session, signature_id, tenant_id)
    ctx = merge_context(
        session=session, tenant_id=tenant_id, user_id=user_id, account_id=signature.account_id
    )
    return _render(signature, ctx)


@dataclass(frozen=True, slots=True)
class SignatureChoice:
    id: int
    name: str


@dataclass(frozen=True, slots=True)
class ComposeDefaults:
    """What the compose form starts with: the default signature rendered (None when the user has
    not chosen one) and the other signatures the user may switch to."""

    account_id: int
    signature: SignatureChoice | None
    rendered: signatures.RenderedSignature | None
    others: tuple[SignatureChoice, ...]


def compose_defaults(*, session: Session, tenant_id: int, user_id: int, account_id: int) -> ComposeDefaults:
    user = _user(session, user_id, tenant_id)
    account = accounts.get_account(session=session, account_id=account_id, tenant_id=tenant_id)
    access = _access(session, user_id, account_id, tenant_id)
    if access is None or not account.active:
        why = "the user has no access to it" if access is None else "it is deactivated"
        raise Refused(f"{user.email} cannot send from {account.email}: {why}.")
    all_signatures: Sequence[Signature] = list_signatures(
        session=session, tenant_id=tenant_id, account_id=account_id
    )
    default = next((s for s in all_signatures if s.id == access.default_signature_id), None)
    rendered = None
    if default is not None:
        rendered = _render(
            default,
            merge_context(session=session, tenant_id=tenant_id, user_id=user_id, account_id=account_id),
        )
    return ComposeDefaults(
        account_id=account_id,
        signature=SignatureChoice(id=default.id or 0, name=default.name) if default else None,
        rendered=rendered,
        others=tuple(SignatureChoice(id=s.id or 0, name=s.name) for s in all_signatures if s is not default),
    )
