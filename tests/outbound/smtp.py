"""A recording aiosmtpd for the outbound tests: plain (AUTH without TLS), STARTTLS (required
before AUTH) or implicit TLS, with the suite's test CA, scripted refusals, and every accepted
message kept with its envelope."""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from core.types import Security
from devtools.devmail import LocalDovecot
from tests.sync.test_checks import SMTP_PASSWORD, SMTP_USER, Authenticator, free_port, server_tls_context


@dataclass
class ScriptedAuthenticator(Authenticator):
    """Refuses a wrong login with the given reply (e.g. Microsoft 365's 5.7.139)."""

    refusal: str = "535 5.7.8 Authentication credentials invalid"

    def __call__(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        result = super().__call__(server, session, envelope, mechanism, auth_data)
        if result.success:
            return result
        return AuthResult(success=False, handled=False, message=self.refusal)


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes


@dataclass
class Recorder:
    """aiosmtpd handler: refuses the recipients in `refuse` with their reply, answers DATA with
    the next scripted reply in `data_replies` (then accepts), keeps what it accepted."""

    received: list[Received] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    refuse_senders: dict[str, str] = field(default_factory=dict)
    data_replies: deque[str] = field(default_factory=deque)
    delay: float = 0.0  # seconds "processing" each message after its final dot

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if address in self.refuse_senders:
            return self.refuse_senders[address]
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.data_replies:
            return self.data_replies.popleft()
        if self.delay:
            await asyncio.sleep(self.delay)
        self.received.append(
            Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content))
        )
        return "250 2.0.0 Ok: queued as TEST42"


@dataclass
class SmtpServer:
    port: int
    security: Security
    recorder: Recorder
    username: str = SMTP_USER
    password: str = SMTP_PASSWORD


@contextlib.contextmanager
def recording_smtp(
    dovecot: LocalDovecot, security: Security, *, auth_refusal: str | None = None
) -> Iterator[SmtpServer]:
    recorder = Recorder()
    port = free_port()
    kwargs: dict[str, Any] = {
        "hostname": "127.0.0.1",
        "port": port,
        "authenticator": ScriptedAuthenticator(refusal=auth_refusal) if auth_refusal else Authenticator(),
        "decode_data": False,
    }
    if security is Security.PLAIN:
        kwargs["auth_require_tls"] = False
    elif security is Security.STARTTLS:
        kwargs.update(tls_context=server_tls_context(dovecot), require_starttls=True, auth_require_tls=True)
    else:
        kwargs.update(ssl_context=server_tls_context(dovecot), auth_require_tls=False)
    controller = Controller(recorder, **kwargs)
    controller.start()
    try:
        yield SmtpServer(port=port, security=security, recorder=recorder)
    finally:
        controller.stop()
