"""The OAuth routes over HTTP: providers, start, callback (bound to the credential that started
it), account views with the OAuth details, disconnect; no token in any response or redirect."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlparse

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from core.db import session_scope
from core.settings import Settings
from crm import auth
from inbox_api.app import create_app
from tests.factories import caller_of, make_tenant, make_user
from tests.oauth.authserver import CLIENT_SECRET, AuthServer
from tests.oauth.conftest import PROVIDER, OAuthUser
from tests.oauth.consent import allow
from tests.oauth.smtp import oauth_smtp


@pytest.fixture
def client(sqlite_db: Engine, testidp: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(), base_url="http://testserver") as c:
        yield c


def _bearer(db: Engine, tenant: int, user_id: int) -> dict[str, str]:
    with session_scope(db) as s:
        created = auth.create_token(
            session=s, caller=caller_of(db, tenant, user_id), user_id=user_id, name="t"
        )
    return {"Authorization": f"Bearer {created.secret.get_secret_value()}"}


def test_connect_by_consent_over_the_api_without_leaking_a_token(
    sqlite_db: Engine, client: TestClient, auth_server: AuthServer, oauth_user: OAuthUser
) -> None:
    tenant = make_tenant(sqlite_db)
    admin = make_user(sqlite_db, tenant, "admin@acme.test", is_admin=True)
    headers = _bearer(sqlite_db, tenant, admin)
    bodies: list[str] = []

    def call(method: str, url: str, **kw: Any) -> Any:
        response = client.request(method, url, headers=headers, follow_redirects=False, **kw)
        bodies.append(response.text + json.dumps(dict(response.headers)))
        return response

    providers = client.get("/api/oauth/providers", headers=headers).json()
    assert {"name": PROVIDER, "label": "Test IdP"} in providers
    refused = call("post", "/api/oauth/start", json={"provider": "google"})
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "oauth_provider_not_configured"
    started = call("post", "/api/oauth/start", json={"provider": PROVIDER})
    assert started.status_code == 200, started.text
    url = started.json()["authorization_url"]
    assert "redirect_uri=http%3A%2F%2Ftestserver%2Fapi%2Foauth%2Fcallback" in url
    back = urlparse(allow(url, oauth_user.email))
    # Another credential (another token of the same admin) cannot finish this consent.
    other_headers = _bearer(sqlite_db, tenant, admin)
    stolen = client.get(f"{back.path}?{back.query}", headers=other_headers, follow_redirects=False)
    assert (
        stolen.status_code == 303 and stolen.headers["location"] == "/admin?oauth_error=oauth_state_invalid"
    )
    done = call("get", f"{back.path}?{back.query}")
    assert done.status_code == 303
    location = done.headers["location"]
    assert location.startswith("/admin?oauth_connected=")
    account_id = int(location.rsplit("=", 1)[1])
    accounts = call("get", "/api/accounts").json()
    (view,) = accounts
    assert view["oauth"]["provider"] == PROVIDER and view["oauth"]["state"] == "connected"
    assert view["oauth"]["scopes"] == ["mail", "openid", "email"]
    call("get", f"/api/accounts/{account_id}")
    # New SMTP settings are never saved by an account edit (a login proves nothing about
    # sending): they go through the SMTP setup and its test mail; nothing was changed.
    refused_smtp = call(
        "patch",
        f"/api/accounts/{account_id}",
        json={"smtp_host": "127.0.0.1", "smtp_port": 2525, "smtp_security": "plain", "check": True},
    )
    assert refused_smtp.status_code == 422, refused_smtp.text
    problem = refused_smtp.json()["error"]
    assert problem["code"] == "smtp_setup_required"
    assert problem["fields"]["setup"] == f"PUT /api/accounts/{account_id}/smtp"
    assert call("get", f"/api/accounts/{account_id}").json()["smtp"] is None
    # The SMTP set-up of an OAuth account sends its test mail with the account's token.
    with oauth_smtp(auth_server) as smtp:
        body = {"host": "127.0.0.1", "port": smtp.port, "security": "plain", "test_to": "check@globex.test"}
        with_password = call("put", f"/api/accounts/{account_id}/smtp", json=body | {"password": "app-pw"})
        assert (
            with_password.status_code == 422
            and with_password.json()["error"]["code"] == "smtp_password_oauth"
        )
        set_up = call("put", f"/api/accounts/{account_id}/smtp", json=body)
        assert set_up.status_code == 200, set_up.text
        assert smtp.handler.logins == [("XOAUTH2", oauth_user.email, True)]
        assert [rcpt for _, rcpt, _ in smtp.handler.received] == [["check@globex.test"]]
    assert call("get", f"/api/accounts/{account_id}").json()["smtp"] == f"127.0.0.1:{smtp.port} (plain)"
    # The same callback again: used up.
    again = call("get", f"{back.path}?{back.query}")
    assert again.headers["location"] == "/admin?oauth_error=oauth_state_invalid"
    result = call("post", f"/api/accounts/{account_id}/oauth/disconnect").json()
    assert result == {
        "account_id": account_id,
        "provider": PROVIDER,
        "revoked": True,
        "revocation_supported": True,
    }
    after = call("get", f"/api/accounts/{account_id}").json()
    assert after["status"] == "needs_reconnect" and after["oauth"]["state"] == "needs_reconnect"
    everything = "\n".join(bodies)
    for secret in (*auth_server.access, *auth_server.refresh, CLIENT_SECRET):
        assert secret not in everything
    # A member cannot connect new mailboxes.
    member = make_user(sqlite_db, tenant, "mia@acme.test")
    response = client.post(
        "/api/oauth/start", json={"provider": PROVIDER}, headers=_bearer(sqlite_db, tenant, member)
    )
    assert response.status_code == 403
