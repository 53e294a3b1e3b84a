"""Accessibility and steadiness in a real headless Chromium (as tests/web/test_browser.py): the
inbox from the keyboard alone, every control named (as Chromium computes names for assistive
technology), no layout shift when mail arrives in the open conversation, nothing lost that was
being typed, and nothing scrolling sideways at phone width."""

from __future__ import annotations

from datetime import timedelta

import pytest
from playwright.sync_api import Browser, expect
from sqlalchemy import Engine
from sqlmodel import select

from core.db import session_scope
from core.types import UidState
from crm import records
from crm.models import FolderState, ImapUid, Message, Thread
from tests.crm.world import T0, World
from tests.web import test_browser as shared
from tests.web.browsing import SHOTS, TWO_FRAMES, Watch, no_horizontal_scroll, unnamed_controls
from tests.web.test_browser import _sign_in

# The browser test module's fixtures: its world (alice with a password), the app served for it,
# one Chromium, offline, pages closed after each test.
sender_server = shared.sender_server
world = shared.world
base_url = shared.base_url
browser = shared.browser
_fresh_pages = shared._fresh_pages


# Layout shifts by pane. `__takeShifts()` also takes the entries not yet delivered to the
# observer's callback (delivered in a later task): after a drawn frame, nothing is missed.
WATCH_SHIFTS = """() => {
  window.__shifts = [];
  const record = (entries) => {
    for (const entry of entries) {
      for (const source of entry.sources || []) {
        const node = source.node && (source.node.nodeType === 1 ? source.node : source.node.parentElement);
        const pane = node && node.closest("#conversation, #views, #threads, .topbar");
        window.__shifts.push(pane ? pane.id || pane.className : "elsewhere");
      }
    }
  };
  const observer = new PerformanceObserver((list) => record(list.getEntries()));
  observer.observe({ type: "layout-shift" });
  window.__takeShifts = () => { record(observer.takeRecords()); return window.__shifts; };
}"""


def test_accessible_keyboard_phone_and_steady(
    base_url: str, browser: Browser, world: World, sqlite_db: Engine
) -> None:
    with session_scope(sqlite_db) as s:  # the open conversation shows a record (and its why)
        records.create_contact(
            session=s,
            caller=world.caller("admin"),
            emails=["sue@globex.test"],
            first_name="Sue",
            last_name="Ng",
        )
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    watch = Watch(page)
    _sign_in(page, base_url, "alice@acme.test")
    # Keyboard only: j opens the first conversation, Tab walks to the reply box.
    page.keyboard.press("j")
    page.locator("#reply-body").wait_for()
    page.locator("#crm-sidebar .record-link", has_text="Sue Ng").wait_for()
    for _ in range(80):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement && document.activeElement.id") == "reply-body":
            break
    else:
        pytest.fail("Tab never reached the reply box")
    page.keyboard.type("Typed from the keyboard")
    # Every control has a name, on the inbox with a conversation open...
    page.get_by_text("Link to a record").click()
    page.get_by_text("Merge another conversation into this one").click()
    assert unnamed_controls(page) == []

    # No layout shift when mail arrives: a new message in the open conversation and the list.
    page.evaluate(WATCH_SHIFTS)
    with session_scope(sqlite_db) as s:
        shared = s.get_one(Thread, world.threads["Shared"])
        arrived = Message(
            tenant_id=world.tenant,
            message_id="<arrived@mail.test>",
            content_hash="arrived",
            subject="Re: Shared",
            date=T0 + timedelta(hours=9),
            from_email="sue@globex.test",
            text_body="A new message while you read",
            thread_id=shared.id,
        )
        s.add(arrived)
        s.flush()
        folder = s.exec(select(FolderState).where(FolderState.account_id == world.accounts["A"])).one()
        s.add(
            ImapUid(
                account_id=world.accounts["A"],
                folder_id=folder.id or 0,
                uidvalidity=1,
                uid=1000,
                state=UidState.STORED,
                message_pk=arrived.id,
            )
        )
        shared.message_count += 1
        shared.last_date = arrived.date
        s.add(shared)
    page.locator("#conversation .message", has_text="A new message while you read").wait_for()
    watch.settled()  # the records of the re-render (and the list, the counts) are in
    page.evaluate(TWO_FRAMES)
    shifts = page.evaluate("() => window.__takeShifts()")
    assert [s for s in shifts if s in ("conversation", "views")] == [], shifts
    expect(page.locator("#reply-body")).to_have_value("Typed from the keyboard")  # nothing lost
    # The two probes can fail: an unnamed button is found, a banner pushed above the messages is
    # a shift.
    page.evaluate("""() => {
      const c = document.getElementById("conversation");
      c.prepend(Object.assign(document.createElement("div"), { style: "height: 80px" }));
      c.append(document.createElement("button"));
    }""")
    page.wait_for_function("() => window.__takeShifts().includes('conversation')")
    assert len(unnamed_controls(page)) == 1

    # ...on the records page (the admin page: in the admin test).
    page.goto(f"{base_url}/records/contacts")
    watch.settled()  # the list is in: its links are among the controls checked
    expect(page.locator("#grid-body tr", has_text="Sue Ng")).to_have_count(1)
    assert unnamed_controls(page) == []

    # A phone: 375 px wide, nothing scrolls sideways, the conversation still opens and answers.
    page.set_viewport_size({"width": 375, "height": 740})
    page.goto(f"{base_url}/records/contacts")
    watch.settled()  # measured with the list in, not the empty page before it
    assert no_horizontal_scroll(page), "the records page scrolls sideways at 375 px"
    page.goto(f"{base_url}/")
    page.locator("#threads .thread").first.click()
    page.locator("#reply-body").wait_for()
    watch.settled()  # and with the conversation's records in
    assert no_horizontal_scroll(page), "the inbox scrolls sideways at 375 px"
    page.locator("#reply-body").scroll_into_view_if_needed()
    expect(page.locator("#reply-body")).to_be_visible()
    SHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SHOTS / "phone-conversation.png"))
    assert watch.errors == [] and watch.dialogs == []
    page.close()
