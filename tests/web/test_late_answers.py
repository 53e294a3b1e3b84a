"""Answers that arrive late, in a real headless Chromium (as tests/web/test_browser.py): a page
asks again when the reader changes their mind (another view, a search, another colleague to
preview as), and the answer to the question left behind may come last on a busy server. Each test
holds that answer back, lets the newer one through, then releases the old one: only the newest
may be shown. Each fails without its page's "newest request only" rule."""

from __future__ import annotations

import re

from playwright.sync_api import Browser, Route, expect
from sqlalchemy import Engine

from core.db import session_scope
from crm import records
from tests.crm.world import World
from tests.web import test_browser as shared
from tests.web.browsing import Watch, wait_until
from tests.web.test_browser import _sign_in

# The browser test module's fixtures: its world (alice and the admin with a password), the app
# served for it, one Chromium, offline, pages closed after each test.
sender_server = shared.sender_server
world = shared.world
base_url = shared.base_url
browser = shared.browser
_fresh_pages = shared._fresh_pages


def test_a_late_answer_for_a_view_left_never_replaces_the_view_chosen_after(
    base_url: str, browser: Browser, world: World
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    watch = Watch(page)
    _sign_in(page, base_url, "alice@acme.test")
    held: list[Route] = []
    page.route("**/api/threads?*status=closed*", lambda route: held.append(route))
    page.locator('#view-list [data-view="closed"]').click()  # its answer is held back
    wait_until(page, lambda: bool(held), "the Closed view's request never came")
    with page.expect_response(lambda r: "/api/threads?" in r.url and "status=open" in r.url):
        page.locator('#view-list [data-view="open"]').click()
    expect(page.locator("#list-title")).to_have_text("All open")
    expect(page.locator("#threads .thread .subject")).to_have_text(["Shared", "Alpha"])
    # The Closed view's answer (no conversations) arrives last; the open list stays.
    with page.expect_response(lambda r: "status=closed" in r.url):
        held[0].continue_()
    watch.settled()  # the late answer was handled: had it been rendered, it would show now
    assert page.locator("#threads .thread .subject").all_inner_texts() == ["Shared", "Alpha"]
    assert watch.errors == []


def test_a_late_record_list_never_replaces_the_search_made_after(
    base_url: str, browser: Browser, world: World, sqlite_db: Engine
) -> None:
    with session_scope(sqlite_db) as s:
        for email, first, last in (("ann@globex.test", "Ann", "Lee"), ("zed@zenith.test", "Zed", "Buyer")):
            records.create_contact(
                session=s, caller=world.caller("admin"), emails=[email], first_name=first, last_name=last
            )
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    watch = Watch(page)
    _sign_in(page, base_url, "alice@acme.test")
    held: list[Route] = []
    page.route(lambda url: "/api/contacts?" in url and "q=" not in url, lambda route: held.append(route))
    page.goto(f"{base_url}/records/contacts")  # the first page of the list: its answer held back
    wait_until(page, lambda: bool(held), "the contacts list was never asked for")
    page.get_by_label("Search contacts").fill("globex")
    with page.expect_response(lambda r: "/api/contacts?" in r.url and "q=globex" in r.url):
        page.get_by_label("Search contacts").press("Enter")
    expect(page.locator("#grid-body tr")).to_have_text([re.compile("Ann Lee")])
    # The first page's answer (both contacts) arrives last; the search's results stay.
    with page.expect_response(lambda r: "/api/contacts?" in r.url and "q=" not in r.url):
        held[0].continue_()
    watch.settled()
    shown = page.locator("#grid-body tr").all_inner_texts()
    assert len(shown) == 1 and "Ann Lee" in shown[0], shown
    assert watch.errors == []


def test_a_late_signature_preview_never_replaces_the_newer_one(
    base_url: str, browser: Browser, world: World
) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    watch = Watch(page)
    _sign_in(page, base_url, "admin@acme.test")
    held: list[Route] = []

    def hold_the_first(route: Route) -> None:  # the preview as "Me" (the admin) is held back
        if held:
            route.continue_()
        else:
            held.append(route)

    page.route("**/signatures/preview", hold_the_first)
    page.goto(f"{base_url}/admin")
    page.get_by_label("Signatures of account").select_option(label="a@acme.test")
    page.get_by_label("Signature (HTML; merge tags fill in each sender's details)").fill(
        "<p>Best, {{ sender.email }}</p>"
    )
    wait_until(page, lambda: bool(held), "no preview was asked for")
    page.get_by_label("Preview as").select_option(label="alice@acme.test")
    preview = page.locator("#sig-preview")
    expect(preview).to_have_attribute("srcdoc", re.compile("Best, alice@acme.test"))
    # The older preview (as the admin) arrives last; the one asked for after it stays.
    with page.expect_response("**/signatures/preview"):
        held[0].continue_()
    watch.settled()
    assert "Best, alice@acme.test" in (preview.get_attribute("srcdoc") or "")
    assert watch.errors == []
