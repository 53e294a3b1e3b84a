"""Pytest plugin: the servers matrix. A Cyrus IMAP server per session (started on first use,
like the Dovecot one) and `server_user`, a fresh mailbox on each server in turn.

Like Dovecot, a Cyrus that cannot be unpacked or started is a failure, never a skip.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from devtools.cyrus import CyrusNotInstalledError, CyrusStartError, LocalCyrus
from devtools.devmail import LocalDovecot


@dataclass(frozen=True)
class ServerUser:
    """A test's own mailbox (INBOX and a Sent folder flagged \\Sent exist, empty) on `server`."""

    name: str
    password: str
    server: LocalDovecot | LocalCyrus
    kind: str  # "dovecot" or "cyrus"


@pytest.fixture(scope="session")
def cyrus() -> Iterator[LocalCyrus]:
    server = LocalCyrus()
    try:
        server.start()
    except (CyrusNotInstalledError, CyrusStartError) as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(params=["dovecot", "cyrus"])
def server_user(request: pytest.FixtureRequest) -> ServerUser:
    server: LocalDovecot | LocalCyrus = request.getfixturevalue(request.param)
    if not server.running:
        server.start()
    name = f"u{uuid.uuid4().hex[:12]}"
    password = secrets.token_urlsafe(12)
    server.add_user(name, password)
    with server.client(name) as conn:  # the first login creates INBOX and the special folders
        for folder in ("INBOX", "Sent"):
            conn.folder_status(folder, ["MESSAGES"])
    return ServerUser(name=name, password=password, server=server, kind=request.param)
