"""Hand one message to an account's SMTP server with the stdlib `smtplib`.

The connection rules are `sync.smtp_check`'s: the host is checked against blocked ranges before
any connection (`sync.netguard`), certificates are always verified (a private CA via `ca_file`),
STARTTLS is required when configured (never a silent plaintext fallback), every socket has a
timeout, and the password never reaches a message.

The result is a `SendOutcome`, not an exception: the queue needs the reply code (4xx: retry,
5xx: final) and the server's answer for the mail log. The session is driven step by step (MAIL,
RCPT each, DATA) instead of `sendmail()` so that

* a recipient refused with 5xx fails the whole mail before any body is sent (no half-delivered
  mail that a retry would duplicate for the accepted recipients);
* `before_data` runs just before DATA: the worker commits the `data` phase there, and may say
  the lease was lost (then nothing is sent);
* a connection lost after DATA began is reported as `send_uncertain`, never retried blindly
  (see `crm.outbound.queue`).
"""

from __future__ import annotations

import contextlib
import functools
import os
import smtplib
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from core.connection import Credential
from core.types import Security
from sync import errors
from sync.netguard import check_host, pinned_context
from sync.smtp_check import (
    SmtpAuthUnavailable,
    SmtpEndpoint,
    SmtpStartTlsMissing,
    SmtpTlsFailed,
    authenticate,
)


@dataclass(frozen=True, slots=True)
class SendOutcome:
    ok: bool
    transient: bool = False
    code: int | None = None
    reply: str = ""
    error_code: str | None = None
    params: dict[str, Any] = field(default_factory=dict)


def _text(reply: bytes | str) -> str:
    return reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)


def _by_code(code: int, reply: bytes | str, error_code: str, **params: Any) -> SendOutcome:
    """RFC 5321 4.2.1: 4yz is a transient negative completion, 5yz a permanent one."""
    return SendOutcome(
        ok=False,
        transient=400 <= code < 500,
        code=code,
        reply=_text(reply),
        error_code=error_code,
        params=params,
    )


def _from_error(exc: errors.SyncError) -> SendOutcome:
    """Our error; a refused login keeps the server's reply for the mail log and for the cause
    (Microsoft 365 says "5.7.139 ... SmtpClientAuthentication is disabled" there)."""
    cause = exc.__cause__
    if isinstance(cause, smtplib.SMTPResponseException):
        return SendOutcome(
            ok=False,
            transient=exc.transient,
            code=cause.smtp_code,
            reply=_text(cause.smtp_error),
            error_code=exc.code,
            params=dict(exc.fields),
        )
    return SendOutcome(ok=False, transient=exc.transient, error_code=exc.code, params=dict(exc.fields))


def _timed_out(exc: BaseException) -> bool:
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, TimeoutError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _network(endpoint: SmtpEndpoint, exc: BaseException, doing: str) -> errors.SyncError:
    """A socket/TLS/library failure (no reply code) -> our error."""
    host, port = endpoint.host, endpoint.port
    if isinstance(exc, ssl.SSLCertVerificationError):
        return errors.CertificateUntrusted(host, port, exc.verify_message or "verification failed")
    if isinstance(exc, ssl.SSLError):
        return SmtpTlsFailed(host, port, exc.reason or "handshake failed")
    if isinstance(exc, socket.gaierror):
        return errors.HostNotFound(host)
    if isinstance(exc, ConnectionRefusedError):
        return errors.ConnectionRefused(host, port)
    if isinstance(exc, TimeoutError) or _timed_out(exc):
        return errors.ConnectionTimedOut(host, port, endpoint.timeout)
    return errors.ConnectionLost(host, f"{type(exc).__name__} while {doing}")


@functools.lru_cache(maxsize=64)
def _cached_context(host: str, ca_file: str | None, ca_mtime: float) -> ssl.SSLContext:
    return pinned_context(host, ca_file)


def _context(endpoint: SmtpEndpoint) -> ssl.SSLContext:
    """The verifying TLS context of a host, built once per worker: loading the system's CA
    store costs ~0.2 s, most of a message's send time when built per message (bench/
    queue_bench.py). Keyed by the CA file's mtime too, so a replaced CA file is read again."""
    mtime = 0.0
    if endpoint.ca_file:
        with contextlib.suppress(OSError):
            mtime = os.stat(endpoint.ca_file).st_mtime
    return _cached_context(endpoint.host, endpoint.ca_file, mtime)


def _open(endpoint: SmtpEndpoint, password: Credential) -> smtplib.SMTP:
    """Connect, secure and log in; raises `SyncError` or `smtplib.SMTPResponseException`."""
    address = check_host(endpoint.host, endpoint.port, allow_private=endpoint.allow_private_hosts)
    context = _context(endpoint) if endpoint.security is not Security.PLAIN else None
    client: smtplib.SMTP | None = None
    doing = "connecting"
    try:
        if endpoint.security is Security.TLS:
            client = smtplib.SMTP_SSL(address, endpoint.port, timeout=endpoint.timeout, context=context)
        else:
            client = smtplib.SMTP(address, endpoint.port, timeout=endpoint.timeout)
        doing = "greeting the server"
        client.ehlo()
        if endpoint.security is Security.STARTTLS:
            if not client.has_extn("starttls"):
                raise SmtpStartTlsMissing(endpoint.host, endpoint.port)
            doing = "starting TLS"
            client.starttls(context=context)
            client.ehlo()  # capabilities after STARTTLS differ (RFC 3207 4.2)
        doing = "logging in"
        try:
            authenticate(client, endpoint, password)
        except smtplib.SMTPAuthenticationError as exc:
            if 400 <= exc.smtp_code < 500:
                raise  # "try again later" (454): a temporary refusal, not a wrong password
            raise errors.AuthFailed(endpoint.host, endpoint.username) from exc
        return client
    except BaseException as exc:
        if client is not None:
            client.close()
        if isinstance(exc, errors.SyncError | smtplib.SMTPResponseException):
            raise
        if isinstance(exc, smtplib.SMTPNotSupportedError):
            raise SmtpAuthUnavailable(endpoint.host, endpoint.port) from exc
        if isinstance(exc, OSError | smtplib.SMTPException):
            raise _network(endpoint, exc, doing) from exc
        raise


def send_message(
    endpoint: SmtpEndpoint,
    password: Credential,
    *,
    sender: str,
    recipients: Sequence[str],
    raw: bytes,
    before_data: Callable[[], bool] = lambda: True,
) -> SendOutcome:
    """One SMTP transaction for one message. Never raises for a server's or network's failure."""
    try:
        client = _open(endpoint, password)
    except errors.SyncError as exc:
        return _from_error(exc)
    except smtplib.SMTPResponseException as exc:
        return _by_code(exc.smtp_code, exc.smtp_error, "smtp_refused", step="session")
    data_started = False
    try:
        code, reply = client.mail(sender)
        if code != 250:
            return _by_code(code, reply, "sender_refused", sender=sender)
        refused: list[tuple[str, int, str]] = []
        for recipient in recipients:
            code, reply = client.rcpt(recipient)
            if code not in (250, 251):
                refused.append((recipient, code, _text(reply)))
        if refused:
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.rset()
            worst = max(refused, key=lambda r: r[1])  # one 5xx makes the whole mail final
            return _by_code(worst[1], worst[2], "recipient_refused", recipients=[r[0] for r in refused])
        if not before_data():
            with contextlib.suppress(smtplib.SMTPException, OSError):
                client.rset()
            return SendOutcome(ok=False, transient=True, error_code="lease_lost")
        data_started = True
        try:
            code, reply = client.data(raw)
        except smtplib.SMTPDataError as exc:  # DATA itself refused (no 354): nothing was sent
            return _by_code(exc.smtp_code, exc.smtp_error, "message_refused")
        if code != 250:
            return _by_code(code, reply, "message_refused", size=len(raw))
        with contextlib.suppress(smtplib.SMTPException, OSError):
            client.quit()
        return SendOutcome(ok=True, code=code, reply=_text(reply))
    except (OSError, smtplib.SMTPException) as exc:
        if data_started:
            return SendOutcome(
                ok=False, transient=False, error_code="send_uncertain", params={"host": endpoint.host}
            )
        return _from_error(_network(endpoint, exc, "sending"))
    finally:
        client.close()
