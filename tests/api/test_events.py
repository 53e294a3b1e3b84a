"""The live event stream over a real HTTP server (uvicorn on loopback): mail stored by another
process reaches the right users within 2 s (on PostgreSQL by LISTEN/NOTIFY, with polling only
while the listening connection is down), assignments, mentions and presence arrive, and nothing
crosses the visibility rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from sqlalchemy import Engine, text

from core.caller import Caller
from core.db import session_scope
from crm import auth, grants, tenants
from devtools.samples import build_message
from inbox_api import live
from inbox_api.routes import events as event_routes
from tests.crm.world import World, build_world
from tests.dovecot_fixtures import MailboxUser
from tests.factories import make_account, make_tenant
from tests.serving import served_app


@pytest.fixture
def world(db: Engine) -> World:
    return build_world(db)


@pytest.fixture
def base_url(world: World) -> Iterator[str]:
    with served_app() as url:
        yield url


def _token(db: Engine, world: World, who: str) -> dict[str, str]:
    with session_scope(db) as s:
        created = auth.create_token(session=s, caller=world.caller(who), user_id=world.users[who])
    return {"Authorization": f"Bearer {created.secret.get_secret_value()}"}


class Stream:
    """Reads SSE events from a background thread into a list, each with the time it arrived
    (`at`, time.monotonic()): a limit is checked on that, not on when the test got round to
    looking, which on a busy machine can be much later."""

    def __init__(self, url: str, headers: dict[str, str]) -> None:
        self.events: list[dict[str, Any]] = []
        self._client = httpx.Client(timeout=httpx.Timeout(30.0))
        self._response = self._client.send(
            self._client.build_request("GET", url, headers=headers), stream=True
        )
        assert self._response.status_code == 200, self._response.read()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()
        self.wait_for(lambda e: e["event"] == "ready")

    def _read(self) -> None:
        event: dict[str, Any] = {}
        try:
            for line in self._response.iter_lines():
                if not line:
                    if event:
                        event["at"] = time.monotonic()
                        self.events.append(event)
                    event = {}
                elif line.startswith("event:"):
                    event["event"] = line.split(":", 1)[1].strip()
                elif line.startswith("data:"):
                    event["data"] = json.loads(line.split(":", 1)[1].strip())
                elif line.startswith("id:"):
                    event["id"] = line.split(":", 1)[1].strip()
        except (httpx.HTTPError, RuntimeError):
            return

    def wait_for(self, predicate: Any, timeout: float = 15.0) -> dict[str, Any]:
        """The first event that matches, waiting for it up to `timeout` (a limit on the test,
        not a requirement: see `within`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in self.events:
                if predicate(event):
                    return event
            time.sleep(0.02)
        raise AssertionError(f"no matching event within {timeout} s; got {self.events}")

    def within(self, predicate: Any, since: float, limit: float = 2.0) -> dict[str, Any]:
        """The first matching event, which must have arrived within `limit` s of `since` (a
        time.monotonic() of this or another process: one clock on Linux)."""
        event = self.wait_for(predicate, timeout=limit + 10.0)
        assert event["at"] - since < limit, f"arrived {event['at'] - since:.2f} s after, not < {limit} s"
        return event

    def close(self) -> None:
        self._response.close()
        self._client.close()


@contextmanager
def streams(base_url: str, *headers: dict[str, str]) -> Iterator[list[Stream]]:
    opened = [Stream(f"{base_url}/api/events", h) for h in headers]
    try:
        yield opened
    finally:
        for stream in opened:
            stream.close()


def _store_in_other_process(db: Engine, world: World, key: str, account: str, thread: str) -> float:
    """Insert a message as the sync would, from a separate Python process; returns when it
    committed (the child's time.monotonic() then: the same clock as ours on Linux), not when the
    child had exited, which can be much later on a busy machine."""
    script = textwrap.dedent(
        f"""
        import time
        from datetime import UTC, datetime
        from sqlmodel import select
        from core.db import make_engine, session_scope
        from core.types import FolderRole, UidState
        from crm.models import FolderState, ImapUid, Message
        engine = make_engine({db.url.render_as_string(hide_password=False)!r})
        with session_scope(engine) as s:
            m = Message(tenant_id={world.tenant}, message_id="<{key}@mail.test>", content_hash="{key}",
                        subject="Re: {thread}", date=datetime.now(UTC), from_email="new@globex.test",
                        thread_id={world.threads[thread]})
            s.add(m)
            s.flush()
            folder = s.exec(
                select(FolderState).where(FolderState.account_id == {world.accounts[account]})
            ).one()
            s.add(ImapUid(account_id={world.accounts[account]}, folder_id=folder.id, uidvalidity=1,
                          uid=9000 + m.id, state=UidState.STORED, message_pk=m.id))
        print(time.monotonic())
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], check=True, timeout=60, capture_output=True, text=True
    )
    return float(done.stdout.split()[-1])


def test_new_mail_from_another_process_reaches_who_may_see_it(
    db: Engine, world: World, base_url: str
) -> None:
    with streams(base_url, _token(db, world, "alice"), _token(db, world, "bob")) as (alice, bob):
        stored_at = _store_in_other_process(db, world, "fresh-a", "A", "Alpha")
        event = alice.within(lambda e: e.get("event") == "message.new", since=stored_at)
        assert (
            event["data"]["thread_id"] == world.threads["Alpha"]
            and event["data"]["from"] == "new@globex.test"
        )
        # Bob cannot see account A: his first mail event is the later one in B.
        stored_at = _store_in_other_process(db, world, "fresh-b", "B", "Beta")
        first = bob.within(lambda e: e.get("event") == "message.new", since=stored_at)
        assert first["data"]["thread_id"] == world.threads["Beta"]
        assert all(
            e["data"]["thread_id"] != world.threads["Alpha"]
            for e in bob.events
            if e.get("event") == "message.new"
        )


def test_assignment_mention_and_presence_events(db: Engine, world: World, base_url: str) -> None:
    alice_h, bob_h = _token(db, world, "alice"), _token(db, world, "bob")
    shared = world.threads["Shared"]
    with streams(base_url, alice_h, bob_h) as (alice, bob), httpx.Client(base_url=base_url) as http:
        assigned = http.post(
            f"/api/threads/{shared}/assign", json={"assignee_user_id": world.users["alice"]}, headers=bob_h
        )
        assert assigned.status_code == 200
        event = alice.wait_for(lambda e: e.get("event") == "conversation.assigned")
        assert (
            event["data"]["assignee"] == world.users["alice"] and event["data"]["actor"] == world.users["bob"]
        )
        http.post(f"/api/threads/{shared}/notes", json={"body": "@alice please call them"}, headers=bob_h)
        mention = alice.wait_for(lambda e: e.get("event") == "mention")
        assert mention["data"]["user_id"] == world.users["alice"]
        bob.wait_for(lambda e: e.get("event") == "note.new")
        assert not any(e.get("event") == "mention" for e in bob.events)  # the mention is alice's
        # Presence: alice opens the conversation and starts replying; bob sees it.
        seen = http.post(f"/api/threads/{shared}/presence", json={"state": "replying"}, headers=alice_h)
        assert seen.status_code == 200 and seen.json() == []
        presence = bob.wait_for(lambda e: e.get("event") == "presence" and e["data"]["people"])
        assert presence["data"]["people"][0]["state"] == "replying"
        others = http.get(f"/api/threads/{shared}/presence", headers=bob_h).json()
        assert [p["user_id"] for p in others] == [world.users["alice"]]
        http.post(f"/api/threads/{shared}/presence", json={"state": "left"}, headers=alice_h)
        bob.wait_for(lambda e: e.get("event") == "presence" and e["data"]["people"] == [])
        assert http.get(f"/api/threads/{shared}/presence", headers=bob_h).json() == []


def test_resume_with_last_event_id_and_stop_when_deactivated(db: Engine, world: World, base_url: str) -> None:
    headers = _token(db, world, "alice")
    with streams(base_url, headers) as (first,):
        stored_at = _store_in_other_process(db, world, "one", "A", "Alpha")
        event = first.within(lambda e: e.get("event") == "message.new", since=stored_at)
    _store_in_other_process(db, world, "two", "A", "Alpha")  # while disconnected
    reconnected = time.monotonic()
    with streams(base_url, {**headers, "Last-Event-ID": event["id"]}) as (again,):
        missed = again.within(lambda e: e.get("event") == "message.new", since=reconnected)
        assert missed["data"]["message"] != event["data"]["message"]
        from crm.models import User

        with session_scope(db) as s:
            user = s.get(User, world.users["alice"])
            assert user is not None
            user.active = False
        again.wait_for(lambda e: e.get("event") == "signed_out")


def _listening(db: Engine) -> live.Listener:
    listener = live.listener_for(db)
    assert listener is not None
    deadline = time.monotonic() + 10
    while not listener.listening and time.monotonic() < deadline:
        time.sleep(0.02)
    assert listener.listening
    return listener


def _listener_backends(db: Engine) -> list[int]:
    with db.connect() as conn:
        return list(
            conn.execute(
                text(
                    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                    "AND application_name = :name"
                ),
                {"name": live.APPLICATION_NAME},
            ).scalars()
        )


def test_mail_synced_by_another_process_is_on_the_stream_within_2s(
    db: Engine, mailbox_user: MailboxUser, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A real `crm-inbox sync --once` in a separate process, against Dovecot: the user who may see
    the account hears of the new conversation within 2 s of the sync's end. On PostgreSQL the
    stream is woken by the sync's NOTIFY: its polling is set far beyond 2 s here."""
    postgres = db.dialect.name == "postgresql"
    if postgres:
        monkeypatch.setattr(event_routes, "LISTENING_POLL_SECONDS", 60.0)
    tenant_id = make_tenant(db)
    account_id = make_account(db, tenant_id, mailbox_user, email="sales@acme.test")
    operator = Caller.operator(tenant_id)
    with session_scope(db) as s:
        sam = tenants.create_user(session=s, caller=operator, email="sam@acme.test")
        grants.grant_access(session=s, caller=operator, account_id=account_id, user_id=sam.id)
        token = auth.create_token(session=s, caller=operator, user_id=sam.id).secret.get_secret_value()
    with served_app() as url, streams(url, {"Authorization": f"Bearer {token}"}) as (stream,):
        if postgres:
            _listening(db)
            time.sleep(0.5)  # let the wake-up of the listener's start be read: only NOTIFY is left
        mailbox_user.dovecot.append(
            mailbox_user.name,
            "INBOX",
            build_message(subject="Fresh order", from_="buyer@globex.test", to="sales@acme.test"),
        )
        env = dict(os.environ)
        env["CRM_INBOX_DATABASE_URL"] = db.url.render_as_string(hide_password=False)
        done = subprocess.run(
            [sys.executable, "-m", "crm_inbox", "sync", "--once"],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        finished = time.monotonic()
        assert done.returncode == 0, done.stderr
        event = stream.within(lambda e: e.get("event") == "message.new", since=finished)
        assert event["data"]["subject"] == "Fresh order"


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
def test_a_dropped_listener_falls_back_to_polling_and_comes_back(
    db: Engine, world: World, base_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The listening connection killed by the server: streams poll every second meanwhile (no
    mail is missed), the listener reconnects, and notifications wake the streams again."""
    monkeypatch.setattr(event_routes, "LISTENING_POLL_SECONDS", 60.0)
    with streams(base_url, _token(db, world, "alice")) as (alice,):
        listener = _listening(db)
        (backend,) = _listener_backends(db)
        with db.connect() as conn:
            assert conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": backend}).scalar()
        stored_at = _store_in_other_process(db, world, "while-down", "A", "Alpha")
        first = alice.within(
            lambda e: e.get("event") == "message.new" and e["data"]["subject"] == "Re: Alpha", since=stored_at
        )
        _listening(db)
        assert _listener_backends(db) not in ([], [backend])  # a new connection
        time.sleep(1.5)  # past any poll of the fallback: from here only NOTIFY wakes the stream
        assert listener.listening
        stored_at = _store_in_other_process(db, world, "after", "A", "Alpha")
        second = alice.within(
            lambda e: e.get("event") == "message.new" and e["data"]["message"] != first["data"]["message"],
            since=stored_at,
        )
        assert second["data"]["thread_id"] == world.threads["Alpha"]
