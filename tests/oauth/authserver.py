"""An OAuth2 authorization server on loopback for the tests: no test talks to Google or Microsoft.

A small Starlette app served by uvicorn (authlib's server classes need a Flask or Django request
object; for five endpoints a Starlette app reads shorter than the glue). It does what the
providers do and what Dovecot's `oauth2` passdb asks of it:

* ``GET /authorize``: a consent page (PKCE S256 required); ``POST /authorize`` with the user's
  name redirects to ``redirect_uri?code=...&state=...``.
* ``POST /token``: ``authorization_code`` (client secret, redirect URI and code verifier
  checked; a code works once) and ``refresh_token`` with rotation: every refresh returns a new
  refresh token and retires the old one; using a retired one revokes the whole family
  (``invalid_grant``), as Google and Microsoft do for stolen tokens.
* ``POST /revoke`` (RFC 7009), ``POST /introspect`` (RFC 7662: always 200, ``active: false`` for
  an unknown, revoked or expired token), ``GET /userinfo`` (the e-mail address).

Knobs for the tests: ``access_seconds`` (token lifetime), ``down`` (answer 503 everywhere),
``token_delay`` (slow token endpoint, to make refreshes overlap), and counters.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from html import escape
from urllib.parse import urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route

CLIENT_ID = "crm-inbox-test"
CLIENT_SECRET = "test-client-secret-value"


@dataclass
class Family:
    """One consent: its user and scopes; all tokens issued from it die together."""

    username: str
    scopes: str
    revoked: bool = False


@dataclass
class AccessToken:
    family: Family
    expires: float
    revoked: bool = False


@dataclass
class RefreshToken:
    family: Family
    retired: bool = False


@dataclass
class Code:
    family: Family
    redirect_uri: str
    challenge: str
    used: bool = False


@dataclass
class DeviceGrant:
    """RFC 8628: a device code waiting for its user to approve it at /device."""

    user_code: str
    scopes: str
    family: Family | None = None  # set once approved
    denied: bool = False
    used: bool = False


@dataclass
class AuthServer:
    access_seconds: float = 3600.0
    down: bool = False
    token_delay: float = 0.0
    access: dict[str, AccessToken] = field(default_factory=dict)
    refresh: dict[str, RefreshToken] = field(default_factory=dict)
    codes: dict[str, Code] = field(default_factory=dict)
    devices: dict[str, DeviceGrant] = field(default_factory=dict)
    device_interval: int = 5
    device_polls: int = 0
    token_requests: int = 0
    refresh_requests: int = 0
    introspections: int = 0
    revocations: list[str] = field(default_factory=list)
    reuse_detected: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    base_url: str = ""

    # -- what the tests call directly ----------------------------------------------------------
    def issue(self, username: str, scopes: str = "mail") -> tuple[str, str]:
        """An access and a refresh token for `username`, as a finished consent would give."""
        family = Family(username=username, scopes=scopes)
        return self._new_access(family), self._new_refresh(family)

    def active_user(self, token: str) -> str | None:
        """The user of a valid access token (what introspection says), or None."""
        with self.lock:
            found = self.access.get(token)
            if found is None or found.revoked or found.family.revoked or found.expires < time.time():
                return None
            return found.family.username

    def expire_access_tokens(self) -> None:
        with self.lock:
            for token in self.access.values():
                token.expires = 0

    def revoke_family_of(self, refresh_token: str) -> None:
        with self.lock:
            self.refresh[refresh_token].family.revoked = True

    def approve_device(self, user_code: str, username: str, *, deny: bool = False) -> None:
        """What the user does on their other device: enter the code, allow (or deny)."""
        with self.lock:
            device = next(d for d in self.devices.values() if d.user_code == user_code)
            if deny:
                device.denied = True
            else:
                device.family = Family(username=username, scopes=device.scopes)

    def current_refresh_tokens(self) -> list[str]:
        with self.lock:
            return [t for t, r in self.refresh.items() if not r.retired and not r.family.revoked]

    # -- internals -----------------------------------------------------------------------------
    def _new_access(self, family: Family) -> str:
        token = "at-" + secrets.token_urlsafe(24)
        self.access[token] = AccessToken(family=family, expires=time.time() + self.access_seconds)
        return token

    def _new_refresh(self, family: Family) -> str:
        token = "rt-" + secrets.token_urlsafe(24)
        self.refresh[token] = RefreshToken(family=family)
        return token

    def _answer(self, family: Family, refresh: str) -> JSONResponse:
        return JSONResponse(
            {
                "access_token": self._new_access(family),
                "token_type": "Bearer",
                "expires_in": int(self.access_seconds),
                "refresh_token": refresh,
                "scope": family.scopes,
            },
            headers={"Cache-Control": "no-store"},
        )

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/authorize", self._authorize_page, methods=["GET"]),
                Route("/authorize", self._authorize_submit, methods=["POST"]),
                Route("/token", self._token, methods=["POST"]),
                Route("/revoke", self._revoke, methods=["POST"]),
                Route("/introspect", self._introspect, methods=["POST"]),
                Route("/userinfo", self._userinfo, methods=["GET"]),
                Route("/device_authorization", self._device_authorization, methods=["POST"]),
                Route("/device", self._device_approve, methods=["POST"]),
            ]
        )

    async def _authorize_page(self, request: Request) -> Response:
        if self.down:
            return Response("down", status_code=503)
        query = request.query_params
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return Response("PKCE S256 required", status_code=400)
        if query.get("client_id") != CLIENT_ID or query.get("response_type") != "code":
            return Response("unknown client", status_code=400)
        hidden = "".join(
            f'<input type="hidden" name="{escape(k)}" value="{escape(v)}">' for k, v in query.items()
        )
        return HTMLResponse(
            "<!doctype html><title>Test provider</title><h1>Allow crm-inbox to read and send your mail?</h1>"
            f'<form method="post" action="/authorize">{hidden}'
            '<label>User <input name="username" id="username"></label>'
            '<button type="submit" id="allow">Allow</button></form>'
        )

    async def _authorize_submit(self, request: Request) -> Response:
        form = await request.form()
        values = {k: str(v) for k, v in form.items()}
        family = Family(username=values["username"], scopes=values.get("scope", ""))
        code = "code-" + secrets.token_urlsafe(16)
        with self.lock:
            self.codes[code] = Code(
                family=family, redirect_uri=values["redirect_uri"], challenge=values["code_challenge"]
            )
        target = values["redirect_uri"] + "?" + urlencode({"code": code, "state": values.get("state", "")})
        return RedirectResponse(target, status_code=302)

    @staticmethod
    def _error(error: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": error}, status_code=status)

    @staticmethod
    def _client_ok(request: Request, form: dict[str, str]) -> bool:
        header = request.headers.get("authorization", "")
        if header.lower().startswith("basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return user == CLIENT_ID and password == CLIENT_SECRET
        return form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET

    async def _token(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        with self.lock:
            self.token_requests += 1
        if self.down:
            return Response("provider down", status_code=503)
        if self.token_delay:
            time.sleep(self.token_delay)  # blocks this server's loop: requests queue up
        if not self._client_ok(request, form):
            return self._error("invalid_client", 401)
        grant = form.get("grant_type")
        with self.lock:
            if grant == "urn:ietf:params:oauth:grant-type:device_code":
                self.device_polls += 1
                device = self.devices.get(form.get("device_code", ""))
                if device is None or device.used:
                    return self._error("expired_token")
                if device.denied:
                    return self._error("access_denied")
                if device.family is None:
                    return self._error("authorization_pending")
                device.used = True
                return self._answer(device.family, self._new_refresh(device.family))
            if grant == "authorization_code":
                code = self.codes.get(form.get("code", ""))
                if code is None or code.used or code.redirect_uri != form.get("redirect_uri"):
                    return self._error("invalid_grant")
                code.used = True
                digest = hashlib.sha256(form.get("code_verifier", "").encode()).digest()
                if base64.urlsafe_b64encode(digest).rstrip(b"=").decode() != code.challenge:
                    return self._error("invalid_grant")
                return self._answer(code.family, self._new_refresh(code.family))
            if grant == "refresh_token":
                self.refresh_requests += 1
                old = self.refresh.get(form.get("refresh_token", ""))
                if old is None or old.family.revoked:
                    return self._error("invalid_grant")
                if old.retired:
                    # A rotated-out token used again: someone kept a copy. Kill the family.
                    self.reuse_detected += 1
                    old.family.revoked = True
                    return self._error("invalid_grant")
                old.retired = True
                return self._answer(old.family, self._new_refresh(old.family))
        return self._error("unsupported_grant_type")

    async def _device_authorization(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        if not self._client_ok(request, form):
            return self._error("invalid_client", 401)
        device_code, user_code = "dc-" + secrets.token_urlsafe(24), secrets.token_hex(4).upper()
        with self.lock:
            self.devices[device_code] = DeviceGrant(user_code=user_code, scopes=form.get("scope", ""))
        return JSONResponse(
            {
                "device_code": device_code,
                "user_code": user_code,
                "verification_uri": f"{self.base_url}/device",
                "expires_in": 600,
                "interval": self.device_interval,
            }
        )

    async def _device_approve(self, request: Request) -> Response:
        """The user, on their other device, enters the code and allows (or denies) access."""
        form = {k: str(v) for k, v in (await request.form()).items()}
        try:
            self.approve_device(
                form.get("user_code", ""), form.get("username", ""), deny=bool(form.get("deny"))
            )
        except StopIteration:
            return Response("unknown code", status_code=404)
        return Response("done")

    async def _revoke(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        if self.down:
            return Response("down", status_code=503)
        token = form.get("token", "")
        with self.lock:
            self.revocations.append(token)
            if token in self.refresh:
                self.refresh[token].family.revoked = True
            elif token in self.access:
                self.access[token].revoked = True
        return Response(status_code=200)  # RFC 7009 2.2: 200 for unknown tokens too

    async def _introspect(self, request: Request) -> Response:
        form = {k: str(v) for k, v in (await request.form()).items()}
        with self.lock:
            self.introspections += 1
        if self.down:
            return Response("down", status_code=503)
        user = self.active_user(form.get("token", ""))
        if user is None:
            return JSONResponse({"active": False})
        return JSONResponse({"active": True, "username": user, "token_type": "Bearer"})

    async def _userinfo(self, request: Request) -> Response:
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        user = self.active_user(token)
        if user is None:
            return self._error("invalid_token", 401)
        email = user if "@" in user else f"{user}@example.test"
        return JSONResponse({"email": email, "email_verified": True, "sub": user})


@contextmanager
def running(server: AuthServer) -> Iterator[AuthServer]:
    """Serve on a free loopback port; `server.base_url` is set while it runs."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    uv = uvicorn.Server(
        uvicorn.Config(
            server.app(),
            host="127.0.0.1",
            port=port,
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,  # Dovecot keeps introspection connections open
        )
    )
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not uv.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert uv.started, "the test authorization server did not start"
    server.base_url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        uv.should_exit = True
        thread.join(10)
