"""The web page in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright's
Python client; never a downloaded browser) against the app served by uvicorn on loopback.

The browser is kept off the network: every host name resolves to nothing except 127.0.0.1, and
every request the page makes is recorded, so a test can prove none left for a remote host. The mail
frame is sandboxed, and Chromium does not report a sandboxed frame's requests to Playwright: what
hostile mail would fetch points at a "sender's" server on loopback whose own log is the proof.
"""

from __future__ import annotations

import email
import email.policy
import re
import struct
import threading
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from playwright.sync_api import Browser, Page, expect
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import Session, select

from core.db import session_scope
from core.types import Security, UidState
from crm import auth, records
from crm.models import FolderState, ImapUid, Message, OutboundMail, Thread
from tests.crm.world import T0, World, build_world
from tests.dovecot_fixtures import MailboxUser
from tests.outbound.smtp import recording_smtp
from tests.serving import served_app
from tests.sync.test_checks import SMTP_PASSWORD, SMTP_USER
from tests.web.browsing import (
    PASSWORD,
    SHOTS,
    TWO_FRAMES,
    Watch,
    chromium,
    no_horizontal_scroll,
    unnamed_controls,
)

# HTML mail that tries everything: none of it may run or reach the network. `{remote}` is the
# sender's server (see `sender_server`); every way of making the reader's browser call it is tried.
XSS_HTML = """
<p>Hello <b>team</b></p>
<script>alert('script')</script>
<img src="x" onerror="alert('onerror')">
<img src="{remote}/pixel.png?id=42" alt="tracker">
<img srcset="{remote}/srcset.png 1x" alt="srcset">
<picture><source srcset="{remote}/source.png"><img alt="picture"></picture>
<video poster="{remote}/poster.png"></video>
<table background="{remote}/table-bg.png"><tr><td>cell</td></tr></table>
<link rel="stylesheet" href="{remote}/sheet.css">
<style>@import url({remote}/import.css); p {{ background: url({remote}/style-bg.png) }}</style>
<a href="javascript:alert('link')">click</a>
<iframe srcdoc="<script>alert('srcdoc')</script>"></iframe>
<iframe src="{remote}/frame.html"></iframe>
<object data="{remote}/object.png"></object>
<embed src="{remote}/embed.png">
<svg><script>alert('svg')</script><image href="{remote}/svg.png"/></svg>
<math><mtext><table><mglyph><style><img src=x onerror=alert('mxss')></style></mglyph></table></mtext></math>
<div style="background:url({remote}/bg.png)">styled</div>
<meta http-equiv="refresh" content="0;url={remote}/refresh">
<base href="{remote}/">
<img src="relative.png" alt="relative">
<form action="{remote}/form"><input name="x"></form>
"""


def _png() -> bytes:
    """A valid 1x1 PNG: a request that got through would load and show."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


class SenderServer:
    """The hostile sender's web server on loopback (a port of its own, not the app's): it
    answers anything (an image, or a style sheet for .css) and logs every request it gets."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        seen = self.seen

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                seen.append(self.path)
                css = ".css" in self.path
                body, kind = (b"p { color: red }", "text/css") if css else (_png(), "image/png")
                self.send_response(200)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_POST = do_GET

            def log_message(self, *args: object) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()


@pytest.fixture
def sender_server() -> Iterator[SenderServer]:
    server = SenderServer()
    yield server
    server.close()


@pytest.fixture
def world(sqlite_db: Engine, sender_server: SenderServer) -> World:
    w = build_world(sqlite_db)
    with session_scope(sqlite_db) as s:
        for who in ("alice", "admin"):
            auth.set_password(
                session=s, caller=w.caller(who), user_id=w.users[who], password=SecretStr(PASSWORD)
            )
        xss = Message(
            tenant_id=w.tenant,
            message_id="<xss@mail.test>",
            content_hash="xss",
            subject="Re: Alpha",
            date=T0,
            from_email="mallory@evil.test",
            from_name="<img src=x onerror=alert('name')>",
            text_body="fallback",
            html_body=XSS_HTML.format(remote=sender_server.url),
            thread_id=w.threads["Alpha"],
        )
        s.add(xss)
        alpha = s.get_one(Thread, w.threads["Alpha"])
        alpha.message_count += 1
        s.add(alpha)
        s.flush()
        folder = s.exec(select(FolderState).where(FolderState.account_id == w.accounts["A"])).one()
        s.add(
            ImapUid(
                account_id=w.accounts["A"],
                folder_id=folder.id or 0,
                uidvalidity=1,
                uid=999,
                state=UidState.STORED,
                message_pk=xss.id,
            )
        )
    return w


@pytest.fixture
def base_url(world: World) -> Iterator[str]:
    with served_app() as url:
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """One Chromium for the module (each test opens its own pages, each with its own cookies)."""
    with chromium() as browser:
        yield browser


@pytest.fixture(autouse=True)
def _fresh_pages(browser: Browser) -> Iterator[None]:
    """Each test's pages closed after it: a page left open keeps polling a stopped server and
    has made a later test's click land on nothing."""
    yield
    for context in browser.contexts:
        context.close()


def _sign_in(page: Page, base_url: str, email: str) -> None:
    page.goto(f"{base_url}/")
    page.wait_for_url("**/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/")
    page.locator("#threads .thread").first.wait_for()


def test_triage_a_conversation(base_url: str, browser: Browser, world: World) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    watch = Watch(page)
    _sign_in(page, base_url, "alice@acme.test")
    expect(page.locator("#threads .thread .subject")).to_have_text(["Shared", "Alpha"])  # alice's only
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "inbox.png"))

    page.keyboard.press("j")  # the first conversation opens
    expect(page.locator("#conversation-subject")).to_have_text("Shared")
    page.get_by_role("button", name="Assign to me").click()
    expect(page.locator("#assignee")).to_have_value(str(world.users["alice"]))
    page.get_by_label("Internal note (@name mentions a colleague)").fill("@admin please check the price")
    page.get_by_role("button", name="Add note").click()
    page.locator(".note p", has_text="please check the price").wait_for()
    page.locator("#conversation").evaluate("pane => pane.scrollTo(0, 0)")  # back to the actions
    page.get_by_role("button", name="Close", exact=True).click()
    page.get_by_role("button", name="Reopen").wait_for()
    page.locator(".history summary").click()
    expect(page.locator(".history li", has_text="assigned it to")).to_have_count(1)
    expect(page.locator(".history li", has_text="set it closed")).to_have_count(1)

    # Views: the closed conversation left "All open" and shows under Closed.
    page.locator('#view-list [data-view="closed"]').click()
    expect(page.locator("#list-title")).to_have_text("Closed")
    page.locator("#threads .thread .subject", has_text="Shared").wait_for()
    # Search (full text): a word of a body.
    page.locator('#view-list [data-view="open"]').click()
    page.locator("#search-q").fill("alpha1")
    # The open view without the search also lists just Alpha: what is checked is the search's
    # own answer, once the page has handled it (and the Closed list, also one row, is gone).
    with page.expect_response(lambda r: "/api/threads?" in r.url and "q=alpha1" in r.url):
        page.locator("#search-q").press("Enter")
    watch.settled()
    expect(page.locator("#threads .thread .subject")).to_have_text(["Alpha"])
    # The help overlay lists the shortcuts.
    page.locator("body").click(position={"x": 5, "y": 300})
    page.keyboard.press("?")
    expect(page.locator("#help")).to_be_visible()
    expect(page.locator("#help")).to_contain_text("Assign to me")
    page.keyboard.press("Escape")
    expect(page.locator("#help")).to_be_hidden()
    assert watch.errors == [] and watch.dialogs == [] and watch.remote() == []


def test_hostile_mail_runs_nothing_and_calls_no_one(
    base_url: str, browser: Browser, world: World, sender_server: SenderServer
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    watch = Watch(page)
    refused: list[str] = []  # the frame's CSP refusals: what the sanitizer should have removed
    page.on("console", lambda m: refused.append(m.text) if "Content Security Policy" in m.text else None)
    _sign_in(page, base_url, "alice@acme.test")
    page.locator("#threads .thread", has_text="Alpha").click()
    # The frame first shown is replaced once the display (remote images counted) is in: checked
    # before, an empty frame still loading would pass every "nothing in it" check below.
    page.locator(".images-bar .show-images").wait_for()
    frame_element = page.locator("iframe.mail-frame").first
    assert frame_element.get_attribute("sandbox") == ""
    frame = frame_element.content_frame
    frame.locator("text=Hello").wait_for()
    # Loaded: every image, sheet and frame of the mail was fetched (or never asked for) by now.
    frame.locator("html").evaluate(
        "root => new Promise(done => root.ownerDocument.readyState === 'complete'"
        " ? done(null) : root.ownerDocument.defaultView.addEventListener('load', () => done(null)))"
    )
    assert frame.locator("script").count() == 0
    assert frame.locator("[onerror]").count() == 0
    # (The frame's own <meta> CSP and <base target> come from the app, not from the mail.)
    hostile_tags = "iframe, form, svg, math, object, embed, link, base[href], meta[http-equiv=refresh i]"
    assert frame.locator(hostile_tags).count() == 0
    # Each remote image is held back (no address left to load), and no style points anywhere.
    assert frame.locator('img[alt="tracker"]').get_attribute("src") is None
    assert frame.locator("html").evaluate("root => root.outerHTML").count(sender_server.url) == 0
    page.wait_for_timeout(500)  # room for a late attempt (a meta refresh, a lazy image)
    # The sender's server never heard from the reader: neither from the page nor from the
    # sandboxed frame (whose requests Playwright cannot see), nor through a redirect.
    assert sender_server.seen == [], sender_server.seen
    # Nothing was even tried and refused by the frame's CSP: the sanitizer removed it first.
    assert refused == [], refused
    # The sender's hostile display name is text, not markup.
    expect(page.locator(".message .from", has_text="<img src=x")).to_have_count(1)
    assert watch.dialogs == [], watch.dialogs
    assert watch.remote() == [], watch.remote()
    assert page.url.startswith(base_url)  # no meta refresh or base took us elsewhere
    page.screenshot(path=str(SHOTS / "conversation.png"))


def test_security_headers_and_sign_in_errors(base_url: str, browser: Browser, world: World) -> None:
    page = browser.new_page()
    response = page.goto(f"{base_url}/login")
    assert response is not None
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp
    page.get_by_label("E-mail").fill("alice@acme.test")
    page.get_by_label("Password").fill("wrong password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#login-error")).to_contain_text("credentials are not valid")
    # A member's page at phone width: one pane, the views behind the toggle.
    _sign_in(page, base_url, "alice@acme.test")
    page.set_viewport_size({"width": 375, "height": 740})
    expect(page.locator("#views")).to_be_hidden()
    page.get_by_role("button", name="Views").click()
    expect(page.locator("#views")).to_be_visible()


def test_records_timeline_and_admin_pages(
    base_url: str, browser: Browser, world: World, sqlite_db: Engine
) -> None:
    with session_scope(sqlite_db) as s:
        contact = records.create_contact(
            session=s,
            caller=world.caller("admin"),
            emails=["ann@globex.test"],
            first_name="Ann",
            last_name="Lee",
        )
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    watch = Watch(page)
    _sign_in(page, base_url, "alice@acme.test")
    page.get_by_role("link", name="Records").click()
    page.get_by_label("Search contacts").fill("globex")
    page.get_by_label("Search contacts").press("Enter")
    page.get_by_role("link", name="Ann Lee").click()
    page.wait_for_url(f"{base_url}/records/contacts/{contact.id}")
    expect(page.locator("#timeline .timeline-item")).to_have_count(1)
    expect(page.locator("#timeline")).to_contain_text("Re: Alpha")
    # A member never sees the admin page (the top bar comes with the page, not later).
    assert page.get_by_role("link", name="Admin").count() == 0
    response = page.goto(f"{base_url}/admin")
    assert response is not None and response.status == 403
    assert "Administrators only" in page.inner_text("h1")
    # The admin sees the accounts with their health, and the users.
    admin = browser.new_page(viewport={"width": 1280, "height": 800})
    _sign_in(admin, base_url, "admin@acme.test")
    admin.get_by_role("link", name="Admin").click()
    expect(admin.locator("#accounts tr")).to_have_count(3)  # A, B and the deactivated C
    expect(admin.locator("#accounts")).to_contain_text("a@acme.test")
    expect(admin.locator("#users tr")).to_have_count(5)
    admin.locator('#accounts tr[data-account] button:has-text("Deactivate")').first.click()
    expect(admin.locator("#admin-status")).to_contain_text("deactivated")
    # A forwarding address for a team inbox (issue 13): created here, its address shown.
    admin.get_by_label("Team inbox").fill("Support")
    admin.get_by_label("Local part", exact=True).fill("help")
    admin.get_by_role("button", name="Create forwarding address").click()
    expect(admin.locator("#forwarding .channel")).to_have_count(1)
    expect(admin.locator("#forwarding")).to_contain_text("help-")
    expect(admin.locator("#forwarding")).to_contain_text("not yet activated")
    admin.screenshot(path=str(SHOTS / "admin.png"))
    assert watch.errors == [] and watch.remote() == []


def test_reply_with_undo_from_the_page(
    base_url: str, browser: Browser, world: World, sqlite_db: Engine
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    watch = Watch(page)
    _sign_in(page, base_url, "alice@acme.test")
    page.locator("#threads .thread", has_text="Shared").click()
    page.locator("#conversation-subject").wait_for()
    page.keyboard.press("r")  # the shortcut focuses the reply box
    page.locator("#reply-body").fill("Thanks, <b>the</b> offer follows.")
    page.get_by_role("button", name="Send", exact=True).click()
    status = page.locator("#reply-status")
    expect(status).to_contain_text("Sending in 10 s")
    undo = page.get_by_role("button", name="Undo")
    # Scrolled into view first, and clicked only once a frame with the pane scrolled was drawn:
    # a click that scrolls the pane and clicks in one go has landed on nothing under load (the
    # click never reached the document). Two animation frames, not a delay: a frame may take long.
    undo.scroll_into_view_if_needed()
    page.evaluate(TWO_FRAMES)
    undo.click()
    expect(status).to_contain_text("recalled")
    with Session(sqlite_db) as s:
        mail = s.exec(select(OutboundMail)).one()
    assert mail.state.value == "cancelled"
    sent = email.message_from_bytes(mail.raw, policy=email.policy.default)
    html_part = sent.get_body(("html",))
    assert html_part is not None
    assert "&lt;b&gt;the&lt;/b&gt;" in html_part.get_content()  # what was typed is text, not markup
    assert watch.errors == [] and watch.remote() == []


def test_links_with_why_merge_and_split(
    base_url: str, browser: Browser, world: World, sqlite_db: Engine
) -> None:
    with session_scope(sqlite_db) as s:
        records.create_contact(
            session=s,
            caller=world.caller("admin"),
            emails=["zed@zenith.test"],
            first_name="Zed",
            last_name="Buyer",
        )
        ann = records.create_contact(  # the mail from this address is linked to it at once
            session=s,
            caller=world.caller("admin"),
            emails=["ann@globex.test"],
            first_name="Ann",
            last_name="Lee",
        )
        # A deal with Ann: her mail (Alpha) is linked to it at once, so the sidebar lists its stage.
        records.create_deal(
            session=s,
            caller=world.caller("admin"),
            title="Globex renewal",
            contact_ids=[ann.id],
            stage="proposal",
        )
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    watch = Watch(page)

    _sign_in(page, base_url, "alice@acme.test")
    stage = page.locator('#stage-list [data-stage="proposal"]')
    expect(stage.locator(".count")).to_have_text("1")
    # (The title is set before the request goes: waiting for the title proves no request.)
    with page.expect_request(lambda r: "/api/threads?" in r.url and "deal_stage=proposal" in r.url):
        stage.click()
    expect(page.locator("#list-title")).to_have_text("Deals in proposal")
    expect(page.locator("#threads .thread .subject")).to_have_text(["Alpha"])
    page.locator('#view-list [data-view="open"]').click()
    page.locator("#threads .thread", has_text="Alpha").click()
    sidebar = page.locator("#crm-sidebar")
    # The automatic link says why it is there.
    expect(sidebar.locator(".record-link", has_text="Ann Lee")).to_contain_text(
        "Why: ann@globex.test is on the mail and is one of its addresses"
    )
    # Link by hand (search, pick), shown with its reason; then unlink.
    sidebar.get_by_text("Link to a record").click()
    sidebar.get_by_label("Kind").select_option("contact")
    sidebar.locator("#link-form-q").fill("zed")
    sidebar.locator("#link-form-q").press("Enter")
    sidebar.get_by_role("button", name="Link Zed Buyer").click()
    zed = page.locator("#crm-sidebar .record-link", has_text="Zed Buyer")
    expect(zed).to_contain_text("Why: linked by hand")
    zed.get_by_role("button", name="Unlink Zed Buyer").click()
    expect(page.locator("#crm-sidebar .record-link", has_text="Zed Buyer")).to_have_count(0)
    # Why is a message here; split it off into its own conversation, then merge it back.
    messages = page.locator("#conversation article.message")
    expect(messages).to_have_count(2)
    messages.first.get_by_role("button", name="Why in this conversation?").click()
    expect(messages.first.locator(".threading")).to_contain_text("In this conversation because")
    messages.nth(1).get_by_role("button", name="Split off").click()
    expect(page.locator("#conversation article.message")).to_have_count(1)
    # The split message is open on its own; merge the rest of Alpha back into it. First its records
    # fill in: the list growing above the merge form moved it under a click that came before.
    expect(page.locator("#crm-sidebar .record-list")).not_to_contain_text("Loading records")
    page.locator("#conversation").get_by_text("Merge another conversation into this one").click()
    expect(page.locator("#merge-form-q")).to_be_visible()
    page.locator("#merge-form-q").fill("alpha")
    page.locator("#merge-form-q").press("Enter")
    page.locator("#crm-sidebar .pick-results button").first.click()
    expect(page.locator("#conversation article.message")).to_have_count(2)
    history = page.locator(".history summary")
    history.click()
    assert watch.errors == [] and watch.dialogs == [] and watch.remote() == []
    page.close()


def test_admin_connects_a_mailbox_and_writes_a_signature(
    base_url: str, browser: Browser, world: World, mailbox_user: MailboxUser
) -> None:
    dovecot = mailbox_user.dovecot
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    watch = Watch(page)
    _sign_in(page, base_url, "admin@acme.test")
    page.goto(f"{base_url}/admin")
    page.get_by_label("E-mail address").fill("dove@acme.test")
    page.get_by_label("IMAP server").fill("127.0.0.1")
    page.get_by_label("Security", exact=True).select_option("tls")
    page.get_by_label("IMAP port").fill(str(dovecot.ssl_port))
    page.get_by_label("Username", exact=True).fill(mailbox_user.name)
    page.get_by_label("Password", exact=True).fill(mailbox_user.password)
    result = page.locator("#account-check")
    # Dovecot's certificate comes from a private CA: refused, said in words, nothing saved.
    page.get_by_role("button", name="Check and connect").click()
    expect(result.locator(".check-error")).to_contain_text("is not trusted")
    expect(result).to_contain_text("Nothing was saved")
    page.get_by_label("Security", exact=True).select_option("plain")
    page.get_by_label("IMAP port").fill(str(dovecot.port))
    page.get_by_label("Password", exact=True).fill("not the password")
    page.get_by_role("button", name="Check and connect").click()
    expect(result.locator(".check-error")).to_contain_text("refused the username or password")
    page.get_by_label("Password", exact=True).fill(mailbox_user.password)
    # SMTP with it: saved only once a test mail to the given address was accepted (aiosmtpd).
    with recording_smtp(dovecot, Security.PLAIN) as smtp:
        page.get_by_label("SMTP server").fill("127.0.0.1")
        page.get_by_label("SMTP security").select_option("plain")
        page.get_by_label("SMTP port").fill(str(smtp.port))
        page.get_by_label("SMTP username").fill(SMTP_USER)
        page.get_by_label("SMTP password").fill("not the SMTP password")
        page.get_by_label("Send a test mail to").fill("check@globex.test")
        page.get_by_role("button", name="Check and connect").click()
        expect(result.locator(".check-error")).to_contain_text("refused the username or password of")
        expect(result).to_contain_text("The account was not created")
        # "Save anyway" cannot skip the test mail; connecting without sending is offered instead.
        expect(result.get_by_role("button", name="Connect without sending")).to_be_visible()
        expect(result.get_by_role("button", name="Save anyway")).to_have_count(0)
        expect(page.locator("#accounts tr", has_text="dove@acme.test")).to_have_count(0)
        page.get_by_label("SMTP password").fill(SMTP_PASSWORD)
        page.get_by_role("button", name="Check and connect").click()
        expect(result).to_contain_text("Connected: dove@acme.test")
        expect(result).to_contain_text(
            f"Sending through 127.0.0.1:{smtp.port} (plain): the test mail was accepted"
        )
        [test_mail] = smtp.recorder.received
        assert test_mail.rcpt_tos == ["check@globex.test"] and test_mail.mail_from == "dove@acme.test"
    expect(page.locator("#accounts tr", has_text="dove@acme.test")).to_have_count(1)

    # A signature: merge tags listed and inserted, previewed live as a colleague, warnings shown.
    page.get_by_label("Signatures of account").select_option(label="a@acme.test")
    page.get_by_label("Signature name").fill("Sales")
    editor = page.get_by_label("Signature (HTML; merge tags fill in each sender's details)")
    editor.fill("<p>Best, ")
    page.get_by_role("button", name="Insert sender.email").click()
    editor.press("End")
    editor.type('</p><img src="https://cdn.acme.test/logo.svg" alt="logo">')
    page.get_by_label("Preview as").select_option(label="alice@acme.test")
    preview = page.frame_locator("#sig-preview")
    expect(preview.locator("p")).to_contain_text("Best, alice@acme.test")
    expect(page.locator("#sig-warnings")).to_contain_text("many mail clients do not display SVG images")
    # The logo would load through the image proxy, never from its host.
    expect(preview.locator("img")).to_have_attribute("src", re.compile(r"^/media/image\?"))
    editor.fill("<p>{{ sender.shoe_size }}</p>")
    expect(page.locator("#sig-warnings .error")).to_contain_text("shoe_size")
    editor.fill("<p>Regards, {{ sender.email }}</p>")
    page.get_by_role("button", name="Save signature").click()
    expect(page.locator("#admin-status")).to_contain_text("Signature “Sales” saved")
    expect(page.locator("#signature-list li", has_text="Sales")).to_have_count(1)
    # Every control of the admin page has a name; at 375 px nothing scrolls sideways.
    assert unnamed_controls(page) == []
    page.set_viewport_size({"width": 375, "height": 740})
    assert no_horizontal_scroll(page), "the admin page scrolls sideways at 375 px"
    assert watch.errors == [] and watch.dialogs == [] and watch.remote() == []
    page.close()
