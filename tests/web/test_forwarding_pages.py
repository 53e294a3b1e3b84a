"""Forwarding addresses in a real Chromium (issue 13): mail forwarded through the real inbound
listener, then the tickets page (filters, inline edits, history, the link to the
conversation), the "forwarded by" line and the "original sender not found" flag in the
conversation, and the admin's forwarding section (local part before activation, provider
confirmation code and link, "send a test", a custom sender verified by its emailed link)."""

from __future__ import annotations

import re
import smtplib
from collections.abc import Iterator
from email import message_from_bytes, policy

import pytest
from playwright.sync_api import APIResponse, Browser, Page, Route, expect
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import Session, select

from core.db import session_scope
from core.settings import Settings, get_settings
from core.types import ConversationStatus, Security, TicketPriority, TicketStage
from crm import assignment, auth, grants, tenants
from crm.models import ForwardingChannel, Message, Thread, Ticket
from sync.send_queue import work_queue
from tests.outbound.smtp import recording_smtp
from tests.serving import served_app
from tests.sync.inbound_harness import FIXTURES, World, inbound_settings, listener, mail, make_world
from tests.sync.test_inbound_credit import GMAIL_CONFIRMATION
from tests.web import test_browser as shared
from tests.web.browsing import PASSWORD, SHOTS, Watch, wait_until

TEAM = "sales@ourco.example"
# The browser test module's fixtures: one Chromium, offline, pages closed after each test.
browser = shared.browser
_fresh_pages = shared._fresh_pages


def _send(port: int, rcpt: str, raw: bytes, mail_from: str = "bob@ourco.example") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        assert client.sendmail(mail_from, [rcpt], raw) == {}


class Setup:
    def __init__(self, world: World, ann_id: int) -> None:
        self.world, self.ann_id = world, ann_id


@pytest.fixture
def setup(sqlite_db: Engine, settings: Settings) -> Setup:
    """OurCo's Sales channel with tickets on, bob (admin) and ann (member) on it, and three
    arrivals through the real listener: Jane's question forwarded inline by bob, a forward
    whose original sender cannot be found, and Gmail's forwarding confirmation."""
    world = make_world(sqlite_db, create_tickets=True)
    with session_scope(sqlite_db) as session:
        ann = tenants.create_user(
            session=session, caller=world.admin, email="ann@ourco.example", first_name="Ann", last_name="Lee"
        )
        for uid in (world.admin_id, ann.id):
            auth.set_password(session=session, caller=world.admin, user_id=uid, password=SecretStr(PASSWORD))
            grants.grant_access(session=session, caller=world.admin, account_id=world.account_id, user_id=uid)
        assignment.set_rule(
            session=session,
            caller=world.admin,
            account_id=world.account_id,
            mode=assignment.AssignMode.ROUND_ROBIN,
            user_ids=[world.admin_id],
        )
    s = inbound_settings(settings)
    with listener(s, sqlite_db):
        body = (FIXTURES / "gmail_en.txt").read_text(encoding="utf-8")
        _send(
            s.inbound_port,
            world.address,
            mail(
                sender="Bob Seller <bob@ourco.example>",
                to=world.address,
                subject="Fwd: Pricing question",
                body=body,
            ),
        )
        _send(
            s.inbound_port,
            world.address,
            mail(
                sender="Carl <carl@partner.example>",
                to=world.address,
                subject="Fwd: lunch",
                body="no header block\n",
            ),
            mail_from="carl@partner.example",
        )
        _send(
            s.inbound_port,
            world.address,
            mail(
                sender="Gmail Team <forwarding-noreply@google.com>",
                to=world.address,
                subject="(#912345678) Gmail Forwarding Confirmation - Receive Mail from bob.seller@gmail.com",
                body=GMAIL_CONFIRMATION.format(address=world.address),
            ),
            mail_from="forwarding-noreply@google.com",
        )
    return Setup(world, ann.id)


@pytest.fixture
def base_url(setup: Setup) -> Iterator[str]:
    with served_app() as url:
        yield url


def _sign_in(page: Page, base_url: str, email: str) -> None:
    page.goto(f"{base_url}/login")
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{base_url}/")


def _ticket(db: Engine, number: int) -> Ticket:
    with Session(db) as s:
        return s.exec(select(Ticket).where(Ticket.number == number)).one()


def test_tickets_page_and_forwarded_by_line(
    base_url: str,
    browser: Browser,
    setup: Setup,
    sqlite_db: Engine,
) -> None:
    world = setup.world
    with Session(sqlite_db) as s:
        jane_thread = s.exec(
            select(Message.thread_id).where(Message.from_email == "jane.doe@acme.example")
        ).one()
        lunch_thread = s.exec(select(Thread.id).where(Thread.subject == "Fwd: lunch")).one()
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    watch = Watch(page)
    _sign_in(page, base_url, "bob@ourco.example")
    page.get_by_role("link", name="Tickets of my inboxes").click()
    page.wait_for_url(f"{base_url}/tickets")
    rows = page.locator("#tickets tr[data-ticket]")
    expect(rows).to_have_count(2)  # two new conversations; the confirmation is none
    first = page.locator("#tickets tr[data-ticket]", has_text="Pricing question")
    expect(first.locator(".number")).to_have_text("#1")
    expect(first.locator(".customer")).to_contain_text("jane.doe@acme.example")  # the customer, not bob
    expect(first.get_by_label("Stage of ticket #1")).to_have_value("new")
    expect(first.get_by_label("Priority of ticket #1")).to_have_value("medium")
    expect(first.get_by_label("Owner of ticket #1")).to_have_value(str(world.admin_id))  # the rule's choice

    # Inline edits, each saved at once.
    first.get_by_label("Stage of ticket #1").select_option("waiting")
    expect(page.locator("#tickets-status")).to_have_text("Ticket #1: stage Waiting.")
    page.locator("#tickets tr[data-ticket]", has_text="Pricing question").get_by_label(
        "Priority of ticket #1"
    ).select_option("urgent")
    expect(page.locator("#tickets-status")).to_have_text("Ticket #1: priority Urgent.")
    page.locator("#tickets tr[data-ticket]", has_text="Pricing question").get_by_label(
        "Owner of ticket #1"
    ).select_option(label="Ann Lee")
    expect(page.locator("#tickets-status")).to_have_text("Ticket #1: owner Ann Lee.")
    saved = _ticket(sqlite_db, 1)
    assert (saved.stage, saved.priority, saved.owner_user_id) == (
        TicketStage.WAITING,
        TicketPriority.URGENT,
        setup.ann_id,
    )
    # Its history, on demand.
    first = page.locator("#tickets tr[data-ticket]", has_text="Pricing question")
    first.locator("summary", has_text="History").click()
    history = first.get_by_label("History of ticket #1").locator("li")
    expect(history).to_have_count(4)
    expect(history.nth(0)).to_contain_text("opened as New (new conversation, by crm-inbox)")
    expect(history.nth(2)).to_contain_text("priority Medium → Urgent (edited, by")
    expect(history.nth(3)).to_contain_text("owner")

    # Filters: stage, priority, owner.
    page.get_by_label("Priority", exact=True).select_option("high")
    expect(page.locator("#tickets")).to_contain_text("No ticket matches.")
    page.get_by_label("Priority", exact=True).select_option("urgent")
    expect(rows).to_have_count(1)
    page.get_by_label("Priority", exact=True).select_option("")
    page.get_by_label("Owner", exact=True).select_option(label="Ann Lee")
    expect(rows).to_have_count(1)
    page.get_by_label("Owner", exact=True).select_option("none")
    expect(rows).to_have_count(0)
    page.get_by_label("Owner", exact=True).select_option("")
    page.get_by_label("Stage", exact=True).select_option("new")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("Fwd: lunch")
    page.get_by_label("Stage", exact=True).select_option("")
    expect(rows).to_have_count(2)
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "tickets.png"))

    # The subject opens the conversation: credited to Jane, with who forwarded it.
    page.get_by_role("link", name="Pricing question").click()
    page.wait_for_url(f"{base_url}/#thread-{jane_thread}")
    expect(page.locator("#conversation-subject")).to_have_text("Fwd: Pricing question")
    message = page.locator(".message").first
    expect(message.locator(".from")).to_contain_text("jane.doe@acme.example")
    expect(message.locator(".forwarded")).to_have_text("forwarded by bob@ourco.example")
    # Closing the conversation closes its ticket; reopening it reopens the ticket.
    page.get_by_role("button", name="Close", exact=True).click()
    page.get_by_role("button", name="Reopen").wait_for()
    assert _ticket(sqlite_db, 1).closed_at is not None
    page.get_by_role("button", name="Reopen").click()
    page.get_by_role("button", name="Close", exact=True).wait_for()
    reopened = _ticket(sqlite_db, 1)
    assert reopened.closed_at is None and reopened.stage is TicketStage.IN_PROGRESS
    with Session(sqlite_db) as s:
        assert s.get_one(Thread, jane_thread).status is ConversationStatus.OPEN

    # A forward whose original sender was not found: flagged, left on the forwarder.
    page.goto(f"{base_url}/#thread-{lunch_thread}")
    page.reload()
    expect(page.locator("#conversation-subject")).to_have_text("Fwd: lunch")
    flag = page.locator(".message .forwarded.unattributed")
    expect(flag).to_contain_text("the original sender was not found")
    expect(page.locator(".message .from").first).to_contain_text("carl@partner.example")
    page.goto(f"{base_url}/tickets")
    expect(
        page.locator("#tickets tr[data-ticket]", has_text="Pricing question").get_by_label(
            "Stage of ticket #1"
        )
    ).to_have_value("in_progress")
    assert watch.errors == [] and watch.dialogs == [] and watch.remote() == []


def test_a_late_ticket_list_never_replaces_the_filter_chosen_after(
    base_url: str, browser: Browser, setup: Setup
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    watch = Watch(page)
    _sign_in(page, base_url, "bob@ourco.example")
    page.goto(f"{base_url}/tickets")
    rows = page.locator("#tickets tr[data-ticket]")
    expect(rows).to_have_count(2)
    held: list[Route] = []
    page.route(lambda url: "/api/tickets?" in url and "priority=high" in url, lambda r: held.append(r))
    priority = page.get_by_label("Priority", exact=True)
    priority.select_option("high")  # no ticket matches; the answer is held back
    wait_until(page, lambda: bool(held), "the filtered list was never asked for")
    with page.expect_response(lambda r: "/api/tickets?" in r.url and "priority=" not in r.url):
        priority.select_option("")  # the reader changed their mind: every ticket again
    # The answer for the filter left arrives last; the list of the filter chosen after it stays.
    with page.expect_response(lambda r: "/api/tickets?" in r.url and "priority=high" in r.url):
        held[0].continue_()
    watch.settled()
    assert rows.count() == 2 and "No ticket matches." not in page.locator("#tickets").inner_text()
    assert watch.errors == []


def test_a_late_forwarding_list_never_hides_an_address_created_after(
    base_url: str, browser: Browser, setup: Setup
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch = Watch(page)
    _sign_in(page, base_url, "bob@ourco.example")
    held: list[tuple[Route, APIResponse]] = []

    def hold_the_first(route: Route) -> None:
        # The page's first list, fetched now (before the creation) and given to the page later.
        if held:
            route.continue_()
        else:
            held.append((route, route.fetch()))

    page.route(lambda url: url.endswith("/api/forwarding"), hold_the_first)
    page.goto(f"{base_url}/admin")
    wait_until(page, lambda: bool(held), "the forwarding addresses were never asked for")
    page.get_by_label("Team inbox").fill("Support")
    page.get_by_label("Local part", exact=True).fill("help")
    page.get_by_role("button", name="Create forwarding address").click()
    support = page.locator("#forwarding .channel", has_text="Support")
    expect(support.locator(".fwd-address")).to_contain_text("help-")
    # The first list (Sales only) arrives last; the address created after it stays listed.
    with page.expect_response(lambda r: r.url.endswith("/api/forwarding")):
        held[0][0].fulfill(response=held[0][1])
    watch.settled()
    assert support.count() == 1
    assert watch.errors == []


def test_admin_forwarding_section(
    base_url: str,
    browser: Browser,
    setup: Setup,
    sqlite_db: Engine,
) -> None:
    world = setup.world
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    watch = Watch(page)
    _sign_in(page, base_url, "bob@ourco.example")
    page.get_by_role("link", name="Admin").click()
    sales = page.locator(f'#forwarding .channel[data-channel="{world.channel_id}"]')
    expect(sales.locator(".fwd-address")).to_have_text(world.address)
    expect(sales.locator(".fwd-state")).to_contain_text("active since")  # the first mail activated it
    expect(sales.get_by_label("Local part of Sales")).to_have_count(0)  # fixed once active
    # Gmail's confirmation: its code and link, without access to the mailbox.
    expect(sales.locator(".fwd-code")).to_have_text("912345678")
    expect(sales.locator(".fwd-link")).to_have_text(
        "https://mail-settings.google.com/mail/vf-%5BANGjdJ8abc%5D-QkX_1a2b3c"
    )
    expect(sales.locator(".fwd-confirmations")).to_contain_text("for bob.seller@gmail.com")

    # A new address: the local part can change until it is activated.
    page.get_by_label("Team inbox").fill("Support")
    page.get_by_label("Local part", exact=True).fill("help")
    page.get_by_role("button", name="Create forwarding address").click()
    support = page.locator("#forwarding .channel", has_text="Support")
    expect(support.locator(".fwd-address")).to_contain_text("help-")
    expect(support.locator(".fwd-state")).to_contain_text("not yet activated")
    support.get_by_label("Local part of Support").fill("helpdesk")
    support.get_by_role("button", name="Change address").click()
    expect(support.locator(".fwd-address")).to_have_text(re.compile(r"^helpdesk-[a-z0-9]{6}@"))
    support.get_by_role("button", name="Activate").click()
    expect(support.locator(".fwd-state")).to_contain_text("active since")
    expect(support.get_by_label("Local part of Support")).to_have_count(0)

    # Send a test: queued from the channel to the team's own address.
    sales.get_by_role("button", name="Send a test").click()
    expect(page.locator("#forwarding-status")).to_contain_text(f"Test sent to {TEAM}")
    expect(sales.locator(".fwd-state")).to_contain_text("not back yet")

    # A custom sender for replies: used only once the link mailed to it is followed.
    with recording_smtp(None, Security.PLAIN) as system:  # type: ignore[arg-type]  # no TLS: no CA
        live = get_settings()
        live.system_smtp_host, live.system_smtp_port, live.system_smtp_security = (
            "127.0.0.1",
            system.port,
            "plain",
        )
        live.system_smtp_username, live.system_smtp_password = system.username, SecretStr(system.password)
        live.public_url = base_url
        sales.get_by_label("Custom sender of Sales").fill(TEAM)
        sales.get_by_role("button", name="Send verification link").click()
        expect(sales.locator(".fwd-pending")).to_contain_text(f"Waiting for the link mailed to {TEAM}")
        expect(sales.locator(".fwd-sender")).to_contain_text(f"Replies are sent as {world.address}")
        work_queue(db=sqlite_db, settings=live)
        [link_mail] = [m for m in system.recorder.received if m.rcpt_tos == [TEAM]]
    body = message_from_bytes(link_mail.data, policy=policy.default).get_body(("plain",))
    assert body is not None
    text = body.get_content()
    link = re.search(r"(http://127\.0\.0\.1:\d+/verify-sender\?token=[\w.-]+)", text)
    assert link is not None
    with Session(sqlite_db) as s:
        assert (
            s.exec(
                select(ForwardingChannel.sender_email).where(ForwardingChannel.id == world.channel_id)
            ).one()
            is None
        )
    follow = browser.new_page()  # whoever reads the team's mailbox follows it
    follow.goto(link.group(1))
    follow.get_by_role("button", name="Confirm").click()
    expect(follow.locator("body")).to_contain_text(
        f"Confirmed: {TEAM} now sends the replies of a team inbox."
    )
    page.reload()
    sales = page.locator(f'#forwarding .channel[data-channel="{world.channel_id}"]')
    expect(sales.locator(".fwd-sender")).to_have_text(f"Replies are sent as {TEAM} (verified).")
    expect(sales.locator(".fwd-pending")).to_have_count(0)
    page.screenshot(path=str(SHOTS / "admin-forwarding.png"))
    assert watch.errors == [] and watch.dialogs == [] and watch.remote() == []
