"""The consent flow end to end in headless Chromium: the admin page's "Connect" button, the
provider's consent page (the loopback test server), the callback, the account listed with its
OAuth state; then "Disconnect". No token reaches the page."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, expect
from pydantic import SecretStr
from sqlalchemy import Engine

from core.db import session_scope
from core.settings import Settings
from crm import auth
from tests.factories import caller_of, make_tenant, make_user
from tests.oauth.authserver import AuthServer
from tests.oauth.conftest import OAuthUser
from tests.serving import served_app
from tests.web.browsing import chromium as launched_chromium

PASSWORD = "correct horse battery"


@pytest.fixture
def chromium() -> Iterator[Browser]:
    with launched_chromium() as browser:
        yield browser


def test_connect_google_style_mailbox_from_the_admin_page(
    sqlite_db: Engine, testidp: Settings, auth_server: AuthServer, oauth_user: OAuthUser, chromium: Browser
) -> None:
    tenant = make_tenant(sqlite_db)
    admin = make_user(sqlite_db, tenant, "admin@acme.test", is_admin=True, first_name="Ada")
    with session_scope(sqlite_db) as s:
        auth.set_password(
            session=s, caller=caller_of(sqlite_db, tenant, admin), user_id=admin, password=SecretStr(PASSWORD)
        )
    with served_app() as base_url:
        page = chromium.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{base_url}/login")
        page.get_by_label("E-mail").fill("admin@acme.test")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(f"{base_url}/")
        page.goto(f"{base_url}/admin")
        page.get_by_role("button", name="Connect Test IdP account").click()
        # At the provider: the consent page.
        page.wait_for_url(f"{auth_server.base_url}/authorize?**")
        page.locator("#username").fill(oauth_user.email)
        page.get_by_role("button", name="Allow").click()
        # Back through the callback to the admin page, the mailbox connected.
        page.wait_for_url(f"{base_url}/admin?oauth_connected=*")
        expect(page.locator("#admin-status")).to_contain_text("Mailbox connected")
        row = page.locator("#accounts tr", has_text=oauth_user.email)
        expect(row).to_contain_text("testidp OAuth, connected")
        expect(row).to_contain_text("scopes: mail openid email")
        html = page.content()
        for token in (*auth_server.access, *auth_server.refresh):
            assert token not in html and token not in page.url
        row.get_by_role("button", name="Disconnect").click()
        expect(page.locator("#admin-status")).to_contain_text("disconnected; its mail is kept")
        expect(page.locator("#accounts tr", has_text=oauth_user.email)).to_contain_text(
            "needs to be reconnected"
        )
        assert auth_server.revocations  # revoked at the provider
        assert errors == []
