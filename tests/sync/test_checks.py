"""Connection checks against real servers: the session's Dovecot for IMAP, aiosmtpd for SMTP.

aiosmtpd runs in the test on loopback in three modes (plain, STARTTLS, implicit TLS) with the
Dovecot fixture's certificate from a private test CA. Every failing case asserts the problem code, that the
message never contains the password nor server text (banner, reply), and, for refusals that must
happen before any network traffic (SSRF guard, missing STARTTLS), that none happened.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Sink
from aiosmtpd.smtp import AuthResult, LoginPassword
from pydantic import SecretStr

from core.connection import ConnectionSettings
from core.settings import Settings
from core.types import Security
from devtools.devmail import LocalDovecot
from sync.check import CheckResult, Problem, check_imap, check_smtp, verify_connection
from sync.imap import ImapEndpoint
from sync.smtp_check import SmtpEndpoint
from tests.dovecot_fixtures import MailboxUser

SMTP_USER = "sender@acme.test"
SMTP_PASSWORD = "smtp-Pa55-word-7Q"
BANNER = "banner-XYZZY-internal-build-42"
# Text aiosmtpd sends on a failed AUTH; must never reach our messages.
AUTH_REPLY = "Authentication credentials invalid"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def assert_clean(result: CheckResult, *secrets: str) -> None:
    """No password, no server text in a message shown to users."""
    for text in (*secrets, BANNER, AUTH_REPLY, "Dovecot", "AUTHENTICATIONFAILED"):
        assert text not in result.message


@dataclass
class Authenticator:
    """Accepts SMTP_USER/SMTP_PASSWORD; remembers that AUTH was attempted at all."""

    attempts: list[str] = field(default_factory=list)

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        self.attempts.append(mechanism)
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == SMTP_USER.encode()
            and auth_data.password == SMTP_PASSWORD.encode()
        )
        return AuthResult(success=ok, handled=False)


@dataclass
class SmtpServer:
    port: int
    security: Security
    auth: Authenticator

    def endpoint(self, ca_file: Path | None, **kw: Any) -> SmtpEndpoint:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": self.port,
            "security": self.security,
            "username": SMTP_USER,
            "ca_file": str(ca_file) if ca_file else None,
            "timeout": 5.0,
            "allow_private_hosts": True,
        }
        values.update(kw)
        return SmtpEndpoint(**values)


def server_tls_context(dovecot: LocalDovecot) -> ssl.SSLContext:
    assert dovecot.ca_file is not None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(dovecot.cert_file, dovecot.key_file)
    return context


@contextlib.contextmanager
def smtp_server(
    dovecot: LocalDovecot, security: Security, *, auth_require_tls: bool = True
) -> Iterator[SmtpServer]:
    """A real aiosmtpd on loopback. `plain`: AUTH offered without TLS (unless auth_require_tls);
    `starttls`: STARTTLS required before AUTH; `tls`: implicit TLS."""
    auth = Authenticator()
    port = free_port()
    kwargs: dict[str, Any] = {
        "hostname": "127.0.0.1",
        "port": port,
        "authenticator": auth,
        "ident": BANNER,
    }
    if security is Security.PLAIN:
        kwargs["auth_require_tls"] = auth_require_tls
    elif security is Security.STARTTLS:
        kwargs.update(tls_context=server_tls_context(dovecot), require_starttls=True, auth_require_tls=True)
    else:
        kwargs.update(ssl_context=server_tls_context(dovecot), auth_require_tls=False)
    controller = Controller(Sink(), **kwargs)
    controller.start()
    try:
        yield SmtpServer(port=port, security=security, auth=auth)
    finally:
        controller.stop()


@contextlib.contextmanager
def silent_listener() -> Iterator[socket.socket]:
    """A port that accepts TCP connections (kernel backlog) but never says a word, and can tell
    whether anyone connected."""
    sock = socket.socket()
    try:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        yield sock
    finally:
        sock.close()


def nobody_connected(listener: socket.socket) -> bool:
    listener.setblocking(False)
    try:
        conn, _ = listener.accept()
    except BlockingIOError:
        return True
    conn.close()
    return False


# ---------------------------------------------------------------------------------------------
# IMAP


def imap_endpoint(mailbox: MailboxUser, **kw: Any) -> ImapEndpoint:
    values: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": mailbox.dovecot.ssl_port,
        "security": Security.TLS,
        "username": mailbox.name,
        "ca_file": str(mailbox.dovecot.ca_file),
        "connect_timeout": 5.0,
        "read_timeout": 5.0,
        "allow_private_hosts": True,
    }
    values.update(kw)
    return ImapEndpoint(**values)


def test_imap_ok_implicit_tls(mailbox_user: MailboxUser) -> None:
    result = check_imap(imap_endpoint(mailbox_user), SecretStr(mailbox_user.password))
    assert result.ok, result.message
    assert (result.inbox, result.sent, result.problem) == ("INBOX", "Sent", None)


def test_imap_ok_starttls(mailbox_user: MailboxUser) -> None:
    endpoint = imap_endpoint(mailbox_user, port=mailbox_user.dovecot.port, security=Security.STARTTLS)
    result = check_imap(endpoint, SecretStr(mailbox_user.password))
    assert result.ok, result.message


def test_imap_wrong_password(mailbox_user: MailboxUser) -> None:
    wrong = "not-the-Right-one-93"
    result = check_imap(imap_endpoint(mailbox_user), SecretStr(wrong))
    assert not result.ok
    assert (result.problem, result.service) == (Problem.AUTHENTICATION, "imap")
    assert (result.code, result.params) == (
        "auth_failed",
        {"host": "127.0.0.1", "username": mailbox_user.name},
    )
    assert f"Authentication failed for {mailbox_user.name} on 127.0.0.1" in result.message
    assert_clean(result, wrong, mailbox_user.password)


def test_imap_untrusted_certificate(mailbox_user: MailboxUser) -> None:
    result = check_imap(imap_endpoint(mailbox_user, ca_file=None), SecretStr(mailbox_user.password))
    assert not result.ok
    assert result.problem is Problem.CERTIFICATE
    assert result.code == "certificate_untrusted" and result.params["host"] == "127.0.0.1"
    # The sentence speaks of the product: the CLI adds its own flag hint for the code.
    assert "not trusted" in result.message and "--ca-file" not in result.message
    assert_clean(result, mailbox_user.password)


def test_imap_connection_refused(mailbox_user: MailboxUser) -> None:
    port = free_port()
    result = check_imap(imap_endpoint(mailbox_user, port=port), SecretStr(mailbox_user.password))
    assert result.problem is Problem.PORT
    assert result.code == "connection_refused"
    assert f"127.0.0.1:{port} refused the connection" in result.message


def test_imap_timeout(mailbox_user: MailboxUser) -> None:
    with silent_listener() as listener:
        port = listener.getsockname()[1]
        endpoint = imap_endpoint(mailbox_user, port=port, connect_timeout=0.5, read_timeout=0.5)
        result = check_imap(endpoint, SecretStr(mailbox_user.password))
    assert result.problem is Problem.TIMEOUT, result.message
    assert result.code == "connection_timed_out"
    assert "did not answer" in result.message


def test_imap_unknown_host(mailbox_user: MailboxUser) -> None:
    result = check_imap(imap_endpoint(mailbox_user, host="no-such-host.invalid"), SecretStr("x"))
    assert result.problem is Problem.HOST
    assert result.code == "host_not_found"
    assert "could not be resolved" in result.message


def test_imap_metadata_address_always_blocked(mailbox_user: MailboxUser) -> None:
    endpoint = imap_endpoint(
        mailbox_user, host="169.254.169.254", allow_private_hosts=True, connect_timeout=0.5
    )
    result = check_imap(endpoint, SecretStr(mailbox_user.password))
    assert result.problem is Problem.BLOCKED_HOST
    assert result.code == "host_blocked"
    assert "cloud metadata address" in result.message


def test_imap_loopback_blocked_unless_allowed(mailbox_user: MailboxUser, settings: Settings) -> None:
    strict = settings.model_copy(update={"allow_private_hosts": False})
    with silent_listener() as listener:
        port = listener.getsockname()[1]
        result = verify_connection(
            ConnectionSettings(
                imap_host="127.0.0.1",
                imap_port=port,
                imap_security=Security.TLS,
                username=mailbox_user.name,
                password=SecretStr(mailbox_user.password),
            ),
            config=strict,
        )
        assert nobody_connected(listener), "the guard must refuse before connecting"
    assert result.problem is Problem.BLOCKED_HOST
    assert "loopback" in result.message
    assert_clean(result, mailbox_user.password)


# ---------------------------------------------------------------------------------------------
# SMTP


@pytest.mark.parametrize("security", [Security.PLAIN, Security.STARTTLS, Security.TLS])
def test_smtp_login_ok(dovecot: LocalDovecot, security: Security) -> None:
    with smtp_server(dovecot, security, auth_require_tls=False) as server:
        result = check_smtp(server.endpoint(dovecot.ca_file), SecretStr(SMTP_PASSWORD))
        assert server.auth.attempts, "AUTH must have happened"
    assert result.ok, result.message
    assert result.message == f"SMTP login to 127.0.0.1:{server.port} accepted"


@pytest.mark.parametrize("security", [Security.PLAIN, Security.STARTTLS, Security.TLS])
def test_smtp_wrong_password(dovecot: LocalDovecot, security: Security) -> None:
    wrong = "wrong-SecretStr-55"
    with smtp_server(dovecot, security, auth_require_tls=False) as server:
        result = check_smtp(server.endpoint(dovecot.ca_file), SecretStr(wrong))
    assert (result.ok, result.problem, result.service) == (False, Problem.AUTHENTICATION, "smtp")
    assert f"Authentication failed for {SMTP_USER} on 127.0.0.1" in result.message
    assert_clean(result, wrong, SMTP_PASSWORD)


@pytest.mark.parametrize("security", [Security.STARTTLS, Security.TLS])
def test_smtp_untrusted_certificate(dovecot: LocalDovecot, security: Security) -> None:
    with smtp_server(dovecot, security) as server:
        result = check_smtp(server.endpoint(None), SecretStr(SMTP_PASSWORD))
        assert server.auth.attempts == []
    assert result.problem is Problem.CERTIFICATE, result.message
    assert_clean(result, SMTP_PASSWORD)


def test_smtp_starttls_missing_is_refused_never_plaintext(dovecot: LocalDovecot) -> None:
    with smtp_server(dovecot, Security.PLAIN, auth_require_tls=False) as server:
        endpoint = server.endpoint(dovecot.ca_file, security=Security.STARTTLS)
        result = check_smtp(endpoint, SecretStr(SMTP_PASSWORD))
        assert server.auth.attempts == [], "the password must not be sent in plaintext"
    assert (result.problem, result.code) == (Problem.TLS, "smtp_starttls_missing")
    assert "does not offer STARTTLS" in result.message and "never falls back" in result.message
    assert_clean(result, SMTP_PASSWORD)


def test_smtp_plain_against_server_requiring_tls_for_auth(dovecot: LocalDovecot) -> None:
    with smtp_server(dovecot, Security.PLAIN, auth_require_tls=True) as server:
        result = check_smtp(server.endpoint(dovecot.ca_file), SecretStr(SMTP_PASSWORD))
        assert server.auth.attempts == []
    assert (result.problem, result.code) == (Problem.AUTHENTICATION, "smtp_auth_unavailable")
    assert "offers no password login on this connection" in result.message


def test_smtp_implicit_tls_against_plain_server(dovecot: LocalDovecot) -> None:
    with smtp_server(dovecot, Security.PLAIN, auth_require_tls=False) as server:
        result = check_smtp(server.endpoint(dovecot.ca_file, security=Security.TLS), SecretStr(SMTP_PASSWORD))
    assert (result.problem, result.code) == (Problem.TLS, "smtp_tls_failed"), result.message
    assert "465 is usually implicit TLS" in result.message
    assert_clean(result, SMTP_PASSWORD)


def test_smtp_connection_refused_and_timeout(dovecot: LocalDovecot) -> None:
    port = free_port()
    refused = check_smtp(
        SmtpEndpoint("127.0.0.1", port, Security.STARTTLS, SMTP_USER, allow_private_hosts=True),
        SecretStr(SMTP_PASSWORD),
    )
    assert refused.problem is Problem.PORT
    assert refused.code == "connection_refused"
    with silent_listener() as listener:
        silent = SmtpEndpoint(
            "127.0.0.1",
            listener.getsockname()[1],
            Security.PLAIN,
            SMTP_USER,
            timeout=0.5,
            allow_private_hosts=True,
        )
        timed_out = check_smtp(silent, SecretStr(SMTP_PASSWORD))
    assert timed_out.problem is Problem.TIMEOUT, timed_out.message
    assert timed_out.code == "connection_timed_out"
    assert "did not answer within 0.5 s" in timed_out.message


def test_smtp_blocked_hosts(dovecot: LocalDovecot) -> None:
    metadata = check_smtp(
        SmtpEndpoint("169.254.169.254", 587, Security.STARTTLS, SMTP_USER, allow_private_hosts=True),
        SecretStr(SMTP_PASSWORD),
    )
    assert metadata.problem is Problem.BLOCKED_HOST
    assert "cloud metadata" in metadata.message
    with smtp_server(dovecot, Security.PLAIN, auth_require_tls=False) as server:
        loopback = check_smtp(
            server.endpoint(None, allow_private_hosts=False, security=Security.PLAIN),
            SecretStr(SMTP_PASSWORD),
        )
        assert server.auth.attempts == []
    assert loopback.problem is Problem.BLOCKED_HOST
    assert "loopback" in loopback.message


# ---------------------------------------------------------------------------------------------
# IMAP + SMTP together (the verifier crm.admin receives)


def test_verify_connection_reports_smtp_problem(mailbox_user: MailboxUser, settings: Settings) -> None:
    dovecot = mailbox_user.dovecot
    with smtp_server(dovecot, Security.STARTTLS) as server:
        base = ConnectionSettings(
            imap_host="127.0.0.1",
            imap_port=dovecot.ssl_port or 0,
            imap_security=Security.TLS,
            username=mailbox_user.name,
            password=SecretStr(mailbox_user.password),
            ca_file=str(dovecot.ca_file),
            smtp_host="127.0.0.1",
            smtp_port=server.port,
            smtp_security=Security.STARTTLS,
            smtp_username=SMTP_USER,
            smtp_password=SecretStr(SMTP_PASSWORD),
        )
        good = verify_connection(base, config=settings)
        bad = verify_connection(replace(base, smtp_password=SecretStr("nope-nope")), config=settings)
    assert good.ok, good.message
    assert good.message.startswith("IMAP: Logged in; INBOX found, Sent folder: Sent. SMTP: SMTP login")
    assert (bad.ok, bad.problem, bad.service) == (False, Problem.AUTHENTICATION, "smtp")
    assert bad.code == "auth_failed"
    assert bad.message.startswith("IMAP: Logged in")
    assert_clean(bad, "nope-nope", mailbox_user.password, SMTP_PASSWORD)
