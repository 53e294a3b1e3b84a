"""The tests' own OAuth2 world: an authorization server on loopback, a Dovecot whose `oauth2`
passdb introspects tokens at it, and a generic provider `testidp` pointing at both."""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from core.settings import Settings, get_settings, reset_settings
from devtools.devmail import LocalDovecot, ensure_dovecot_installed
from tests.oauth.authserver import CLIENT_ID, CLIENT_SECRET, AuthServer, running

PROVIDER = "testidp"


@pytest.fixture(scope="session")
def _auth_server_session() -> Iterator[AuthServer]:
    with running(AuthServer()) as server:
        yield server


@pytest.fixture
def auth_server(_auth_server_session: AuthServer) -> AuthServer:
    """The session's server with its knobs back to normal."""
    server = _auth_server_session
    server.down, server.access_seconds, server.token_delay = False, 3600.0, 0.0
    server.device_interval = 5
    return server


@pytest.fixture(scope="session")
def oauth_dovecot(
    tmp_path_factory: pytest.TempPathFactory, _auth_server_session: AuthServer
) -> Iterator[LocalDovecot]:
    ensure_dovecot_installed()
    server = LocalDovecot(
        tmp_path_factory.mktemp("dovecot-oauth"),
        tls=True,
        oauth2_introspection_url=f"{_auth_server_session.base_url}/introspect",
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass(frozen=True)
class OAuthUser:
    """A Dovecot user whose login name is its e-mail address (as at Google and Microsoft)."""

    email: str
    password: str
    dovecot: LocalDovecot


@pytest.fixture
def oauth_user(oauth_dovecot: LocalDovecot) -> OAuthUser:
    if not oauth_dovecot.running:
        oauth_dovecot.start()
    email = f"u{uuid.uuid4().hex[:10]}@example.test"
    password = secrets.token_urlsafe(12)
    oauth_dovecot.add_user(email, password)
    with oauth_dovecot.client(email) as conn:  # first login creates the special folders
        for folder in ("INBOX", "Sent"):
            conn.folder_status(folder, ["MESSAGES"])
    return OAuthUser(email=email, password=password, dovecot=oauth_dovecot)


def provider_config(
    auth: AuthServer, dovecot: LocalDovecot, *, smtp_port: int | None = None, revocation: bool = True
) -> dict[str, object]:
    return {
        "label": "Test IdP",
        "authorization_url": f"{auth.base_url}/authorize",
        "token_url": f"{auth.base_url}/token",
        "revocation_url": f"{auth.base_url}/revoke" if revocation else None,
        "userinfo_url": f"{auth.base_url}/userinfo",
        "device_authorization_url": f"{auth.base_url}/device_authorization",
        "scopes": ["mail", "openid", "email"],
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "imap_host": dovecot.host,
        "imap_port": dovecot.port,
        "imap_security": "plain",
        "smtp_host": "127.0.0.1" if smtp_port else None,
        "smtp_port": smtp_port,
        "smtp_security": "plain" if smtp_port else None,
    }


@pytest.fixture
def testidp(
    settings: Settings, auth_server: AuthServer, oauth_dovecot: LocalDovecot, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Settings with the `testidp` provider configured (IMAP on the OAuth Dovecot)."""
    monkeypatch.setenv(
        "CRM_INBOX_OAUTH_PROVIDERS", json.dumps({PROVIDER: provider_config(auth_server, oauth_dovecot)})
    )
    reset_settings()
    return get_settings()
