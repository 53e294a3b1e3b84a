"""An aiosmtpd that takes XOAUTH2 and OAUTHBEARER logins, each token checked against the test
authorization server's token table (what introspection would answer), and keeps what it got."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from tests.oauth.authserver import AuthServer
from tests.sync.test_checks import free_port


@dataclass
class OAuthSmtpHandler:
    auth: AuthServer
    received: list[tuple[str, list[str], bytes]] = field(default_factory=list)
    logins: list[tuple[str, str, bool]] = field(default_factory=list)  # mechanism, user, accepted

    async def _check(self, server: Any, mechanism: str, args: list[str]) -> AuthResult:
        raw = base64.b64decode(args[1]) if len(args) > 1 else b""
        parts = raw.decode("utf-8", "replace").split("\x01")
        if mechanism == "XOAUTH2":
            user = next((p[5:] for p in parts if p.startswith("user=")), "")
        else:  # OAUTHBEARER: "n,a=user," then key=value pairs (RFC 7628 3.1)
            user = parts[0].split("a=", 1)[1].rstrip(",") if "a=" in parts[0] else ""
        token = next((p[12:] for p in parts if p.startswith("auth=Bearer ")), "")
        ok = bool(user) and self.auth.active_user(token) == user
        self.logins.append((mechanism, user, ok))
        if not ok:
            # RFC 7628 3.2.2: an error challenge, the client answers with an empty response.
            await server.challenge_auth(json.dumps({"status": "invalid_token"}))
        return AuthResult(success=ok, handled=False)

    async def auth_XOAUTH2(self, server: Any, args: list[str]) -> AuthResult:
        return await self._check(server, "XOAUTH2", args)

    async def auth_OAUTHBEARER(self, server: Any, args: list[str]) -> AuthResult:
        return await self._check(server, "OAUTHBEARER", args)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.original_content)))
        return "250 2.0.0 Ok: queued"


@dataclass
class OAuthSmtp:
    port: int
    handler: OAuthSmtpHandler


@contextlib.contextmanager
def oauth_smtp(auth: AuthServer, *, only: str | None = None) -> Iterator[OAuthSmtp]:
    """Plain SMTP on loopback offering XOAUTH2 and OAUTHBEARER (`only`: just that one)."""
    handler = OAuthSmtpHandler(auth)
    port = free_port()
    exclude = ["LOGIN", "PLAIN"]
    if only == "OAUTHBEARER":
        exclude.append("XOAUTH2")
    elif only == "XOAUTH2":
        exclude.append("OAUTHBEARER")
    controller = Controller(
        handler,
        hostname="127.0.0.1",
        port=port,
        decode_data=False,
        auth_require_tls=False,
        auth_exclude_mechanism=exclude,
    )
    controller.start()
    try:
        yield OAuthSmtp(port=port, handler=handler)
    finally:
        controller.stop()
