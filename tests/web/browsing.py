"""What the browser tests share: where Chromium is, the test password, a watch on what a page
did (dialogs, errors, requests, and whether it has handled every answer it asked for), polling
with a deadline, and the accessibility and layout probes."""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Dialog, Page, sync_playwright

CHROMIUM = "/usr/bin/chromium"
PASSWORD = "correct horse battery"
SHOTS = Path(os.environ.get("CRM_INBOX_SCREENSHOTS", "test-screenshots"))
# Debian's Chromium, kept off the network: no name resolves but loopback, nothing of its own
# (updates, sync, first-run pages) is fetched.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


@contextlib.contextmanager
def chromium() -> Iterator[Browser]:
    """The system's Chromium through Playwright; a failure, never a skip, when it is missing
    (./scripts/setup installs Debian's chromium package)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run ./scripts/setup (Debian's chromium package)", pytrace=False)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


# The page's API calls not yet answered *and handled*: a call counts until its JSON was read and
# the page's code that awaited it has run (its continuation runs in the microtasks before the
# timer that counts it down). A test waits for none in flight before checking that something did
# NOT happen (a late answer ignored, a choice kept), instead of guessing a delay a loaded machine
# may exceed. The pages only call fetch through crm.api, which reads the JSON unless the answer is
# 204 or 401. Injected by the browser, so the pages' CSP does not apply to it.
TRACK_ANSWERS = """(() => {
  const fetch0 = window.fetch.bind(window);
  window.__inflight = 0;
  const done = () => setTimeout(() => { window.__inflight -= 1; }, 0);
  window.fetch = async (...args) => {
    window.__inflight += 1;
    let response;
    try { response = await fetch0(...args); } catch (error) { done(); throw error; }
    if (response.status === 204 || response.status === 401) { done(); return response; }
    const json = response.json.bind(response);
    response.json = () => json().finally(done);
    return response;
  };
})();"""


class Watch:
    """Dialogs opened, console errors and every request the page made; `settled()` waits until
    the page has handled every answer it asked for (see TRACK_ANSWERS). Made before the page
    loads anything."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.add_init_script(TRACK_ANSWERS)
        page.on("dialog", self._dialog)
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def settled(self, timeout: float = 15000) -> None:
        """No API call of the page in flight, nor an answer its code has yet to handle."""
        self.page.wait_for_function("() => window.__inflight === 0", timeout=timeout)

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def remote(self) -> list[str]:
        return [u for u in self.requests if not u.startswith(("http://127.0.0.1", "data:", "about:"))]


def wait_until(page: Page, done: Callable[[], bool], failure: str, timeout: float = 15.0) -> None:
    """Polls a condition of the test's own (a held route, a server's log) while the page runs."""
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, failure
        page.wait_for_timeout(20)


INTERACTIVE_ROLES = {
    "button", "textbox", "searchbox", "combobox", "checkbox", "radio", "spinbutton", "listbox", "link",
    "menuitem", "slider", "switch", "tab",
}  # fmt: skip


def unnamed_controls(page: Page) -> list[str]:
    """Controls whose accessible name, as Chromium computes it for assistive technology, is empty."""
    cdp = page.context.new_cdp_session(page)
    try:
        tree = cdp.send("Accessibility.getFullAXTree")
    finally:
        cdp.detach()
    unnamed = []
    for node in tree["nodes"]:
        role = node.get("role", {}).get("value")
        if node.get("ignored") or role not in INTERACTIVE_ROLES:
            continue
        if not str(node.get("name", {}).get("value", "")).strip():
            unnamed.append(f"{role} (backend node {node.get('backendDOMNodeId')})")
    return unnamed


def no_horizontal_scroll(page: Page) -> bool:
    return bool(page.evaluate("() => document.documentElement.scrollWidth <= window.innerWidth"))


# Resolves once two frames were drawn after the call: what changed before it is laid out and on
# screen (and its layout shifts queued), however long a frame takes on a busy machine.
TWO_FRAMES = "() => new Promise(done => requestAnimationFrame(() => requestAnimationFrame(done)))"
