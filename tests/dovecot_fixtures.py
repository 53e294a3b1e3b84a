"""Pytest plugin: one real Dovecot per test session, a fresh IMAP user per test.

Loaded from ``tests/conftest.py`` via ``pytest_plugins`` (or ``-p tests.dovecot_fixtures``).
A missing Dovecot is a *failure*, never a skip: a green run that silently skipped every
IMAP test would be worse than a red one.  One server per session keeps the suite fast
(start ~0.15 s); per-test isolation comes from giving every test its own user/mailbox.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import pytest

from devtools.devmail import (
    DovecotNotInstalledError,
    DovecotStartError,
    LocalDovecot,
    ensure_dovecot_installed,
)
from devtools.imapops import ImapTestServer


class Mailbox(Protocol):
    """What the test helpers need of a mailbox: a user's credentials and its server (Dovecot,
    or another server of the servers matrix, tests/imap_servers.py)."""

    @property
    def name(self) -> str: ...
    @property
    def password(self) -> str: ...
    @property
    def server(self) -> ImapTestServer: ...


@dataclass(frozen=True)
class MailboxUser:
    """Credentials of a test's own, initially empty mailbox (INBOX, Sent, Drafts, Trash)."""

    name: str
    password: str
    dovecot: LocalDovecot

    @property
    def host(self) -> str:
        return self.dovecot.host

    @property
    def server(self) -> LocalDovecot:
        return self.dovecot


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tag tests that use the server with the ``dovecot`` marker (``-m "not dovecot"``); the
    servers matrix (tests/imap_servers.py) counts as such."""
    for item in items:
        if {"dovecot", "mailbox_user", "server_user", "cyrus"} & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.dovecot)


@pytest.fixture(scope="session")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalDovecot]:
    """The session's Dovecot: plain IMAP on ``.port``, implicit TLS on ``.ssl_port``."""
    try:
        ensure_dovecot_installed()
    except DovecotNotInstalledError as exc:
        pytest.fail(str(exc), pytrace=False)
    server = LocalDovecot(tmp_path_factory.mktemp("dovecot"), tls=True)
    try:
        server.start()
    except DovecotStartError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mailbox_user(dovecot: LocalDovecot) -> MailboxUser:
    """A brand-new user whose INBOX and Sent exist and are empty.

    Restarts the session server if an earlier test stopped it (restart scenarios), so
    one test cannot take every later test down with it.
    """
    if not dovecot.running:
        dovecot.start()
    name = f"u{uuid.uuid4().hex[:12]}"
    password = secrets.token_urlsafe(12)
    dovecot.add_user(name, password)
    with dovecot.client(name) as conn:  # first login auto-creates the special folders
        for folder in ("INBOX", "Sent"):
            conn.folder_status(folder, ["MESSAGES"])
    return MailboxUser(name=name, password=password, dovecot=dovecot)
