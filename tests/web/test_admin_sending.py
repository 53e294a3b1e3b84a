"""The admin page's outbound forms in a real headless Chromium (as tests/web/test_browser.py): an
account's SMTP saved only after the test mail reached a real aiosmtpd (each refusal in words,
nothing saved), and the tenant's notification mail: own SMTP, off switch, a branded address with
its verification link and rate-limited resend, template wording refused with an unknown merge
tag, previewed in a sandboxed frame, saved and reset."""

from __future__ import annotations

import re
from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from playwright.sync_api import Page, Route, expect
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from core.db import session_scope
from core.types import Security
from crm import auth
from crm.models import MailAccount, OutboundMail, TenantMailSettings
from crm.outbound import senders
from crm.outbound.views import MailKind
from devtools.devmail import LocalDovecot
from tests.crm.world import World, build_world
from tests.outbound.smtp import SmtpServer, recording_smtp
from tests.serving import served_app
from tests.sync.test_checks import SMTP_PASSWORD, SMTP_USER
from tests.web.browsing import (
    PASSWORD,
    Watch,
    chromium,
    no_horizontal_scroll,
    unnamed_controls,
    wait_until,
)


@pytest.fixture
def world(sqlite_db: Engine, dovecot: LocalDovecot) -> World:
    w = build_world(sqlite_db)
    with session_scope(sqlite_db) as s:
        auth.set_password(
            session=s, caller=w.caller("admin"), user_id=w.users["admin"], password=SecretStr(PASSWORD)
        )
        s.get_one(MailAccount, w.accounts["A"]).ca_file = str(dovecot.ca_file)  # the suite's private CA
    return w


@pytest.fixture
def base_url(world: World) -> Iterator[str]:
    with served_app() as url:
        yield url


@pytest.fixture
def smtp(dovecot: LocalDovecot) -> Iterator[SmtpServer]:
    with recording_smtp(dovecot, Security.STARTTLS) as server:
        yield server


@pytest.fixture
def page(base_url: str) -> Iterator[Page]:
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        yield page


def _verification_token(db: Engine, address: str) -> str:
    with Session(db) as s:
        rows = s.exec(
            select(OutboundMail)
            .where(OutboundMail.kind == MailKind.VERIFICATION)
            .order_by(col(OutboundMail.id).desc())
        ).all()
    mail = message_from_bytes(next(r for r in rows if r.recipients == [address]).raw, policy=policy.default)
    assert isinstance(mail, EmailMessage)
    body = mail.get_body(("plain",))
    assert body is not None
    found = re.search(r"/verify-sender\?token=(\S+)", body.get_content())
    assert found is not None
    return found.group(1)


def test_smtp_and_notification_mail_forms(
    base_url: str, page: Page, world: World, sqlite_db: Engine, smtp: SmtpServer
) -> None:
    db = sqlite_db
    watch = Watch(page)
    page.goto(f"{base_url}/login")
    page.get_by_label("E-mail").fill("admin@acme.test")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/")
    page.goto(f"{base_url}/admin")

    # SMTP of account A: each refusal in words, nothing saved; then saved after the test mail.
    page.get_by_label("Account to set up").select_option(label="a@acme.test")
    expect(page.locator("#smtp-current")).to_contain_text("Current SMTP of a@acme.test: not set")
    expect(page.locator("#smtp-pairs")).to_contain_text("Port 587 goes with STARTTLS")
    page.get_by_label("Outgoing server").fill("127.0.0.1")
    page.get_by_label("Encryption").select_option("tls")
    page.get_by_label("Outgoing port").fill(str(smtp.port))
    page.get_by_label("SMTP login").fill(SMTP_USER)
    page.get_by_label("App password").fill(SMTP_PASSWORD)
    page.get_by_label("Send the test mail to").fill("check@globex.test")
    result = page.locator("#smtp-result")
    save = page.get_by_role("button", name="Send a test mail and save")
    save.click()
    expect(result).to_contain_text("does not speak implicit TLS")
    expect(result).to_contain_text("The SMTP settings were not saved")
    expect(result).to_have_class(re.compile(r"\berror\b"))
    page.get_by_label("Encryption").select_option("starttls")
    page.get_by_label("App password").fill("not-the-app-password")
    save.click()
    expect(result).to_contain_text("refused the username or password")
    with Session(db) as s:
        assert s.get_one(MailAccount, world.accounts["A"]).smtp_host is None
    assert smtp.recorder.received == []
    page.get_by_label("App password").fill(SMTP_PASSWORD)
    save.click()
    expect(result).to_contain_text(f"Saved: 127.0.0.1:{smtp.port} (starttls) as {SMTP_USER}")
    expect(page.locator("#smtp-current")).to_contain_text(f"127.0.0.1:{smtp.port} (starttls)")
    expect(page.get_by_label("App password")).to_have_value("")  # write-only
    (test_mail,) = smtp.recorder.received
    assert test_mail.rcpt_tos == ["check@globex.test"]
    assert SMTP_PASSWORD not in page.content()

    # Notification mail through that account's SMTP, then turned off. (The save above reloads
    # the accounts, then the sending state: checked once that reload is in, not the one before.)
    watch.settled()
    current = page.locator("#sending-current")
    expect(current).to_contain_text("the deployment's SMTP")
    page.get_by_label("The tenant's own SMTP").check()
    page.get_by_label("Account whose SMTP sends").select_option(label="a@acme.test")
    page.get_by_role("button", name="Save", exact=True).click()
    expect(current).to_contain_text("<a@acme.test> through the account's SMTP.")
    page.get_by_label("Send notification mail").uncheck()
    page.get_by_role("button", name="Save", exact=True).click()
    expect(current).to_contain_text("notification mail is off")
    with Session(db) as s:
        settings = s.get_one(TenantMailSettings, world.tenant)
        assert (settings.mode.value, settings.own_account_id, settings.notifications_enabled) == (
            "own",
            world.accounts["A"],
            False,
        )

    # A branded address: verification link mailed, resend rate-limited, verified, then used.
    page.get_by_label("New address").fill("news@acme.test")
    page.get_by_role("button", name="Mail a verification link").click()
    pending = page.locator("#sender-pending li", has_text="news@acme.test")
    expect(pending).to_have_count(1)
    pending.get_by_role("button", name="Resend the link").click()
    expect(page.locator("#sending-result")).to_contain_text("before sending the link again")
    with session_scope(db) as s:
        senders.confirm(session=s, token=_verification_token(db, "news@acme.test"))
    page.reload()
    expect(page.locator("#sender-verified")).to_contain_text("Verified: news@acme.test.")
    expect(page.locator("#sender-pending li")).to_have_count(0)
    page.get_by_label("A verified address of yours").check()
    page.get_by_label("Send notification mail").check()
    page.get_by_role("button", name="Save", exact=True).click()
    expect(current).to_contain_text("Acme <news@acme.test> through the deployment's SMTP.")

    # Template wording: an unknown merge tag refused at save, a preview in the sandboxed frame.
    page.get_by_label("Event").select_option("mentioned")
    expect(page.locator("#template-tags")).to_contain_text("{{ note_excerpt }}")
    expect(page.locator("#template-state")).to_have_text("The built-in wording.")
    page.get_by_label("Subject").fill("{{ nope }}")
    page.get_by_role("button", name="Save wording").click()
    outcome = page.locator("#template-result")
    expect(outcome).to_contain_text("merge tags this event does not have: nope")
    page.get_by_label("Subject").fill("{{ actor_name }} pinged you")
    page.get_by_label("HTML", exact=True).fill("<p>{{ note_excerpt }}</p><script>alert('x')</script>")
    page.get_by_role("button", name="Preview").click()
    expect(page.locator("#template-preview-subject")).to_have_text("Subject: Leo Lane pinged you")
    frame = page.frame_locator("#template-preview")
    expect(frame.locator("p")).to_contain_text("@mia can you take this one?")
    assert frame.locator("script").count() == 0
    page.get_by_role("button", name="Save wording").click()
    expect(outcome).to_have_text("Wording saved.")
    expect(page.locator("#template-state")).to_have_text("Your wording.")
    page.get_by_role("button", name="Back to the built-in wording").click()
    expect(page.locator("#template-state")).to_have_text("The built-in wording.")
    expect(page.get_by_label("Subject")).to_have_value(re.compile(r"^\[\{\{ tenant_name \}\}\]"))

    assert unnamed_controls(page) == []
    page.set_viewport_size({"width": 375, "height": 740})
    assert no_horizontal_scroll(page), "the admin page scrolls sideways at 375 px"
    assert watch.errors == [] and watch.dialogs == [] and watch.remote() == []


def test_a_reload_under_way_never_undoes_the_senders_choice(base_url: str, page: Page) -> None:
    """The sending state is filled in by the page's reloads (its first, one after an SMTP save or
    a resend): one that answers after the admin chose a sender shows the state but keeps the
    choice (it used to put the saved one back, and a Save then sent that)."""
    watch = Watch(page)
    page.goto(f"{base_url}/login")
    page.get_by_label("E-mail").fill("admin@acme.test")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/")
    held: list[Route] = []
    page.route(lambda url: url.endswith("/api/sending"), lambda route: held.append(route))
    page.goto(f"{base_url}/admin")  # the sending state's answer is held back
    wait_until(page, lambda: bool(held), "the sending state was never asked for")
    page.get_by_label("A verified address of yours").check()
    with page.expect_response(lambda r: r.url.endswith("/api/sending")):
        held[0].continue_()
    expect(page.locator("#sending-current")).to_contain_text("Notification mail now goes from")
    watch.settled()
    assert page.get_by_label("A verified address of yours").is_checked()
    assert not page.get_by_label("The deployment's default sender, with your name").is_checked()
    assert watch.errors == []
