"""Connection check before an account is saved: log in over IMAP (and SMTP when configured).

`verify_connection` is the verifier `crm.mailboxes.connect_account`/`edit_account` take by injection
(`crm` cannot import `sync`). Each failure is reported as one of a few problems a user can act on
(`Problem`), with the translated `sync.errors` message: never the password, never server text.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from core.connection import ConnectionSettings, Credential
from core.settings import Settings, get_settings
from core.types import Security
from sync import errors, imap
from sync.folders import pick_folders
from sync.smtp_check import SmtpAuthUnavailable, SmtpEndpoint, SmtpStartTlsMissing, smtp_login
from sync.types import FolderRole


class Problem(enum.StrEnum):
    """What went wrong, for scripts (`--json`) and UIs; the message says it in words."""

    AUTHENTICATION = "authentication"
    CERTIFICATE = "certificate"
    TLS = "tls"
    HOST = "host"  # name does not resolve
    BLOCKED_HOST = "blocked_host"  # resolves to a range this deployment refuses
    PORT = "port"  # connection refused
    TIMEOUT = "timeout"
    CONNECTION = "connection"  # lost half-way
    PROTOCOL = "protocol"  # the server answered something unusable


_PROBLEMS: tuple[tuple[type[errors.SyncError], Problem], ...] = (
    (errors.AuthFailed, Problem.AUTHENTICATION),
    (SmtpAuthUnavailable, Problem.AUTHENTICATION),
    (errors.CertificateUntrusted, Problem.CERTIFICATE),
    (SmtpStartTlsMissing, Problem.TLS),
    (errors.TlsFailed, Problem.TLS),
    (errors.BlockedHost, Problem.BLOCKED_HOST),
    (errors.HostNotFound, Problem.HOST),
    (errors.ConnectionRefused, Problem.PORT),
    (errors.ConnectionTimedOut, Problem.TIMEOUT),
    (errors.ConnectionLost, Problem.CONNECTION),
)


def problem_of(error: errors.SyncError) -> Problem:
    for error_type, problem in _PROBLEMS:
        if isinstance(error, error_type):
            return problem
    return Problem.PROTOCOL


@dataclass(frozen=True, slots=True)
class CheckResult:
    ok: bool
    message: str
    inbox: str | None = None
    sent: str | None = None
    problem: Problem | None = None  # the first problem found
    service: str | None = None  # "imap" or "smtp": where that problem is
    # That problem's error code and fields (`sync.errors`), so a forced save can store them on
    # the account as code + params (`core.problems`) instead of a sentence.
    code: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


def _failed(exc: errors.SyncError, service: str) -> CheckResult:
    return CheckResult(
        ok=False,
        message=exc.message,
        problem=problem_of(exc),
        service=service,
        code=exc.code,
        params=exc.fields,
    )


def check_imap(endpoint: imap.ImapEndpoint, password: Credential) -> CheckResult:
    try:
        with imap.connect(endpoint, password) as conn:
            folders = pick_folders(conn.list_folders())
    except errors.SyncError as exc:
        return _failed(exc, "imap")
    sent = folders.get(FolderRole.SENT)
    message = (
        f"Logged in; INBOX found, Sent folder: {sent}" if sent else "Logged in; INBOX found, no Sent folder"
    )
    return CheckResult(ok=True, message=message, inbox=folders[FolderRole.INBOX], sent=sent)


def check_smtp(endpoint: SmtpEndpoint, password: Credential) -> CheckResult:
    try:
        smtp_login(endpoint, password)
    except errors.SyncError as exc:
        return _failed(exc, "smtp")
    return CheckResult(ok=True, message=f"SMTP login to {endpoint.host}:{endpoint.port} accepted")


def verify_connection(settings: ConnectionSettings, *, config: Settings | None = None) -> CheckResult:
    """IMAP login and folder lookup, then SMTP login when a host is set. Both are tried even if
    the first fails, so one round trip tells the user everything to fix."""
    config = config or get_settings()
    imap_result = check_imap(
        imap.ImapEndpoint(
            host=settings.imap_host,
            port=settings.imap_port,
            security=settings.imap_security,
            username=settings.username,
            ca_file=settings.ca_file,
            connect_timeout=config.connect_timeout_seconds,
            read_timeout=config.connect_timeout_seconds,
            allow_private_hosts=config.allow_private_hosts,
        ),
        settings.password,
    )
    if not settings.smtp_host:
        return imap_result
    security = settings.smtp_security or Security.STARTTLS
    smtp_result = check_smtp(
        SmtpEndpoint(
            host=settings.smtp_host,
            port=settings.smtp_port or {Security.TLS: 465, Security.STARTTLS: 587}.get(security, 25),
            security=security,
            username=settings.smtp_username or settings.username,
            ca_file=settings.ca_file,
            timeout=config.connect_timeout_seconds,
            allow_private_hosts=config.allow_private_hosts,
        ),
        settings.smtp_password or settings.password,
    )
    first_failure = next((r for r in (imap_result, smtp_result) if not r.ok), None)
    return CheckResult(
        ok=first_failure is None,
        message=f"IMAP: {imap_result.message.rstrip('.')}. SMTP: {smtp_result.message.rstrip('.')}.",
        inbox=imap_result.inbox,
        sent=imap_result.sent,
        problem=first_failure.problem if first_failure else None,
        service=first_failure.service if first_failure else None,
        code=first_failure.code if first_failure else None,
        params=first_failure.params if first_failure else {},
    )


def make_verifier(config: Settings | None = None) -> Callable[[ConnectionSettings], CheckResult]:
    """A verifier bound to deployment settings (timeouts, private hosts), for `crm.mailboxes`."""
    return lambda settings: verify_connection(settings, config=config)
