"""Servers misbehaving in ways Dovecot cannot be made to on demand (one undeliverable message,
lying status values): a scripted IMAP session stands in. The database is real."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from core.settings import Settings
from core.types import FolderRole, UidState
from crm.models import FetchFailure, FolderState, ImapUid, Message
from devtools.samples import build_message
from sync import errors, imap as imap_module
from sync.account_pass import SyncEngine
from sync.types import FolderInfo, FolderStatus, MessageMeta
from tests.factories import make_offline_account, make_tenant


class ScriptedSession:
    """Serves INBOX from a dict; fetching `broken` fails like a server NO response."""

    def __init__(self, messages: dict[int, bytes], broken: int, stage: str = "body") -> None:
        self.inbox = messages
        self.broken = broken
        self.stage = stage  # which FETCH the server refuses for `broken`: "meta" or "body"
        self.messages: dict[int, bytes] = {}

    def __enter__(self) -> ScriptedSession:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def logout(self) -> None:
        return None

    def has(self, capability: str) -> bool:
        return False

    def list_folders(self) -> list[FolderInfo]:
        return [FolderInfo("INBOX", "/"), FolderInfo("Sent", "/", ("\\Sent",))]

    def status(self, name: str) -> FolderStatus:
        uids = sorted(self.inbox) if name == "INBOX" else []
        return FolderStatus(name, 42, (max(uids) + 1) if uids else 1, len(uids), None)

    def examine(self, name: str) -> FolderStatus:
        self.messages = self.inbox if name == "INBOX" else {}
        return self.status(name)

    def uids_above(self, uid: int) -> list[int]:
        return [u for u in sorted(self.messages) if u > uid]

    def all_uids(self) -> list[int]:
        return sorted(self.messages)

    def exists(self, uid: int) -> bool:
        return uid in self.messages

    def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        return {u: len(self.messages[u]) for u in uids if u in self.messages}

    def fetch_meta(self, uids: Sequence[int]) -> list[MessageMeta]:
        if self.stage == "meta" and self.broken in uids:
            raise errors.ProtocolError("fetching message sizes and headers")
        return [
            MessageMeta(uid, len(self.messages[u]), (), datetime(2026, 1, 1, tzinfo=UTC), b"")
            for u in uids
            for uid in [u]
        ]

    def fetch_bodies(
        self, uids: Sequence[int], *, headers_only: bool = False, expected_bytes: int = 0
    ) -> dict[int, bytes]:
        if self.stage == "body" and self.broken in uids:
            raise errors.ProtocolError("downloading messages")
        return {u: self.messages[u] for u in uids}


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> ScriptedSession:
    messages = {
        uid: build_message(
            subject=f"m{uid}", from_="a@globex.test", to="s@acme.test", message_id=f"<q{uid}@test>"
        )
        for uid in (1, 2, 3)
    }
    session = ScriptedSession(messages, broken=2)
    monkeypatch.setattr(imap_module, "connect", lambda endpoint, password, **kw: session)
    return session


def test_failing_message_is_retried_then_quarantined(
    db: Engine, scripted: ScriptedSession, settings: Settings
) -> None:
    account_id = make_offline_account(db, make_tenant(db))

    def cursor() -> int:
        with Session(db) as s:
            return s.exec(select(FolderState.highest_uid).where(FolderState.role == FolderRole.INBOX)).one()

    engine = SyncEngine(db=db, settings=settings)
    first = engine.sync_account(account_id)
    assert first.status == "ok" and first.new_messages == 2
    assert cursor() == 1  # stops before the failing UID; 3 is stored but the cursor waits
    second = engine.sync_account(account_id)
    assert second.new_messages == 0 and cursor() == 1
    third = engine.sync_account(account_id)
    assert third.quarantined == 1
    assert cursor() == 3  # quarantined: the folder moves on
    with Session(db) as s:
        failure = s.exec(select(FetchFailure)).one()
        quarantined = s.exec(select(ImapUid).where(ImapUid.state == UidState.QUARANTINED)).one()
        stored = s.exec(select(Message.message_id)).all()
    assert failure.attempts == settings.max_message_attempts and failure.quarantined
    assert "rejected or garbled" in failure.last_error
    assert quarantined.uid == 2
    assert sorted(stored) == ["<q1@test>", "<q3@test>"]
    # Later passes do not try it again.
    assert engine.sync_account(account_id).quarantined == 0


class LyingSession(ScriptedSession):
    """Reports whatever status the test sets, the way broken servers do."""

    def __init__(self, messages: dict[int, bytes]) -> None:
        super().__init__(messages, broken=-1)
        self.fake = FolderStatus("INBOX", 42, 4, 3, 100)

    def status(self, name: str) -> FolderStatus:
        if name != "INBOX":
            return FolderStatus(name, 9, 1, 0, None)
        return self.fake

    def examine(self, name: str) -> FolderStatus:
        self.messages = self.inbox if name == "INBOX" else {}
        return self.status(name)

    def has(self, capability: str) -> bool:
        return capability == "CONDSTORE"

    def changed_flags(self, modseq: int) -> dict[int, tuple[str, ...]]:
        return {}

    def all_flags(self) -> dict[int, tuple[str, ...]]:
        return {uid: ("\\Answered",) for uid in self.inbox}


def test_lying_server_values_never_reach_the_cursor(
    db: Engine, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    messages = {
        uid: build_message(
            subject=f"m{uid}", from_="a@globex.test", to="s@acme.test", message_id=f"<l{uid}@test>"
        )
        for uid in (1, 2, 3)
    }
    server = LyingSession(messages)
    monkeypatch.setattr(imap_module, "connect", lambda endpoint, password, **kw: server)
    account_id = make_offline_account(db, make_tenant(db))

    def folder() -> FolderState:
        with Session(db) as s:
            return s.exec(select(FolderState).where(FolderState.role == FolderRole.INBOX)).one()

    engine = SyncEngine(db=db, settings=settings)
    assert engine.sync_account(account_id).new_messages == 3
    assert (folder().uidvalidity, folder().uidnext, folder().highestmodseq) == (42, 4, 100)

    # UIDVALIDITY 0: the folder is not synced and the saved cursor is untouched.
    server.fake = FolderStatus("INBOX", 0, 4, 3, 100)
    summary = engine.sync_account(account_id)
    assert summary.status == "partial" and "no valid UIDVALIDITY" in " ".join(summary.errors)
    assert (folder().uidvalidity, folder().highest_uid) == (42, 3)

    # HIGHESTMODSEQ going backwards: flags are rescanned in full, the saved value stays.
    server.fake = FolderStatus("INBOX", 42, 4, 3, 7)
    assert engine.sync_account(account_id).status == "ok"
    assert folder().highestmodseq == 100
    with Session(db) as s:
        assert {tuple(u.flags) for u in s.exec(select(ImapUid)).all()} == {("\\Answered",)}

    # No UIDNEXT at all: searched instead of trusted; nothing new, nothing duplicated.
    server.fake = FolderStatus("INBOX", 42, None, 3, 100)
    assert engine.sync_account(account_id).new_messages == 0
    assert folder().uidnext == 4
    with Session(db) as s:
        assert len(s.exec(select(Message)).all()) == 3


@pytest.mark.parametrize("stage", ["meta", "body"])
def test_failure_in_an_early_batch_holds_the_cursor_for_the_whole_pass(
    db: Engine,
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    stage: str,
) -> None:
    messages = {
        uid: build_message(
            subject=f"m{uid}", from_="a@globex.test", to="s@acme.test", message_id=f"<g{uid}@test>"
        )
        for uid in range(1, 8)
    }
    server = ScriptedSession(messages, broken=2, stage=stage)
    monkeypatch.setattr(imap_module, "connect", lambda endpoint, password, **kw: server)
    settings.sync_batch_size = 3  # batches [1,2,3] [4,5,6] [7]: the failure is in the first
    account_id = make_offline_account(db, make_tenant(db))

    def cursor() -> int:
        with Session(db) as s:
            return s.exec(select(FolderState.highest_uid).where(FolderState.role == FolderRole.INBOX)).one()

    engine = SyncEngine(db=db, settings=settings)
    first = engine.sync_account(account_id)
    assert first.new_messages == 6  # everything but UID 2 is stored...
    assert cursor() == 1  # ...and the cursor waits before it, even after later batches
    for _ in range(settings.max_message_attempts - 1):
        engine.sync_account(account_id)
    assert cursor() == 7  # quarantined after the last attempt: the folder moves on
    with Session(db) as s:
        assert s.exec(select(ImapUid).where(ImapUid.state == UidState.QUARANTINED)).one().uid == 2
        assert len(s.exec(select(Message)).all()) == 6


class UnsavedUidsSession(ScriptedSession):
    """A server that hands out a new UIDVALIDITY at every read-only open until some client
    opens the folder read-write (it saves its UID database only then); issue 12.2."""

    def __init__(self, messages: dict[int, bytes]) -> None:
        super().__init__(messages, broken=-1)
        self.validity = 100
        self.saved = False
        self.readwrite_opens = 0

    def status(self, name: str) -> FolderStatus:
        if name != "INBOX":
            return FolderStatus(name, 9, 1, 0, None)
        if not self.saved:
            self.validity += 1
        return FolderStatus(name, self.validity, max(self.inbox) + 1, len(self.inbox), None)

    def select_readwrite(self, name: str) -> FolderStatus:
        self.readwrite_opens += 1
        if name == "INBOX":
            self.saved = True
        return self.status(name)


def test_uidvalidity_unsaved_until_a_readwrite_open(
    db: Engine, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    messages = {
        uid: build_message(
            subject=f"m{uid}", from_="a@globex.test", to="s@acme.test", message_id=f"<u{uid}@test>"
        )
        for uid in (1, 2, 3)
    }
    server = UnsavedUidsSession(messages)
    monkeypatch.setattr(imap_module, "connect", lambda endpoint, password, **kw: server)
    account_id = make_offline_account(db, make_tenant(db))
    engine = SyncEngine(db=db, settings=settings)
    for _ in range(settings.max_uidvalidity_resyncs + 2):
        summary = engine.sync_account(account_id)
        assert summary.status == "ok", summary.errors
    assert server.readwrite_opens == 1
    with Session(db) as s:
        inbox = s.exec(select(FolderState).where(FolderState.role == FolderRole.INBOX)).one()
        assert inbox.uidvalidity == server.validity and inbox.highest_uid == 3
        assert len(s.exec(select(Message)).all()) == 3  # nothing duplicated


class GmailSession(ScriptedSession):
    """Gmail's layout: `[Gmail]/Sent Mail` flagged \\Sent (Cyrus-style lower case here), and
    `[Gmail]/All Mail` holding every message again, which must never be synced (issue 12.3)."""

    def __init__(self, inbox: dict[int, bytes], sent: dict[int, bytes]) -> None:
        super().__init__(inbox, broken=-1)
        self.sent = sent
        self.opened: list[str] = []

    def list_folders(self) -> list[FolderInfo]:
        return [
            FolderInfo("INBOX", "/"),
            FolderInfo("[Gmail]", "/", ("\\Noselect", "\\HasChildren")),
            FolderInfo("[Gmail]/All Mail", "/", ("\\All",)),
            FolderInfo("[Gmail]/Sent Mail", "/", ("\\sent",)),
        ]

    def _folder(self, name: str) -> dict[int, bytes]:
        return {"INBOX": self.inbox, "[Gmail]/Sent Mail": self.sent}.get(name, {**self.inbox, **self.sent})

    def status(self, name: str) -> FolderStatus:
        uids = sorted(self._folder(name))
        return FolderStatus(name, 7, (max(uids) + 1) if uids else 1, len(uids), None)

    def examine(self, name: str) -> FolderStatus:
        self.opened.append(name)
        self.messages = self._folder(name)
        return self.status(name)


def test_gmail_layout_syncs_inbox_and_sent_mail_only(
    db: Engine, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    def message(i: int, sender: str) -> bytes:
        return build_message(subject=f"m{i}", from_=sender, to="x@globex.test", message_id=f"<gm{i}@test>")

    server = GmailSession({1: message(1, "a@globex.test")}, {1: message(2, "s@acme.test")})
    monkeypatch.setattr(imap_module, "connect", lambda endpoint, password, **kw: server)
    account_id = make_offline_account(db, make_tenant(db))
    summary = SyncEngine(db=db, settings=settings).sync_account(account_id)
    assert summary.status == "ok", summary.errors
    assert summary.folders == {"inbox": "INBOX", "sent": "[Gmail]/Sent Mail"}
    assert server.opened == ["INBOX", "[Gmail]/Sent Mail"] and summary.new_messages == 2
