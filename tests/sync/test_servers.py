"""Issue 12.3, the servers matrix: the sync cases that depend on how a server answers, against
Dovecot and Cyrus IMAP (both real, started by the suite), and the Gmail folder layout on Cyrus.

SQLite only: the storage side is covered on both databases by test_engine.py; what varies here is
the server.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import NamedTuple, Unpack

import pytest
from sqlalchemy import ColumnElement, Engine, func
from sqlmodel import Session, col, select

from core.types import AccountStatus, Direction, FolderRole, Security
from crm.models import FolderState, ImapUid, MailAccount, Message
from devtools.cyrus import LocalCyrus
from devtools.samples import MessageFields, build_message
from sync.account_pass import SyncEngine
from tests.factories import make_account, make_tenant
from tests.imap_servers import ServerUser


def _count(db: Engine, model: type, *where: ColumnElement[bool]) -> int:
    with Session(db) as session:
        return session.exec(select(func.count()).select_from(model).where(*where)).one()


def _msg(i: int, **kw: Unpack[MessageFields]) -> bytes:
    fields: MessageFields = {
        "subject": f"Quote {i}",
        "from_": f"buyer{i}@globex.test",
        "to": "sales@acme.test",
        "message_id": f"<msg{i}@globex.test>",
        "date": datetime(2026, 3, 1, 9, 0, tzinfo=UTC) + timedelta(hours=i),
    }
    fields.update(kw)
    return build_message(**fields)


def _reply(i: int) -> bytes:
    return _msg(
        100 + i,
        subject=f"Re: Quote {i}",
        from_="sales@acme.test",
        to=f"buyer{i}@globex.test",
        in_reply_to=f"<msg{i}@globex.test>",
        references=[f"<msg{i}@globex.test>"],
    )


class Setup(NamedTuple):
    db: Engine
    account_id: int
    box: ServerUser


@pytest.fixture
def setup(sqlite_db: Engine, server_user: ServerUser) -> Setup:
    tenant_id = make_tenant(sqlite_db)
    return Setup(
        sqlite_db, make_account(sqlite_db, tenant_id, server_user, email="sales@acme.test"), server_user
    )


def _stored_flags(db: Engine) -> dict[int, tuple[str, ...]]:
    """UID -> flags as stored (one folder in use)."""
    with Session(db) as session:
        rows = session.exec(select(ImapUid).where(col(ImapUid.expunged_at).is_(None))).all()
        return {u.uid: tuple(sorted(u.flags)) for u in rows}


def test_first_sync_second_pass_nothing_then_late_mail(setup: Setup) -> None:
    db, account_id, box = setup
    box.server.append_many(box.name, "INBOX", [_msg(i) for i in range(3)])
    box.server.append(box.name, "Sent", _reply(1))
    first = SyncEngine(db=db).sync_account(account_id)
    assert first.status == "ok", first.errors
    assert first.new_messages == 4
    assert first.folders == {"inbox": "INBOX", "sent": "Sent"}  # Cyrus flags it `\sent`
    with Session(db) as session:
        reply = session.exec(select(Message).where(Message.message_id == "<msg101@globex.test>")).one()
        parent = session.exec(select(Message).where(Message.message_id == "<msg1@globex.test>")).one()
    assert reply.direction is Direction.OUTBOUND and reply.thread_id == parent.thread_id

    second = SyncEngine(db=db).sync_account(account_id)
    assert (second.status, second.new_messages, second.new_locations, second.expunged) == ("ok", 0, 0, 0)

    box.server.append(box.name, "INBOX", _msg(7))
    late = SyncEngine(db=db).sync_account(account_id)
    assert (late.status, late.new_messages) == ("ok", 1)
    assert _count(db, Message) == 5 and _count(db, ImapUid) == 5


def test_expunge_is_noticed_and_mail_kept(setup: Setup) -> None:
    db, account_id, box = setup
    uids = box.server.append_many(box.name, "INBOX", [_msg(i) for i in range(3)])
    SyncEngine(db=db).sync_account(account_id)
    box.server.expunge(box.name, "INBOX", [uids[1]])
    summary = SyncEngine(db=db).sync_account(account_id)
    assert summary.status == "ok" and summary.expunged == 1
    with Session(db) as session:
        gone = session.exec(select(ImapUid.uid).where(col(ImapUid.expunged_at).is_not(None))).all()
    assert gone == [uids[1]]
    assert _count(db, Message) == 3


def test_flags_are_followed_and_sync_never_marks_read(setup: Setup) -> None:
    db, account_id, box = setup
    uids = box.server.append_many(box.name, "INBOX", [_msg(1), _msg(2)])
    box.server.append(box.name, "INBOX", _msg(3), flags=["\\Flagged"])
    assert SyncEngine(db=db).sync_account(account_id).new_messages == 3
    assert all("\\Seen" not in f for f in box.server.flags(box.name, "INBOX").values())
    assert ("\\Flagged",) in _stored_flags(db).values()
    # Someone reads and flags mail in their own client: the next pass follows (CONDSTORE).
    with box.server.client(box.name) as conn:
        conn.select_folder("INBOX")
        conn.add_flags([uids[0]], ["\\Seen", "\\Answered"])
    summary = SyncEngine(db=db).sync_account(account_id)
    assert summary.status == "ok"
    stored = _stored_flags(db)
    assert stored[uids[0]] == ("\\Answered", "\\Seen")
    assert stored[uids[1]] == ()
    assert all("\\Seen" not in f for u, f in box.server.flags(box.name, "INBOX").items() if u != uids[0])


def test_uidvalidity_change_rekeys_without_duplicates(setup: Setup) -> None:
    """Sent gets a new UIDVALIDITY (Cyrus: deleted and recreated around its mail, new UIDs)."""
    db, account_id, box = setup
    box.server.append_many(box.name, "Sent", [_reply(i) for i in range(3)])
    assert SyncEngine(db=db).sync_account(account_id).new_messages == 3
    with Session(db) as session:
        before = {m.message_id: m.id for m in session.exec(select(Message)).all()}
        old = session.exec(select(FolderState.uidvalidity).where(FolderState.role == FolderRole.SENT)).one()
    new = box.server.reset_uidvalidity(box.name, "Sent")
    assert new != old
    summary = SyncEngine(db=db).sync_account(account_id)
    assert summary.status == "ok", summary.errors
    assert (summary.new_messages, summary.new_locations) == (0, 3)
    with Session(db) as session:
        after = {m.message_id: m.id for m in session.exec(select(Message)).all()}
        live = session.exec(select(ImapUid).where(col(ImapUid.expunged_at).is_(None))).all()
    assert after == before
    assert {u.uidvalidity for u in live} == {new} and len(live) == 3
    again = SyncEngine(db=db).sync_account(account_id)
    assert (again.new_messages, again.new_locations) == (0, 0)


def test_tls_starttls_and_untrusted_certificate(setup: Setup) -> None:
    db, account_id, box = setup
    box.server.append(box.name, "INBOX", _msg(1))
    assert SyncEngine(db=db).sync_account(account_id).status == "ok"  # implicit TLS, test CA
    with Session(db) as session:
        tenant_id = session.get_one(MailAccount, account_id).tenant_id
    starttls = make_account(db, tenant_id, box, email="s@acme.test", security=Security.STARTTLS)
    assert SyncEngine(db=db).sync_account(starttls).status == "ok"
    for security in (Security.TLS, Security.STARTTLS):
        untrusted = make_account(
            db, tenant_id, box, email=f"u-{security.value}@acme.test", security=security, trust_ca=False
        )
        failed = SyncEngine(db=db).sync_account(untrusted)
        assert failed.status == "failed" and failed.failure is not None
        assert failed.failure.code == "certificate_untrusted", failed.errors
        with Session(db) as session:
            assert session.get_one(MailAccount, untrusted).status is AccountStatus.TLS_ERROR


# -- Cyrus only: what Dovecot's static config cannot show ----------------------------------


@pytest.fixture
def cyrus_setup(sqlite_db: Engine, cyrus: LocalCyrus, server_user: ServerUser) -> Setup:
    assert server_user.kind == "cyrus"  # special use changed at runtime: Cyrus' METADATA
    tenant_id = make_tenant(sqlite_db)
    return Setup(
        sqlite_db, make_account(sqlite_db, tenant_id, server_user, email="sales@acme.test"), server_user
    )


@pytest.mark.parametrize("server_user", ["cyrus"], indirect=True)
def test_sent_found_by_special_use_under_another_name(cyrus_setup: Setup, cyrus: LocalCyrus) -> None:
    """The \\Sent attribute wins over names: "Outgoing" carries it, "Sent" no longer does."""
    db, account_id, box = cyrus_setup
    cyrus.set_special_use(box.name, "Sent", None)
    cyrus.create_special_folder(box.name, "Outgoing", "\\Sent")
    cyrus.append(box.name, "Outgoing", _reply(1))
    cyrus.append(box.name, "Sent", _reply(2))  # an ordinary folder now: never synced
    summary = SyncEngine(db=db).sync_account(account_id)
    assert summary.status == "ok", summary.errors
    assert summary.folders == {"inbox": "INBOX", "sent": "Outgoing"}
    with Session(db) as session:
        assert session.exec(select(Message.message_id)).all() == ["<msg101@globex.test>"]


@pytest.mark.parametrize("server_user", ["cyrus"], indirect=True)
def test_gmail_layout_sent_mail_synced_all_mail_never(cyrus_setup: Setup, cyrus: LocalCyrus) -> None:
    """Gmail's folders on a real server: `[Gmail]` is only a parent, `[Gmail]/Sent Mail` is
    \\Sent, `[Gmail]/All Mail` (\\All) holds every message again and must never be synced."""
    db, account_id, box = cyrus_setup
    cyrus.set_special_use(box.name, "Sent", None)
    cyrus.delete_folder(box.name, "Sent")
    cyrus.create_special_folder(box.name, "[Gmail]/Sent Mail", "\\Sent")
    cyrus.create_special_folder(box.name, "[Gmail]/All Mail", "\\All")
    cyrus.append(box.name, "INBOX", _msg(1))
    cyrus.append(box.name, "[Gmail]/Sent Mail", _reply(1))
    cyrus.append_many(box.name, "[Gmail]/All Mail", [_msg(1), _reply(1), _msg(2, subject="Archived")])
    with cyrus.client(box.name) as conn:
        listed = {name: {f.decode().lower() for f in flags} for flags, _sep, name in conn.list_folders()}
    assert "\\all" in listed["[Gmail]/All Mail"] and "\\sent" in listed["[Gmail]/Sent Mail"]
    summary = SyncEngine(db=db).sync_account(account_id)
    assert summary.status == "ok", summary.errors
    assert summary.folders == {"inbox": "INBOX", "sent": "[Gmail]/Sent Mail"}
    assert summary.new_messages == 2
    with Session(db) as session:
        names = set(session.exec(select(FolderState.name)).all())
        ids = set(session.exec(select(Message.message_id)).all())
    assert names == {"INBOX", "[Gmail]/Sent Mail"}
    assert "<msg2@globex.test>" not in ids  # only in All Mail
