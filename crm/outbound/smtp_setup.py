"""SMTP settings of an account, saved only after a test mail was accepted (issue 10, item 4).

A login check proves little about sending: a server may log us in and still refuse our From
(sender not owned), refuse to relay to outside recipients, or cap the size. So the settings are
tried for real: a short test mail goes from the account's address to an address the admin gives,
and only when the server accepted it (250 after DATA) are the settings stored.

Three steps, no session held while the server is talked to (as `crm.mailboxes.edit_account`):

1. read and validate (admin only, address parse, header checks, port defaults) and build the
   test message with one of our Message-IDs;
2. `send_test` (injected by the face: `sync.smtp_setup.make_test_sender`, since `crm` does not
   import `sync`) sends it with the candidate settings and says why it failed, in words;
3. the attempt is written to the mail log as a `test` mail (sent or failed, the server's answer),
   and on success the settings (the password encrypted) are stored on the account.

The test mail is sent at once instead of through the queue: the admin waits for the verdict,
and candidate settings (with a password) must not be stored before they were accepted.

Which login the test uses is the one the queue will send with (`sync.send_queue`): an account
with an OAuth grant sends with its access token (XOAUTH2), so its test does too (`oauth_account_id`
on `SmtpTest`; the face's sender fetches and refreshes the token) and a password is refused for
it, since the queue would never use it. A forwarding channel (kind FORWARDING) has no IMAP login
to fall back on, so it needs its own SMTP username and password.

A new account's SMTP goes through the same rule (`prepare_new_account_test`, `log_test`, used by
`crm.mailboxes.connect_account`): the account is created with SMTP only when its test mail was
accepted, and otherwise not at all.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from email import policy
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any

from pydantic import SecretStr
from sqlmodel import Session

from core.caller import Caller
from core.errors import Conflict, InvalidInput
from core.secrets import SecretBox
from core.types import AccountKind, Security, utcnow
from crm import access
from crm.models import MailAccount, MailKind, OutboundMail, OutboundState
from crm.oauth import tokens
from crm.outbound.headers import check_header, parse_address
from crm.outbound.ids import new_message_id
from crm.outbound.views import OutboundView, outbound_view

SessionFactory = Callable[[], AbstractContextManager[Session]]

# RFC 8314 3.3: implicit TLS for submission is port 465; RFC 6409: STARTTLS submission is 587.
USUAL_PORTS: dict[Security, int] = {Security.TLS: 465, Security.STARTTLS: 587, Security.PLAIN: 25}


@dataclass(frozen=True, slots=True)
class SmtpSettingsIn:
    """What the admin typed. `password` None: keep the account's SMTP password (or its IMAP one)."""

    host: str
    security: Security = Security.STARTTLS
    port: int | None = None
    username: str | None = None  # None or "": the saved SMTP username, else the IMAP one
    password: SecretStr | None = None
    test_to: str = ""


@dataclass(frozen=True, slots=True)
class SmtpTest:
    """The candidate settings and the test mail, in plain values for the sender. With
    `oauth_account_id` set, the sender logs in with that account's OAuth access token (XOAUTH2)
    and `password` is unused."""

    host: str
    port: int
    security: Security
    username: str
    password: SecretStr
    ca_file: str | None
    sender: str
    recipient: str
    raw: bytes
    oauth_account_id: int | None = None


@dataclass(frozen=True, slots=True)
class SmtpTestOutcome:
    """What the server said. `cause` is one of `sync.smtp_setup.Cause` (a stable code), `message`
    the words a user can act on (never the password)."""

    ok: bool
    message: str
    cause: str | None = None
    code: int | None = None
    reply: str = ""
    error_code: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


TestSender = Callable[[SmtpTest], SmtpTestOutcome]


@dataclass(frozen=True, slots=True)
class SmtpSaved:
    account_id: int
    host: str
    port: int
    security: Security
    username: str
    message: str
    test: OutboundView


class SmtpTestFailed(Conflict):
    """The test mail was not accepted: nothing was saved. The attempt is in the mail log."""

    def __init__(self, outcome: SmtpTestOutcome, outbound_id: int, *, new_account: bool = False) -> None:
        then = (
            "The account was not created: correct the SMTP settings and try again, or leave the "
            "SMTP settings empty to connect the mailbox without sending and set SMTP up later."
            if new_account
            else "The SMTP settings were not saved."
        )
        super().__init__(
            "smtp_test_failed",
            f"{outcome.message.rstrip('.')}. {then}",
            cause=outcome.cause,
            outbound_id=outbound_id,
            server_code=outcome.code,
            server_reply=outcome.reply,
        )


def _validated(account_email: str, given: SmtpSettingsIn, imap_username: str) -> tuple[str, int, str, str]:
    host = check_header("SMTP host", given.host).strip().lower()
    if not host or len(host) > 255 or any(c.isspace() for c in host):
        raise InvalidInput("smtp_host_invalid", "Give the SMTP server's host name.", field="host")
    port = given.port or USUAL_PORTS[given.security]
    if not 1 <= port <= 65535:
        raise InvalidInput(
            "port_invalid", f"SMTP port {port} is not a valid port number (1-65535).", field="port", port=port
        )
    username = check_header("SMTP username", (given.username or "").strip()) or imap_username
    if not given.test_to.strip():
        raise InvalidInput(
            "test_address_required",
            "Give an address the test mail is sent to (one you can read).",
            field="test_to",
        )
    recipient, _ = parse_address("test address", given.test_to.strip())
    return host, port, username, recipient


def _test_message(
    session: Session, tenant_id: int, sender: str, recipient: str, host: str
) -> tuple[str, bytes]:
    message_id = new_message_id(session=session, tenant_id=tenant_id, domain=sender.rpartition("@")[2])
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = sender
    msg["To"] = recipient
    msg["Subject"] = f"crm-inbox: test mail from {sender}"
    msg["Date"] = format_datetime(utcnow())
    msg["Message-ID"] = message_id
    msg.set_content(
        f"This is a test mail sent by crm-inbox through {host} to check the SMTP settings of "
        f"{sender}.\n\nIt arrived, so the settings work and were saved. Nothing else to do.\n"
    )
    return message_id, msg.as_bytes(policy=policy.SMTP)


def _password(account: MailAccount, given: SmtpSettingsIn, box: SecretBox, oauth: bool) -> SecretStr:
    """The password of the test; for an OAuth account none (its token logs in instead, the same
    choice as the queue's in `sync.send_queue`, so a test that passes proves the login the mail
    will use). Called after the cheap checks: decrypting is the last step before sending."""
    if oauth:
        if given.password is not None:
            raise InvalidInput(
                "smtp_password_oauth",
                "This account signs in with OAuth: its SMTP login uses the OAuth token, so no "
                "password is taken. Leave the password empty (or give the account a password "
                "first, which ends its OAuth sign-in).",
                field="password",
            )
        return SecretStr("")
    if given.password is not None:
        return given.password
    if account.smtp_secret_encrypted:
        return box.decrypt(account.smtp_secret_encrypted)
    if account.kind is AccountKind.FORWARDING:
        # A channel's stored secret is a random placeholder, not a login: nothing to fall back on.
        raise InvalidInput(
            "smtp_login_required",
            "A forwarding address has no mailbox login: give the SMTP username and password.",
            field="password",
        )
    return box.decrypt(account.secret_encrypted)


def _username(account: MailAccount, given: SmtpSettingsIn, oauth: bool) -> str | None:
    """The login name when none is given: the stored SMTP one, else the IMAP one (an OAuth
    token's address). A channel's IMAP username is its own hosted address, no login anywhere."""
    if given.username and given.username.strip():
        return None
    if oauth:
        return account.username
    if account.smtp_username:
        return account.smtp_username
    if account.kind is AccountKind.FORWARDING:
        raise InvalidInput(
            "smtp_login_required",
            "A forwarding address has no mailbox login: give the SMTP username and password.",
            field="username",
        )
    return account.username


def log_test(
    session: Session,
    *,
    caller: Caller,
    account_id: int | None,
    test: SmtpTest,
    message_id: str,
    outcome: SmtpTestOutcome,
) -> OutboundView:
    """The attempt in the mail log as a `test` mail (sent or failed, with the server's answer).
    `account_id` None: a new account's test that failed (no account was created); such rows,
    like system mail, are shown to admins only."""
    now = utcnow()
    row = OutboundMail(
        tenant_id=caller.tenant_id,
        account_id=account_id,
        user_id=caller.user_id,
        kind=MailKind.TEST,
        state=OutboundState.SENT if outcome.ok else OutboundState.FAILED,
        message_id=message_id,
        subject=f"crm-inbox: test mail from {test.sender}",
        from_email=test.sender,
        recipients=[test.recipient],
        to_addrs=[{"email": test.recipient, "name": ""}],
        raw=test.raw,
        size=len(test.raw),
        attempts=1,
        last_response_code=outcome.code,
        last_response=outcome.reply[:500],
        error_code=None if outcome.ok else (outcome.cause or outcome.error_code),
        error_params={} if outcome.ok else {"message": outcome.message, **outcome.params},
        sent_at=now if outcome.ok else None,
        sent_folder_done=True,  # a test mail is not filed in Sent nor in a conversation
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return outbound_view(row)


@dataclass(frozen=True, slots=True)
class NewAccountTest:
    """The test mail of an account being created, built before it exists."""

    test: SmtpTest
    message_id: str


def prepare_new_account_test(
    session: Session,
    *,
    caller: Caller,
    email: str,
    given: SmtpSettingsIn,
    imap_username: str,
    imap_password: SecretStr,
    ca_file: str | None,
) -> NewAccountTest:
    """Validate a new password account's SMTP settings (a test address is required) and build
    its test mail; `password` None logs in with the IMAP password, as the queue then will."""
    host, port, username, recipient = _validated(email, given, imap_username)
    message_id, raw = _test_message(session, caller.tenant_id, email, recipient, host)
    return NewAccountTest(
        test=SmtpTest(
            host=host,
            port=port,
            security=given.security,
            username=username,
            password=given.password if given.password is not None else imap_password,
            ca_file=ca_file,
            sender=email,
            recipient=recipient,
            raw=raw,
        ),
        message_id=message_id,
    )


def save_smtp_settings(
    *,
    sessions: SessionFactory,
    caller: Caller,
    account_id: int,
    given: SmtpSettingsIn,
    box: SecretBox,
    send_test: TestSender,
) -> SmtpSaved:
    """Send a test mail with the new settings; store them only when the server accepted it.
    Raises `SmtpTestFailed` (with the cause in words) otherwise; the attempt is logged either way."""
    with sessions() as session:
        account = access.get_account(session, caller, account_id)  # first: invisible is not found
        access.require_admin(caller, "change an account's SMTP settings")
        assert account.id is not None
        oauth = tokens.grant_of(session=session, account_id=account.id) is not None
        oauth_account_id = account.id if oauth else None
        fallback = _username(account, given, oauth)
        given_username = given if fallback is None else replace(given, username=fallback)
        host, port, username, recipient = _validated(account.email, given_username, account.username)
        password = _password(account, given, box, oauth)
        message_id, raw = _test_message(session, caller.tenant_id, account.email, recipient, host)
        test = SmtpTest(
            host=host,
            port=port,
            security=given.security,
            username=username,
            password=password,
            ca_file=account.ca_file,
            sender=account.email,
            recipient=recipient,
            raw=raw,
            oauth_account_id=oauth_account_id,
        )
    outcome = send_test(test)
    with sessions() as session:
        account = access.get_account(session, caller, account_id)
        view = log_test(
            session, caller=caller, account_id=account_id, test=test, message_id=message_id, outcome=outcome
        )
        if outcome.ok:
            account.smtp_host, account.smtp_port, account.smtp_security = host, port, given.security
            account.smtp_username = None if username == account.username else username
            if oauth_account_id is not None:
                account.smtp_secret_encrypted = None  # the token logs in; no password to keep
            elif given.password is not None:
                account.smtp_secret_encrypted = box.encrypt(given.password)
            session.add(account)
            session.flush()
    if not outcome.ok:
        raise SmtpTestFailed(outcome, view.id)
    return SmtpSaved(
        account_id=account_id,
        host=host,
        port=port,
        security=given.security,
        username=username,
        message=outcome.message,
        test=view,
    )
