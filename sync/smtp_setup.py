"""The test mail of an SMTP set-up (`crm.outbound.smtp_setup`), and why it failed, in words.

`explain` is pure: it turns a `SendOutcome` (our error code, the server's reply code and text,
the step that failed) plus the candidate settings into one `Cause` and a sentence a user can act
on. The server's reply is used to *choose* the cause (enhanced status codes, RFC 3463) but never
copied into the sentence: it goes to the mail log only.

Port and encryption mismatches are the most common set-up mistake (RFC 8314: 465 is implicit TLS,
RFC 6409: 587 is STARTTLS). They show up as a TLS failure (implicit TLS against a server that
greets in plain text: "wrong version number") or as silence (STARTTLS or plain against a server
waiting for a TLS handshake). Silence is ambiguous, so the sender confirms it with a bare TLS
handshake on the same port (nothing is sent; certificate checks stay on: a certificate error
also proves that the port speaks TLS).

An OAuth account's test (`SmtpTest.oauth_account_id`) logs in with the account's access token
(XOAUTH2, or OAUTHBEARER), fetched and refreshed by `sync.oauth_tokens` as the send queue does:
a token refused at AUTH is refreshed once and tried again (nothing was sent before AUTH).
"""

from __future__ import annotations

import enum
import re
import socket
import ssl
from collections.abc import Callable

from sqlalchemy import Engine

from core.connection import BearerToken, Credential
from core.errors import DomainError
from core.secrets import SecretBox
from core.settings import Settings, get_settings
from core.types import Security
from crm.outbound.smtp_setup import SmtpTest, SmtpTestOutcome
from sync import errors, oauth_tokens
from sync.netguard import check_host, pinned_context
from sync.smtp_check import SmtpEndpoint
from sync.smtp_send import SendOutcome, send_message


class Cause(enum.StrEnum):
    AUTHENTICATION = "authentication"
    AUTH_DISABLED = "smtp_auth_disabled"  # Microsoft 365: authenticated SMTP off for the mailbox
    AUTH_UNAVAILABLE = "auth_unavailable"
    OAUTH = "oauth"  # the account's OAuth grant gave no usable token (reconnect it)
    CERTIFICATE = "certificate"
    PORT_MISMATCH = "port_encryption_mismatch"
    TLS = "tls"
    RELAY_DENIED = "relay_denied"
    SENDER_REFUSED = "sender_refused"
    RECIPIENT_REFUSED = "recipient_refused"
    TOO_LARGE = "message_too_large"
    HOST = "host"
    BLOCKED_HOST = "blocked_host"
    CONNECTION_REFUSED = "connection_refused"
    TIMEOUT = "timeout"
    CONNECTION = "connection"
    TEMPORARY = "temporary"  # a 4xx: try again later
    REFUSED = "refused"  # any other refusal


_ENHANCED = re.compile(r"\b([245])\.(\d{1,3})\.(\d{1,3})\b")
_GOOGLE = ("gmail.com", "googlemail.com", "google.com")
_MICROSOFT = ("office365.com", "outlook.com", "hotmail.com", "live.com")


def _provider(host: str) -> str | None:
    host = host.lower().rstrip(".")
    if any(host == d or host.endswith("." + d) for d in _GOOGLE):
        return "google"
    if any(host == d or host.endswith("." + d) for d in _MICROSOFT):
        return "microsoft"
    return None


def _enhanced(reply: str) -> str | None:
    match = _ENHANCED.search(reply)
    return ".".join(match.groups()) if match else None


def _usual(security: Security) -> str:
    return {
        Security.TLS: "implicit TLS is usually port 465",
        Security.STARTTLS: "STARTTLS is usually port 587",
        Security.PLAIN: "plain SMTP is usually port 25 (and rarely allows logging in)",
    }[security]


_PAIRS = "Port 587 goes with STARTTLS, port 465 with implicit TLS."


def _auth(test: SmtpTest, outcome: SendOutcome) -> tuple[Cause, str]:
    reply = outcome.reply.lower()
    provider = _provider(test.host)
    if "5.7.139" in reply or "smtpclientauthentication" in reply:
        return Cause.AUTH_DISABLED, (
            f"{test.host} refused the login of {test.username}: authenticated SMTP (SMTP AUTH) is "
            "disabled for this mailbox or for the whole Microsoft 365 tenant. A Microsoft 365 admin "
            "can turn it on for the mailbox (Microsoft 365 admin center > Users > Mail > Manage "
            "email apps > Authenticated SMTP)"
            + ("." if test.oauth_account_id is not None else ", or connect the account with OAuth.")
        )
    if test.oauth_account_id is not None:
        return Cause.AUTHENTICATION, (
            f"{test.host} refused the OAuth token of {test.username}, even after a refresh. Check "
            "that this is the provider's own SMTP server and the login is the signed-in address; "
            "otherwise reconnect the account with OAuth (the access may have been revoked, or "
            "granted without sending mail)."
        )
    words = (
        f"{test.host} refused the username or password of {test.username}. Check them; if the "
        "provider password was changed or two-step verification is on, create a new app password "
        "(a changed password revokes the old app passwords) and enter it here."
    )
    if provider == "google" or "5.7.9" in reply or "application-specific password" in reply:
        words += (
            " Google: with 2-Step Verification on, Gmail only takes an app password "
            "(Google Account > Security > App passwords)."
        )
    elif provider == "microsoft":
        words += (
            " Microsoft 365: authenticated SMTP must also be on for the mailbox (Microsoft 365 "
            "admin center > Users > Mail > Manage email apps)."
        )
    return Cause.AUTHENTICATION, words


def explain(test: SmtpTest, outcome: SendOutcome, *, speaks_tls: bool | None = None) -> tuple[Cause, str]:
    """The cause of a failed test mail and a sentence saying what to do. `speaks_tls`: whether a
    bare TLS handshake on the port succeeded (asked only when the server stayed silent)."""
    host, port, security = test.host, test.port, test.security
    code = outcome.error_code or ""
    reply = outcome.reply
    status = _enhanced(reply)
    if code == errors.AuthFailed.code_name:
        return _auth(test, outcome)
    if code == "smtp_auth_unavailable":
        return Cause.AUTH_UNAVAILABLE, (
            f"{host}:{port} offers no login on this connection. If it is a receiving (MX) server, "
            f"use the provider's submission server instead; {_PAIRS}"
        )
    if code == errors.CertificateUntrusted.code_name:
        return Cause.CERTIFICATE, (
            f"The TLS certificate of {host}:{port} is not trusted "
            f"({outcome.params.get('reason', 'verification failed')}). Check the host name; if the "
            "server uses a private certificate authority, give its CA file to the account. "
            "Verification is never turned off."
        )
    if code == "smtp_starttls_missing":
        return Cause.PORT_MISMATCH, (
            f"{host}:{port} does not offer STARTTLS. If this port uses implicit TLS (usually 465), "
            f"choose implicit TLS. {_PAIRS}"
        )
    if code == "smtp_tls_failed":
        if security is Security.TLS:
            return Cause.PORT_MISMATCH, (
                f"{host}:{port} does not speak implicit TLS: it answered in plain text. Choose "
                f"STARTTLS for this port (usual for 587). {_PAIRS}"
            )
        return Cause.TLS, f"Could not set up TLS with {host}:{port}. {_PAIRS}"
    if code in (errors.ConnectionTimedOut.code_name, errors.ConnectionLost.code_name):
        if security is not Security.TLS and speaks_tls:
            return Cause.PORT_MISMATCH, (
                f"{host}:{port} expects implicit TLS from the first byte (usual for 465), but "
                f"{security.value} was chosen: choose implicit TLS. {_PAIRS}"
            )
        if code == errors.ConnectionTimedOut.code_name:
            return Cause.TIMEOUT, (
                f"{host}:{port} did not answer in time. The server may be down or a firewall drops "
                f"the traffic; {_usual(security)}."
            )
        return Cause.CONNECTION, f"The connection to {host}:{port} was lost; try again. {_PAIRS}"
    if code == errors.ConnectionRefused.code_name:
        return Cause.CONNECTION_REFUSED, (
            f"{host}:{port} refused the connection: nothing listens on that port or a firewall "
            f"rejects it. {_PAIRS}"
        )
    if code == errors.HostNotFound.code_name:
        return Cause.HOST, f"The host name {host!r} could not be resolved. Check its spelling."
    if code == errors.BlockedHost.code_name:
        return Cause.BLOCKED_HOST, (
            f"Connecting to {host!r} is not allowed by this deployment "
            f"({outcome.params.get('reason', 'blocked address')})."
        )
    if outcome.code == 552 or status in ("5.3.4", "5.2.3", "4.3.4"):
        return Cause.TOO_LARGE, (
            f"{host} refused the mail as too large. The server's size limit is below the mail's "
            "size; send smaller attachments, or ask the provider for its limit."
        )
    if outcome.transient:
        return Cause.TEMPORARY, (
            f"{host} refused the mail for now (a temporary {outcome.code or ''} answer). Try the "
            "test again in a few minutes."
        )
    if code == "sender_refused" or status == "5.7.60" or "send as" in reply.lower():
        return Cause.SENDER_REFUSED, (
            f"{host} does not let {test.username} send as {test.sender}. Log in as the owner of "
            "that address, or give the login the right to send as it (Microsoft 365: Send As; "
            "Gmail: a verified 'Send mail as' address)."
        )
    if code == "recipient_refused":
        if "relay" in reply.lower() or status in ("5.7.1", "5.7.0", "5.7.54"):
            return Cause.RELAY_DENIED, (
                f"{host} refused to relay to {test.recipient}: it only passes on mail for its own "
                "domains, or only for logged-in senders. Use the provider's submission server "
                f"with a login. {_PAIRS}"
            )
        return Cause.RECIPIENT_REFUSED, (
            f"{host} refused the test address {test.recipient}. Check it, or give another address."
        )
    return Cause.REFUSED, f"{host} refused the test mail (reply {outcome.code or 'none'})."


def _speaks_tls(test: SmtpTest, timeout: float, allow_private: bool) -> bool:
    """A bare TLS handshake on the port (nothing sent): did the other side answer in TLS?"""
    try:
        address = check_host(test.host, test.port, allow_private=allow_private)
        with socket.create_connection((address, test.port), timeout=timeout) as sock:
            context = pinned_context(test.host, test.ca_file)
            with context.wrap_socket(sock, server_hostname=test.host):
                return True
    except ssl.SSLCertVerificationError:
        return True  # it spoke TLS; the certificate is another matter
    except (OSError, errors.SyncError):
        return False


def _oauth_failure(test: SmtpTest, exc: DomainError) -> SmtpTestOutcome:
    """No usable token (grant revoked or expired, provider down): nothing was sent."""
    return SmtpTestOutcome(
        ok=False,
        message=(
            f"No usable OAuth token for {test.username}: {exc.message.rstrip('.')}. Reconnect the "
            "account with OAuth, then run the SMTP set-up again."
        ),
        cause=Cause.OAUTH.value,
        error_code=exc.code,
        params=dict(exc.fields),
    )


def send_test(
    test: SmtpTest,
    *,
    config: Settings | None = None,
    db: Engine | None = None,
    box: SecretBox | None = None,
) -> SmtpTestOutcome:
    """Send the test mail with the candidate settings. An OAuth account's test needs `db` and
    `box` (where its token is read and refreshed)."""
    config = config or get_settings()
    endpoint = SmtpEndpoint(
        host=test.host,
        port=test.port,
        security=test.security,
        username=test.username,
        ca_file=test.ca_file,
        timeout=config.connect_timeout_seconds,
        allow_private_hosts=config.allow_private_hosts,
    )

    def send(credential: Credential) -> SendOutcome:
        outcome = send_message(
            endpoint, credential, sender=test.sender, recipients=[test.recipient], raw=test.raw
        )
        if outcome.error_code == errors.AuthFailed.code_name and isinstance(credential, BearerToken):
            # Refused at AUTH, before MAIL: a second try with a refreshed token sends nothing twice.
            raise _RefusedToken(outcome)
        return outcome

    if test.oauth_account_id is None:
        outcome = send(test.password)
    else:
        if db is None or box is None:
            raise ValueError("an OAuth account's SMTP test needs the database and the secret box")
        source = oauth_tokens.TokenSource(db, box, config)
        try:
            outcome = oauth_tokens.with_credential(source, test.oauth_account_id, True, "", send)
        except _RefusedToken as refused:
            outcome = refused.outcome
        except DomainError as exc:
            return _oauth_failure(test, exc)
    if outcome.ok:
        return SmtpTestOutcome(
            ok=True,
            message=f"{test.host} accepted the test mail to {test.recipient}; the settings were saved.",
            code=outcome.code,
            reply=outcome.reply,
        )
    speaks_tls = None
    if test.security is not Security.TLS and outcome.error_code in (
        "connection_timed_out",
        "connection_lost",
    ):
        speaks_tls = _speaks_tls(test, config.connect_timeout_seconds, config.allow_private_hosts)
    cause, words = explain(test, outcome, speaks_tls=speaks_tls)
    return SmtpTestOutcome(
        ok=False,
        message=words,
        cause=cause.value,
        code=outcome.code,
        reply=outcome.reply,
        error_code=outcome.error_code,
        params=dict(outcome.params),
    )


class _RefusedToken(errors.AuthFailed):
    """A token refused at AUTH: `with_credential` refreshes once on `AuthFailed`; the second
    refusal carries the server's reply (for the cause and the mail log) out of it."""

    def __init__(self, outcome: SendOutcome) -> None:
        super().__init__(str(outcome.params.get("host", "")), str(outcome.params.get("username", "")))
        self.outcome = outcome


def make_test_sender(
    config: Settings | None = None, *, db: Engine | None = None, box: SecretBox | None = None
) -> Callable[[SmtpTest], SmtpTestOutcome]:
    """The sender `crm.outbound.smtp_setup.save_smtp_settings` takes, bound to the settings (and,
    for OAuth accounts, to the database and secret box their tokens are read from)."""
    return lambda test: send_test(test, config=config, db=db, box=box)
