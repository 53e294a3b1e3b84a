"""Adding and editing an account in three steps (validate, check with no session open, save
under the tenant lock), a new password, and the stored settings for a connection test."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import replace

from pydantic import SecretStr
from sqlalchemy import delete
from sqlmodel import Session, col, select

from core.caller import Caller
from core.connection import CheckOutcome, ConnectionSettings
from core.errors import Conflict, InvalidInput, not_found
from core.secrets import SecretBox
from core.types import AccountStatus, Security, utcnow
from crm import access, tenants
from crm.mailboxes.validation import (
    AccountChanges,
    AccountInput,
    NewAccount,
    SmtpInput,
    plan_edit,
    validate_new_account,
)
from crm.mailboxes.views import AccountView, CheckView, SaveResult, account_view, check_view
from crm.models import MailAccount, OAuthGrant, Tenant
from crm.outbound import smtp_setup

SessionFactory = Callable[[], AbstractContextManager[Session]]
Verifier = Callable[[ConnectionSettings], CheckOutcome]


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


def _smtp_setup_required(new: NewAccount) -> InvalidInput:
    return InvalidInput(
        "smtp_setup_required",
        "SMTP settings are saved only after a test mail was accepted: give the address the test "
        "mail goes to, or connect the mailbox without SMTP and set SMTP up afterwards. Nothing "
        "was saved.",
        field="smtp_host",
        smtp_fields=["smtp_host"],
        email=new.data.email,
    )


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
    send_test: smtp_setup.TestSender | None = None,
) -> SaveResult:
    """Add a mailbox after checking that it can log in over IMAP: validate, then check with no
    session open, then save in a short transaction of its own.

    SMTP settings given with it follow the SMTP set-up's rule (`crm.outbound.smtp_setup`): a
    test mail to `smtp.test_to` is sent with them (by `send_test`, after the IMAP check) and the
    account is created only once the server accepted it. A refused test saves nothing at all
    (`SmtpTestFailed`, the attempt in the mail log): creating the mailbox without the SMTP the
    admin asked for would be a surprise, and a retry of the same form would then meet
    `account_exists`. `check`/`force` govern the IMAP login only; the test mail is never skipped."""
    new = validate_new_account(data, password, smtp)
    if new.data.smtp_host and send_test is None:
        raise _smtp_setup_required(new)
    prepared = None
    with sessions() as session:
        check_new_account(session=session, caller=caller, new=new)
        if new.data.smtp_host and smtp is not None:
            d = new.data
            prepared = smtp_setup.prepare_new_account_test(
                session,
                caller=caller,
                email=d.email,
                given=smtp_setup.SmtpSettingsIn(
                    host=d.smtp_host or "",
                    security=d.smtp_security or Security.STARTTLS,
                    port=d.smtp_port,
                    username=new.smtp_username,
                    password=new.smtp_password,
                    test_to=smtp.test_to or "",
                ),
                imap_username=d.username,
                imap_password=new.password,
                ca_file=d.ca_file,
            )
    if new.data.smtp_host and prepared is None:
        raise _smtp_setup_required(new)
    # The IMAP login only: the test mail below proves SMTP better than a login would.
    imap_only = replace(new.settings, smtp_host=None, smtp_port=None, smtp_security=None)
    check = _verify(verify, imap_only, force) if verify is not None else None
    outcome = None
    if prepared is not None and send_test is not None:
        outcome = send_test(prepared.test)
        if not outcome.ok:
            with sessions() as session:
                logged = smtp_setup.log_test(
                    session,
                    caller=caller,
                    account_id=None,
                    test=prepared.test,
                    message_id=prepared.message_id,
                    outcome=outcome,
                )
            raise smtp_setup.SmtpTestFailed(outcome, logged.id, new_account=True)
        t = prepared.test
        new = replace(
            new,
            data=replace(new.data, smtp_host=t.host, smtp_port=t.port, smtp_security=t.security),
            smtp_username=None if t.username == new.data.username else t.username,
        )
    with sessions() as session:
        result = save_new_account(session=session, caller=caller, new=new, box=box, check=check)
        if prepared is not None and outcome is not None:
            smtp_setup.log_test(
                session,
                caller=caller,
                account_id=result.account.id,
                test=prepared.test,
                message_id=prepared.message_id,
                outcome=outcome,
            )
        return result


def add_account(
    *,
    session: Session,
    caller: Caller,
    data: AccountInput,
    password: SecretStr,
    box: SecretBox,
) -> AccountView:
    """Add a mailbox without a connection check (no network, so one transaction is enough).
    No SMTP here: SMTP settings are saved only after a test mail (`connect_account` with a
    test address, or the SMTP set-up afterwards)."""
    new = validate_new_account(data, password, None)
    if new.data.smtp_host:
        raise _smtp_setup_required(new)
    return save_new_account(session=session, caller=caller, new=new, box=box).account


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
    with sessions() as session:
        account = access.get_account(session, caller, account_id)  # first: invisible is not found
        access.require_admin(caller, "edit mail accounts")
        plan = plan_edit(account, changes, box)
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
    """New credentials end the 'needs new credentials' wait: the next sync tries again. An
    account that signed in with OAuth goes back to its password: its tokens are deleted (revoke
    them first with a disconnect when the provider should forget them too)."""
    account = access.get_account(session, caller, account_id)
    access.require_admin(caller, "change an account's password")
    account.secret_encrypted = box.encrypt(password)
    session.execute(delete(OAuthGrant).where(col(OAuthGrant.account_id) == account_id))
    account.auth_failures = 0
    account.consecutive_failures = 0
    account.next_attempt_at = None
    if account.status in (
        AccountStatus.NEEDS_CREDENTIALS,
        AccountStatus.AUTH_FAILED,
        AccountStatus.NEEDS_RECONNECT,
    ):
        account.status = AccountStatus.NEW
    session.add(account)
    session.flush()
    return account_view(session, account)


def connection_settings_of(
    *, session: Session, caller: Caller, account_id: int, box: SecretBox
) -> ConnectionSettings:
    """The stored settings of an account, passwords decrypted, to test them: read in a short
    session, checked after it closed."""
    account = access.get_account(session, caller, account_id)
    access.require_admin(caller, "test an account's connection")
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
