"""SMTP login check with the stdlib `smtplib`: connect, secure, log in, quit. Nothing is sent.

The same rules as the IMAP side (`sync.imap`):

* the host is resolved and checked against blocked ranges before any connection
  (`sync.netguard.check_host`), so the check cannot probe internal networks;
* certificates are always verified (a private CA through `ca_file`), TLS 1.2 at least;
* STARTTLS is required when configured: a server that does not offer it is refused, never used in
  plaintext; plaintext only when the account says `plain`;
* every socket has a timeout;
* library errors are translated into `sync.errors` here, with messages that never contain the
  password or anything the server sent (its banner or reply text may come from anything
  listening on that port).
"""

from __future__ import annotations

import contextlib
import smtplib
import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from core.connection import BearerToken, Credential
from core.errors import InvalidInput
from core.types import Security
from sync import errors
from sync.netguard import check_host, pinned_context


class SmtpStartTlsMissing(errors.SyncError, InvalidInput):
    """STARTTLS was asked for but the server does not offer it."""

    code_name = "smtp_starttls_missing"
    transient = False

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host=host, port=port)


class SmtpTlsFailed(errors.TlsFailed):
    """The TLS handshake with the SMTP server failed (not a certificate problem)."""

    code_name = "smtp_tls_failed"


class SmtpAuthUnavailable(errors.SyncError, InvalidInput):
    """The server offers no login we can use on this connection."""

    code_name = "smtp_auth_unavailable"
    transient = False

    def __init__(self, host: str, port: int) -> None:
        super().__init__(host=host, port=port)


class SmtpRejected(errors.SyncError, InvalidInput):
    """The server refused the session or answered something we cannot use (most often: this
    is not the provider's submission server)."""

    code_name = "smtp_rejected"

    def __init__(self, host: str, port: int, doing: str) -> None:
        super().__init__(host=host, port=port, doing=doing)


# What smtplib's login() can do; a server offering none of them cannot be logged in to.
_MECHANISMS = frozenset({"CRAM-MD5", "PLAIN", "LOGIN"})
_OAUTH_MECHANISMS = frozenset({"XOAUTH2", "OAUTHBEARER"})


@dataclass(frozen=True, slots=True)
class SmtpEndpoint:
    host: str
    port: int
    security: Security
    username: str
    ca_file: str | None = None
    timeout: float = 15.0
    allow_private_hosts: bool = False


def _timed_out(exc: BaseException) -> bool:
    """smtplib reports a read timeout as 'server disconnected'; the TimeoutError is its context."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


@contextmanager
def _translate(endpoint: SmtpEndpoint, doing: str) -> Iterator[None]:
    """Library and socket errors -> `sync.errors`; `str()` of smtplib errors (server text) is
    never used."""
    host, port = endpoint.host, endpoint.port
    try:
        yield
    except errors.SyncError:
        raise
    except smtplib.SMTPAuthenticationError as exc:
        raise errors.AuthFailed(host, endpoint.username) from exc
    except smtplib.SMTPServerDisconnected as exc:
        if _timed_out(exc):
            raise errors.ConnectionTimedOut(host, port, endpoint.timeout) from exc
        raise errors.ConnectionLost(host, f"the server closed the connection while {doing}") from exc
    except smtplib.SMTPNotSupportedError as exc:
        raise SmtpAuthUnavailable(host, port) from exc
    except smtplib.SMTPException as exc:
        raise SmtpRejected(host, port, doing) from exc
    except ssl.SSLCertVerificationError as exc:
        raise errors.CertificateUntrusted(host, port, exc.verify_message or "verification failed") from exc
    except ssl.SSLError as exc:
        raise SmtpTlsFailed(host, port, exc.reason or "handshake failed") from exc
    except socket.gaierror as exc:
        raise errors.HostNotFound(host) from exc
    except ConnectionRefusedError as exc:
        raise errors.ConnectionRefused(host, port) from exc
    except TimeoutError as exc:
        raise errors.ConnectionTimedOut(host, port, endpoint.timeout) from exc
    except OSError as exc:
        raise errors.ConnectionLost(host, f"{type(exc).__name__} while {doing}") from exc


def authenticate(client: smtplib.SMTP, endpoint: SmtpEndpoint, credential: Credential) -> None:
    """AUTH with a password (smtplib's login), or with an OAuth2 access token: XOAUTH2, or
    OAUTHBEARER (RFC 7628) when offered and XOAUTH2 is not. smtplib's debug output stays off
    (level 0), so the AUTH line with the token is never printed. Raises `SmtpAuthUnavailable`
    when the server offers no mechanism we can use, or smtplib's errors."""
    offered = set(client.esmtp_features.get("auth", "").upper().split())
    client.set_debuglevel(0)
    if not isinstance(credential, BearerToken):
        if not offered & _MECHANISMS:
            raise SmtpAuthUnavailable(endpoint.host, endpoint.port)
        client.login(endpoint.username, credential.get_secret_value())
        return
    if not offered & _OAUTH_MECHANISMS:
        raise SmtpAuthUnavailable(endpoint.host, endpoint.port)
    bearer = f"auth=Bearer {credential.token.get_secret_value()}\x01\x01"
    if "XOAUTH2" in offered:
        mechanism, initial = "XOAUTH2", f"user={endpoint.username}\x01{bearer}"
    else:
        gs2 = endpoint.username.replace("=", "=3D").replace(",", "=2C")
        mechanism, initial = "OAUTHBEARER", f"n,a={gs2},\x01{bearer}"

    def answer(challenge: bytes | None = None) -> str:
        # A refused token gets a 334 with an error JSON; the client answers with an empty
        # line and the server then sends its 535 (RFC 7628 3.2.3, Google's XOAUTH2 doc).
        return initial if challenge is None else ""

    client.auth(mechanism, answer, initial_response_ok=True)


def smtp_login(endpoint: SmtpEndpoint, password: Credential) -> None:
    """Open, secure, log in and quit. Raises a `SyncError` subclass on any failure."""
    address = check_host(endpoint.host, endpoint.port, allow_private=endpoint.allow_private_hosts)
    context = pinned_context(endpoint.host, endpoint.ca_file)
    client: smtplib.SMTP | None = None
    try:
        with _translate(endpoint, "connecting"):
            # The constructor connects and reads the greeting; on a bad greeting it closes itself.
            if endpoint.security is Security.TLS:
                client = smtplib.SMTP_SSL(address, endpoint.port, timeout=endpoint.timeout, context=context)
            else:
                client = smtplib.SMTP(address, endpoint.port, timeout=endpoint.timeout)
        with _translate(endpoint, "greeting the server"):
            client.ehlo()
        if endpoint.security is Security.STARTTLS:
            # Checked explicitly: smtplib's own refusal would read as "no login offered".
            if not client.has_extn("starttls"):
                raise SmtpStartTlsMissing(endpoint.host, endpoint.port)
            with _translate(endpoint, "starting TLS"):
                client.starttls(context=context)
                client.ehlo()  # capabilities after STARTTLS differ (RFC 3207 4.2)
        with _translate(endpoint, "logging in"):
            authenticate(client, endpoint, password)
        # Logged in is what we wanted to know; a server hanging up on QUIT changes nothing.
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
    finally:
        if client is not None:
            client.close()
