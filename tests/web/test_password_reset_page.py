"""A forgotten password in a real headless Chromium: "Forgot your password?" on the sign-in page,
the link mailed through the send queue to a real aiosmtpd and opened from the received mail, the
new password chosen on the page (the strength rule, the two fields compared), then signing in
with it; the used link refused afterwards."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from playwright.sync_api import Page, expect
from pydantic import SecretStr
from sqlalchemy import Engine

from core.db import session_scope
from core.settings import get_settings
from core.types import Security
from crm import auth
from devtools.devmail import LocalDovecot
from sync.send_queue import work_queue
from tests.crm.world import World, build_world
from tests.outbound.smtp import SmtpServer, recording_smtp
from tests.serving import served_app
from tests.web.browsing import PASSWORD, Watch, chromium

NEW = "a much longer new password"


@pytest.fixture
def world(sqlite_db: Engine) -> World:
    w = build_world(sqlite_db)
    with session_scope(sqlite_db) as s:
        auth.set_password(
            session=s, caller=w.caller("alice"), user_id=w.users["alice"], password=SecretStr(PASSWORD)
        )
    return w


@pytest.fixture
def system_smtp(dovecot: LocalDovecot) -> Iterator[SmtpServer]:
    with recording_smtp(dovecot, Security.STARTTLS) as smtp:
        settings = get_settings()
        settings.system_smtp_host, settings.system_smtp_port = "127.0.0.1", smtp.port
        settings.system_smtp_security, settings.system_smtp_ca_file = "starttls", str(dovecot.ca_file)
        settings.system_smtp_username, settings.system_smtp_password = smtp.username, SecretStr(smtp.password)
        settings.system_from_address = "notifications@crm-inbox.test"
        yield smtp


@pytest.fixture
def base_url(world: World, system_smtp: SmtpServer) -> Iterator[str]:
    with served_app() as url:
        get_settings().public_url = url  # the mailed link points at this server
        yield url


@pytest.fixture
def page(base_url: str) -> Iterator[Page]:
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 375, "height": 740})
        yield page


def test_forgotten_password_from_the_sign_in_page(
    base_url: str, page: Page, sqlite_db: Engine, system_smtp: SmtpServer
) -> None:
    watch = Watch(page)
    page.goto(f"{base_url}/login")
    page.get_by_role("link", name="Forgot your password?").click()
    page.get_by_label("E-mail").fill("alice@acme.test")
    page.get_by_role("button", name="Mail me a reset link").click()
    expect(page.locator("#reset-notice")).to_have_text(
        "If an account uses this address, a link to choose a new password was mailed to it."
    )

    assert work_queue(db=sqlite_db, settings=get_settings()).sent == 1
    (received,) = system_smtp.recorder.received
    mail = message_from_bytes(received.data, policy=policy.default)
    assert isinstance(mail, EmailMessage)
    text = mail.get_body(("plain",))
    assert text is not None
    (link,) = re.findall(re.escape(base_url) + r"/reset-password\?token=\S+", text.get_content())

    page.goto(link)
    expect(page.locator("#reset-form")).to_contain_text("Choose a new password for alice@acme.test")
    page.get_by_label("New password").fill(NEW)
    page.get_by_label("The same again").fill(NEW + "!")
    page.get_by_role("button", name="Set the new password").click()
    expect(page.locator("#reset-error")).to_have_text("The two passwords differ.")
    page.get_by_label("New password").fill(NEW)
    page.get_by_label("The same again").fill(NEW)
    page.get_by_role("button", name="Set the new password").click()
    expect(page.locator("#reset-notice")).to_have_text("Your password was changed. Sign in with it now.")

    page.get_by_role("link", name="Back to sign-in").click()
    page.get_by_label("E-mail").fill("alice@acme.test")
    page.get_by_label("Password").fill(NEW)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/")

    page.goto(link)  # used: refused in words, with the way to a new one
    expect(page.locator("#reset-error")).to_contain_text("was used already")
    expect(page.get_by_role("link", name="Ask for a new link")).to_be_visible()
    assert watch.errors == [] and watch.dialogs == [] and watch.remote() == []
