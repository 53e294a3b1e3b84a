"""The harness itself: Dovecot's oauth2 passdb takes the test server's tokens, refuses revoked
and expired ones, and reports the server being down as [UNAVAILABLE]."""

from __future__ import annotations

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import IMAPClientError

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
