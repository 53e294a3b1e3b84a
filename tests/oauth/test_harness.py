"""The harness itself: Dovecot's oauth2 passdb takes the test server's tokens, refuses revoked
and expired ones, and reports the server being down as [UNAVAILABLE]."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError, LoginError
from pydantic import SecretStr

from core.connection import BearerToken
from core.types import Security
from sync import imap
from tests.oauth.authserver import AuthServer
from tests.oauth.conftest import OAuthUser


def _login(user: OAuthUser, token: str) -> None:
    with IMAPClient(user.dovecot.host, port=user.dovecot.port, ssl=False, timeout=10) as conn:
        conn.oauth2_login(user.email, token)
        conn.logout()


def test_dovecot_checks_tokens_by_introspection(auth_server: AuthServer, oauth_user: OAuthUser) -> None:
    access, refresh = auth_server.issue(oauth_user.email)
    _login(oauth_user, access)
    # The plain password still works (the passwd-file passdb is pinned to PLAIN/LOGIN).
    with oauth_user.dovecot.client(oauth_user.email):
        pass
    auth_server.revoke_family_of(refresh)
    with pytest.raises(IMAPClientError, match="AUTHENTICATIONFAILED"):
        _login(oauth_user, access)
    access, _ = auth_server.issue(oauth_user.email)
    auth_server.down = True
    with pytest.raises(IMAPClientError, match="UNAVAILABLE"):
        _login(oauth_user, access)


class _ScriptedImap:
    """What `sync.imap._authenticate` uses of an IMAPClient: a server offering `mechanisms`
    and answering AUTHENTICATE with an error challenge, then NO (as Dovecot does for a bad
    token). Dovecot offers both mechanisms, so the OAUTHBEARER-only case needs this."""

    def __init__(self, *mechanisms: str) -> None:
        self.caps = [b"IMAP4rev1", *(f"AUTH={m}".encode() for m in mechanisms)]
        self.sent: list[tuple[str, str]] = []
        self._imap = self

    def capabilities(self) -> list[bytes]:
        return self.caps

    def authenticate(self, mechanism: str, answer: Callable[[bytes], str]) -> tuple[str, list[bytes]]:
        self.sent.append((mechanism, answer(b"")))
        self.sent.append((mechanism, answer(b'{"status":"invalid_token"}')))
        return "NO", [b"[AUTHENTICATIONFAILED] Authentication failed."]


@pytest.mark.parametrize(
    ("offered", "expected"),
    [(("XOAUTH2", "OAUTHBEARER"), "XOAUTH2"), (("OAUTHBEARER",), "OAUTHBEARER"), ((), "XOAUTH2")],
)
def test_imap_picks_xoauth2_else_oauthbearer_and_never_resends_the_token(
    offered: tuple[str, ...], expected: str
) -> None:
    client = _ScriptedImap(*offered)
    endpoint = imap.ImapEndpoint(host="h", port=143, security=Security.PLAIN, username="ann@example.test")
    with pytest.raises(LoginError):
        imap._authenticate(client, endpoint, BearerToken(SecretStr("at-123")))
    (mech, first), (_, second) = client.sent
    assert mech == expected and "auth=Bearer at-123\x01\x01" in first
    assert ("user=ann@example.test\x01" if expected == "XOAUTH2" else "n,a=ann@example.test,\x01") in first
    assert second == ""  # the error challenge is acknowledged with an empty response
