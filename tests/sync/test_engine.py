"""The sync engine against a real Dovecot, on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import NamedTuple, Unpack

import pytest
from pydantic_core import to_jsonable_python
from sqlalchemy import ColumnElement, Engine, func
from sqlmodel import Session, col, select

from core import problems
from core.settings import Settings
from core.types import AccountStatus, Direction, FolderRole, RunStatus, Security, UidState
from crm.models import FolderState, ImapUid, MailAccount, Message, SkippedMessage, SyncRun, Thread
from devtools.devmail import LocalDovecot
from devtools.samples import MessageFields, build_message, malformed_messages
from sync.account_pass import SyncEngine
from tests.dovecot_fixtures import MailboxUser
from tests.factories import make_account, make_tenant


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


class Setup(NamedTuple):
    db: Engine
    tenant_id: int
    account_id: int
    box: MailboxUser


@pytest.fixture
def setup(db: Engine, mailbox_user: MailboxUser) -> Setup:
    tenant_id = make_tenant(db)
    account_id = make_account(db, tenant_id, mailbox_user, email="sales@acme.test")
    return Setup(db, tenant_id, account_id, mailbox_user)


def test_first_sync_then_nothing_then_new_mail(setup: Setup) -> None:
    db, _tenant, account_id, box = setup
    box.dovecot.append_many(box.name, "INBOX", [_msg(i) for i in range(5)])
    box.dovecot.append(
        box.name,
        "Sent",
        _msg(
            99,
            subject="Re: Quote 1",
            from_="sales@acme.test",
            to="buyer1@globex.test",
            in_reply_to="<msg1@globex.test>",
            references=["<msg1@globex.test>"],
        ),
    )
    first = SyncEngine(db=db).sync_account(account_id)
    assert first.status == "ok", first.errors
    assert first.new_messages == 6
    assert first.folders == {"inbox": "INBOX", "sent": "Sent"}
    assert to_jsonable_python(first)["new_messages"] == 6
    assert _count(db, Message) == 6
    with Session(db) as session:
        reply = session.exec(select(Message).where(Message.message_id == "<msg99@globex.test>")).one()
        parent = session.exec(select(Message).where(Message.message_id == "<msg1@globex.test>")).one()
        assert reply.direction is Direction.OUTBOUND and parent.direction is Direction.INBOUND
        assert reply.thread_id == parent.thread_id
        thread = session.get_one(Thread, parent.thread_id)
        assert thread.message_count == 2 and thread.subject == "Quote 1"
        account = session.get_one(MailAccount, account_id)
        assert account.status is AccountStatus.OK and account.last_success_at is not None

    second = SyncEngine(db=db).sync_account(account_id)
    assert (second.status, second.new_messages, second.new_locations) == ("ok", 0, 0)
    assert _count(db, Message) == 6

    box.dovecot.append(box.name, "INBOX", _msg(6))
    third = SyncEngine(db=db).sync_account(account_id)
    assert third.new_messages == 1
    assert _count(db, Message) == 7
    assert _count(db, ImapUid) == 7
    with Session(db) as session:
        runs = session.exec(select(SyncRun).order_by(col(SyncRun.id))).all()
        assert [r.status for r in runs] == [RunStatus.OK] * 3
        assert [r.new_messages for r in runs] == [6, 0, 1]


def test_sync_never_marks_mail_read(setup: Setup) -> None:
    db, _tenant, account_id, box = setup
    box.dovecot.append_many(box.name, "INBOX", [_msg(i) for i in range(3)])
    box.dovecot.append(box.name, "INBOX", _msg(3), flags=["\\Flagged"])
    SyncEngine(db=db).sync_account(account_id)
    flags = box.dovecot.flags(box.name, "INBOX")
    assert len(flags) == 4
    assert all("\\Seen" not in f for f in flags.values())
    with Session(db) as session:
        stored = {tuple(u.flags) for u in session.exec(select(ImapUid)).all()}
    assert ("\\Flagged",) in stored


def test_uidvalidity_change_rekeys_without_duplicates(setup: Setup) -> None:
    db, _tenant, account_id, box = setup
    box.dovecot.append_many(box.name, "INBOX", [_msg(i) for i in range(4)])
    SyncEngine(db=db).sync_account(account_id)
    with Session(db) as session:
        before = {m.message_id: m.id for m in session.exec(select(Message)).all()}
        old_validity = session.exec(
            select(FolderState.uidvalidity).where(FolderState.role == FolderRole.INBOX)
        ).one()
    new_validity = box.dovecot.reset_uidvalidity(box.name, "INBOX")
    assert new_validity != old_validity
    summary = SyncEngine(db=db).sync_account(account_id)
    assert summary.status == "ok", summary.errors
    assert summary.new_messages == 0 and summary.new_locations == 4
    with Session(db) as session:
        after = {m.message_id: m.id for m in session.exec(select(Message)).all()}
        uids = session.exec(select(ImapUid)).all()
        folder = session.exec(select(FolderState).where(FolderState.role == FolderRole.INBOX)).one()
    assert after == before  # same rows: threads and links untouched
    assert {u.uidvalidity for u in uids} == {new_validity}
    assert len(uids) == 4
    assert folder.uidvalidity_resyncs == 1


def test_unstable_uidvalidity_is_flagged_not_looped(setup: Setup, settings: Settings) -> None:
    db, _tenant, account_id, box = setup
    settings.max_uidvalidity_resyncs = 2
    box.dovecot.append(box.name, "INBOX", _msg(1))
    engine = SyncEngine(db=db, settings=settings)
    engine.sync_account(account_id)
    for _ in range(2):
        box.dovecot.reset_uidvalidity(box.name, "INBOX")
        assert engine.sync_account(account_id).status == "ok"
    box.dovecot.reset_uidvalidity(box.name, "INBOX")
    summary = engine.sync_account(account_id)
    assert summary.status == "partial"
    assert any("keeps changing" in e for e in summary.errors)
    assert _count(db, Message) == 1
    with Session(db) as session:
        account = session.get_one(MailAccount, account_id)
    assert account.status is AccountStatus.ERROR and "UIDVALIDITY" in (
        problems.render(account.last_error_code, account.last_error_params) or ""
    )
    assert account.last_error_code == "folder_problems"
    assert account.last_error_params["problems"] == [
        {"folder": "INBOX", "code": "uidvalidity_unstable", "params": {"folder": "INBOX"}}
    ]
    assert [(p.folder, p.code) for p in summary.folder_problems] == [("INBOX", "uidvalidity_unstable")]
    # What the CLI prints (and an API would return) serializes as it is, problems included.
    as_json = json.loads(json.dumps(to_jsonable_python(summary)))
    assert as_json["status"] == "partial" and as_json["folder_problems"][0]["code"] == "uidvalidity_unstable"
    with Session(db) as session:
        folder = session.exec(select(FolderState).where(FolderState.account_id == account_id)).first()
    assert folder is not None and folder.last_error_code == "uidvalidity_unstable"


def test_expunge_is_noticed_and_mail_kept(setup: Setup) -> None:
    db, _tenant, account_id, box = setup
    uids = box.dovecot.append_many(box.name, "INBOX", [_msg(i) for i in range(3)])
    SyncEngine(db=db).sync_account(account_id)
    box.dovecot.expunge(box.name, "INBOX", [uids[1]])
    summary = SyncEngine(db=db).sync_account(account_id)
    assert summary.expunged == 1
    with Session(db) as session:
        gone = session.exec(select(ImapUid).where(col(ImapUid.expunged_at).is_not(None))).all()
    assert [u.uid for u in gone] == [uids[1]]
    assert _count(db, Message) == 3


def test_recipient_limit_100_synced_101_skipped(setup: Setup) -> None:
    db, _tenant, account_id, box = setup
    hundred = [f"p{i}@globex.test" for i in range(100)]
    # 101 distinct once duplicates across To/Cc/Bcc are folded.
    to = [f"q{i}@globex.test" for i in range(60)]
    cc = [f"q{i}@globex.test" for i in range(50, 101)] + ["Q1@GLOBEX.TEST"]
    box.dovecot.append(box.name, "INBOX", _msg(1, to=hundred))
    box.dovecot.append(box.name, "INBOX", _msg(2, to=to, cc=cc))
    summary = SyncEngine(db=db).sync_account(account_id)
    assert (summary.new_messages, summary.skipped) == (1, 1)
    with Session(db) as session:
        stored = session.exec(select(Message)).one()
        skipped = session.exec(select(SkippedMessage)).one()
        skipped_uid = session.exec(select(ImapUid).where(ImapUid.state == UidState.SKIPPED)).one()
    assert stored.message_id == "<msg1@globex.test>" and stored.recipient_count == 100
    assert skipped.message_id == "<msg2@globex.test>" and skipped.recipient_count == 101
    assert "101 distinct recipients" in skipped.detail
    assert skipped_uid.skipped_pk == skipped.id
    # Recorded, not retried: the next pass has nothing to do.
    again = SyncEngine(db=db).sync_account(account_id)
    assert (again.new_messages, again.skipped) == (0, 0)


def test_same_message_in_inbox_and_sent_stored_once(setup: Setup) -> None:
    db, _tenant, account_id, box = setup
    raw = _msg(1, from_="sales@acme.test", to="sales@acme.test", subject="Note to self")
    box.dovecot.append(box.name, "INBOX", raw)
    box.dovecot.append(box.name, "Sent", raw)
    summary = SyncEngine(db=db).sync_account(account_id)
    assert summary.new_messages == 1 and summary.new_locations == 2
    with Session(db) as session:
        message = session.exec(select(Message)).one()
        places = session.exec(select(ImapUid).where(ImapUid.message_pk == message.id)).all()
    assert len(places) == 2
    assert message.direction is Direction.OUTBOUND


def test_two_accounts_share_one_message(db: Engine, dovecot: LocalDovecot, mailbox_user: MailboxUser) -> None:
    other = MailboxUser(name=f"{mailbox_user.name}b", password="second-secret", dovecot=dovecot)
    dovecot.add_user(other.name, other.password)
    tenant_id = make_tenant(db)
    first = make_account(db, tenant_id, mailbox_user, email="sales@acme.test")
    second = make_account(db, tenant_id, other, email="bob@acme.test")
    raw = _msg(1, to=["sales@acme.test", "bob@acme.test"])
    dovecot.append(mailbox_user.name, "INBOX", raw)
    dovecot.append(other.name, "INBOX", raw)
    assert SyncEngine(db=db).sync_account(first).new_messages == 1
    summary = SyncEngine(db=db).sync_account(second)
    assert summary.new_messages == 0 and summary.new_locations == 1
    with Session(db) as session:
        message = session.exec(select(Message)).one()
        accounts = {
            u.account_id for u in session.exec(select(ImapUid).where(ImapUid.message_pk == message.id))
        }
    assert accounts == {first, second}


def test_wrong_password_backs_off_then_waits_for_credentials(setup: Setup, settings: Settings) -> None:
    db, tenant_id, _account, box = setup
    bad = make_account(db, tenant_id, box, email="bad@acme.test", password="wrong-password")
    engine = SyncEngine(db=db, settings=settings)
    summary = engine.sync_account(bad)
    assert summary.status == "failed"
    assert "Authentication failed" in summary.errors[0] and "app password" in summary.errors[0]
    assert "wrong-password" not in summary.errors[0]
    with Session(db) as session:
        account = session.get_one(MailAccount, bad)
    assert account.status is AccountStatus.AUTH_FAILED
    assert (account.last_error_code, account.last_error_params["host"]) == ("auth_failed", "127.0.0.1")
    assert account.next_attempt_at is not None and account.next_attempt_at > datetime.now(UTC)
    # Scheduled runs respect the backoff.
    assert engine.sync_account(bad).skip_reason.startswith("backing off")
    for _ in range(settings.max_auth_failures - 1):
        engine.sync_account(bad, ignore_backoff=True)
    with Session(db) as session:
        account = session.get_one(MailAccount, bad)
    assert account.status is AccountStatus.NEEDS_CREDENTIALS
    assert account.last_error_code == "auth_stopped"
    assert account.last_error_params["failures"] == settings.max_auth_failures
    stopped = problems.render(account.last_error_code, account.last_error_params) or ""
    assert f"Stopped retrying after {settings.max_auth_failures} refused logins." in stopped
    assert stopped.startswith("Authentication failed for")
    assert engine.sync_account(bad, ignore_backoff=True).skip_reason == "account needs new credentials"

    from pydantic import SecretStr

    from core.caller import Caller
    from core.db import session_scope
    from core.secrets import SecretBox
    from crm import mailboxes

    with session_scope(db) as session:
        mailboxes.set_password(
            session=session,
            caller=Caller.operator(session.get_one(MailAccount, bad).tenant_id),
            account_id=bad,
            password=SecretStr(box.password),
            box=SecretBox.from_settings(),
        )
    assert engine.sync_account(bad).status == "ok"


def test_untrusted_certificate(setup: Setup) -> None:
    db, tenant_id, _account, box = setup
    account_id = make_account(db, tenant_id, box, email="tls@acme.test", trust_ca=False)
    summary = SyncEngine(db=db).sync_account(account_id)
    assert summary.status == "failed"
    assert "certificate" in summary.errors[0] and "not trusted" in summary.errors[0]
    assert summary.failure is not None and summary.failure.code == "certificate_untrusted"
    with Session(db) as session:
        account = session.get_one(MailAccount, account_id)
    assert (account.status, account.last_error_code) == (AccountStatus.TLS_ERROR, "certificate_untrusted")


def test_starttls_and_plain(setup: Setup) -> None:
    db, tenant_id, _account, box = setup
    box.dovecot.append(box.name, "INBOX", _msg(1))
    starttls = make_account(db, tenant_id, box, email="s@acme.test", security=Security.STARTTLS)
    assert SyncEngine(db=db).sync_account(starttls).status == "ok"
    untrusted = make_account(
        db, tenant_id, box, email="u@acme.test", security=Security.STARTTLS, trust_ca=False
    )
    # STARTTLS with a bad certificate fails: no silent fallback to plaintext.
    failed = SyncEngine(db=db).sync_account(untrusted)
    assert failed.status == "failed" and "not trusted" in failed.errors[0]
    plain = make_account(db, tenant_id, box, email="p@acme.test", security=Security.PLAIN)
    assert SyncEngine(db=db).sync_account(plain).status == "ok"


def test_server_down_does_not_stop_other_accounts(setup: Setup) -> None:
    db, tenant_id, account_id, box = setup
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    down = make_account(db, tenant_id, box, email="down@acme.test", port=dead_port)
    box.dovecot.append(box.name, "INBOX", _msg(1))
    results = [SyncEngine(db=db).sync_account(a) for a in (down, account_id)]
    assert results[0].status == "failed" and "refused the connection" in results[0].errors[0]
    assert results[1].status == "ok" and results[1].new_messages == 1
    with Session(db) as session:
        assert session.get_one(MailAccount, down).status is AccountStatus.CONNECTION_FAILED


def test_malformed_messages_are_stored_flagged(setup: Setup) -> None:
    db, _tenant, account_id, box = setup
    bad = malformed_messages()
    box.dovecot.append_many(box.name, "INBOX", bad)
    summary = SyncEngine(db=db).sync_account(account_id)
    assert summary.status == "ok", summary.errors
    assert summary.new_messages + summary.skipped == len(bad)
    assert _count(db, Message) == summary.new_messages
    assert summary.malformed >= 3
    with Session(db) as session:
        flagged = session.exec(select(Message).where(Message.malformed)).all()
    assert all(m.parse_errors and m.raw for m in flagged)


def test_oversized_mail_keeps_headers_only(setup: Setup, settings: Settings) -> None:
    db, _tenant, account_id, box = setup
    settings.max_message_bytes = 50_000
    box.dovecot.append(box.name, "INBOX", _msg(1, body="x" * 200_000))
    box.dovecot.append(box.name, "INBOX", _msg(2))
    summary = SyncEngine(db=db, settings=settings).sync_account(account_id)
    assert summary.new_messages == 2
    with Session(db) as session:
        big = session.exec(select(Message).where(Message.message_id == "<msg1@globex.test>")).one()
        small = session.exec(select(Message).where(Message.message_id == "<msg2@globex.test>")).one()
    assert big.headers_only and big.subject == "Quote 1" and big.text_body == ""
    assert not small.headers_only and "test message" in small.text_body


def test_history_window_limits_first_sync(setup: Setup) -> None:
    db, tenant_id, _account, box = setup
    old = datetime(2020, 1, 5, tzinfo=UTC)
    box.dovecot.append(box.name, "INBOX", _msg(1, date=old), internal_date=old)
    box.dovecot.append(box.name, "INBOX", _msg(2))
    windowed = make_account(
        db, tenant_id, box, email="w@acme.test", sync_since=datetime(2025, 1, 1, tzinfo=UTC)
    )
    summary = SyncEngine(db=db).sync_account(windowed)
    assert summary.new_messages == 1
    with Session(db) as session:
        assert session.exec(select(Message.message_id)).all() == ["<msg2@globex.test>"]
    box.dovecot.append(box.name, "INBOX", _msg(3))
    assert SyncEngine(db=db).sync_account(windowed).new_messages == 1


def test_deactivated_account_is_not_synced(setup: Setup) -> None:
    db, _tenant, account_id, box = setup
    from core.caller import Caller
    from core.db import session_scope
    from crm import mailboxes

    with session_scope(db) as session:
        mailboxes.deactivate_account(session=session, caller=Caller.operator(_tenant), account_id=account_id)
    box.dovecot.append(box.name, "INBOX", _msg(1))
    summary = SyncEngine(db=db).sync_account(account_id)
    assert summary.status == "skipped" and summary.skip_reason == "account is deactivated"
    assert _count(db, Message) == 0


def test_parse_worker_pool_and_pipelined_batches_give_the_same_result(
    setup: Setup, settings: Settings
) -> None:
    db, _tenant, account_id, box = setup
    settings.parse_workers = 1
    settings.sync_batch_size = 7  # several batches: the fetch thread runs ahead of the store
    box.dovecot.append_many(box.name, "INBOX", [_msg(i) for i in range(30)])
    box.dovecot.append_many(
        box.name,
        "Sent",
        [
            _msg(
                100 + i,
                from_="sales@acme.test",
                to=f"buyer{i}@globex.test",
                subject=f"Re: Quote {i}",
                in_reply_to=f"<msg{i}@globex.test>",
                references=[f"<msg{i}@globex.test>"],
            )
            for i in range(10)
        ],
    )
    with SyncEngine(db=db, settings=settings) as engine:
        summary = engine.sync_account(account_id)
        assert engine.parser.executor is not None  # the pooled path really ran
    assert summary.status == "ok" and summary.new_messages == 40
    with Session(db) as session:
        threads = session.exec(select(Thread)).all()
        folder = session.exec(select(FolderState).where(FolderState.role == FolderRole.INBOX)).one()
    assert sorted(t.message_count for t in threads) == [1] * 20 + [2] * 10
    assert folder.highest_uid == 30


def test_empty_history_window_does_not_download_everything_later(setup: Setup) -> None:
    db, tenant_id, _account, box = setup
    old = datetime(2020, 1, 5, tzinfo=UTC)
    box.dovecot.append_many(box.name, "INBOX", [_msg(i, date=old) for i in range(4)], internal_date=old)
    windowed = make_account(
        db, tenant_id, box, email="w@acme.test", sync_since=datetime(2025, 1, 1, tzinfo=UTC)
    )
    assert SyncEngine(db=db).sync_account(windowed).new_messages == 0
    box.dovecot.append(box.name, "INBOX", _msg(9))
    summary = SyncEngine(db=db).sync_account(windowed)
    assert summary.new_messages == 1
    assert _count(db, Message) == 1


def test_changed_encryption_key_is_a_key_mismatch_and_the_old_key_resumes(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12.10: another valid key is a key mismatch, not "needs credentials"; restoring the
    old key resumes the account without entering its password again."""
    db, _tenant, account_id, box = setup
    from cryptography.fernet import Fernet

    from core.settings import reset_settings

    box.dovecot.append(box.name, "INBOX", _msg(1))
    old_key = os.environ["CRM_INBOX_SECRET_KEY"]
    monkeypatch.setenv("CRM_INBOX_SECRET_KEY", Fernet.generate_key().decode())
    reset_settings()
    summary = SyncEngine(db=db).sync_account(account_id)
    assert summary.status == "failed" and "Key mismatch" in summary.errors[0]
    with Session(db) as session:
        account = session.get_one(MailAccount, account_id)
    assert (account.status, account.last_error_code) == (AccountStatus.KEY_MISMATCH, "credentials_unreadable")
    monkeypatch.setenv("CRM_INBOX_SECRET_KEY", old_key)
    reset_settings()
    resumed = SyncEngine(db=db).sync_account(account_id, ignore_backoff=True)
    assert resumed.status == "ok" and resumed.new_messages == 1
    with Session(db) as session:
        assert session.get_one(MailAccount, account_id).status is AccountStatus.OK


def test_missing_key_file_with_stored_passwords_refuses_to_start(
    db: Engine, mailbox_user: MailboxUser, monkeypatch: pytest.MonkeyPatch, settings: Settings
) -> None:
    from core.secrets import SecretKeyError
    from core.settings import get_settings, reset_settings

    monkeypatch.delenv("CRM_INBOX_SECRET_KEY")
    reset_settings()
    make_account(db, make_tenant(db), mailbox_user)  # the key file is created for it
    key_file = get_settings().resolved_key_file
    assert key_file.exists()
    key_file.unlink()
    with pytest.raises(SecretKeyError) as refused:
        SyncEngine(db=db)
    assert refused.value.code == "secret_key_missing" and "missing" in refused.value.message
    assert not key_file.exists()  # no new key written over the problem


def test_worker_that_lost_its_lease_stops_before_writing(setup: Setup, settings: Settings) -> None:
    db, _tenant, account_id, box = setup
    box.dovecot.append_many(box.name, "INBOX", [_msg(i) for i in range(6)])
    settings.sync_batch_size = 2
    engine = SyncEngine(db=db, settings=settings)
    from core.db import session_scope

    def steal(_account: int, _role: object, done: int, _total: int) -> None:
        if done == 2:  # after the first batch, another worker takes the account over
            with session_scope(db) as session:
                row = session.get_one(MailAccount, account_id)
                row.lease_owner = "other-host:1:1"
                session.add(row)

    engine.progress = steal
    summary = engine.sync_account(account_id)
    assert summary.status == "failed" and "Another worker took over" in summary.errors[0]
    assert _count(db, Message) == 2  # the first batch only; nothing written after the takeover
    with Session(db) as session:
        row = session.get_one(MailAccount, account_id)
    assert row.lease_owner == "other-host:1:1"  # not released: it is not ours
    assert row.status is not AccountStatus.ERROR


def test_tls_verifies_the_name_while_connecting_to_the_checked_address(setup: Setup) -> None:
    """The host is resolved once (SSRF check) and the connection goes to that address; the
    certificate is still verified against the name the user gave."""
    db, tenant_id, _account, box = setup
    box.dovecot.append(box.name, "INBOX", _msg(1))
    by_name = make_account(db, tenant_id, box, email="n@acme.test", host="localhost")
    assert SyncEngine(db=db).sync_account(by_name).status == "ok"


def test_expunge_noticed_with_a_history_window(setup: Setup) -> None:
    """With a window we hold fewer messages than the server: equal counts prove nothing."""
    db, tenant_id, _account, box = setup
    old = datetime(2020, 1, 5, tzinfo=UTC)
    box.dovecot.append(box.name, "INBOX", _msg(1, date=old), internal_date=old)
    recent = box.dovecot.append(box.name, "INBOX", _msg(2))
    windowed = make_account(
        db, tenant_id, box, email="w@acme.test", sync_since=datetime(2025, 1, 1, tzinfo=UTC)
    )
    assert SyncEngine(db=db).sync_account(windowed).new_messages == 1
    box.dovecot.append(box.name, "INBOX", _msg(3))
    box.dovecot.expunge(box.name, "INBOX", [recent])
    summary = SyncEngine(db=db).sync_account(windowed)
    assert summary.new_messages == 1 and summary.expunged == 1


def test_a_dead_parse_worker_does_not_stop_syncing(setup: Setup, settings: Settings) -> None:
    db, _tenant, account_id, box = setup
    settings.parse_workers = 1
    box.dovecot.append(box.name, "INBOX", _msg(1))
    with SyncEngine(db=db, settings=settings) as engine:
        assert engine.sync_account(account_id).new_messages == 1
        assert engine.parser.executor is not None
        for process in list(engine.parser.executor._processes.values()):  # the OS kills it (e.g. memory)
            process.kill()
            process.join()
        box.dovecot.append_many(box.name, "INBOX", [_msg(2), _msg(3)])
        summary = engine.sync_account(account_id)
        assert summary.status == "ok" and summary.new_messages == 2
        box.dovecot.append(box.name, "INBOX", _msg(4))
        assert engine.sync_account(account_id).new_messages == 1  # a fresh pool took over


def test_sent_folder_moving_to_another_name_starts_a_clean_cursor(setup: Setup) -> None:
    db, _tenant, account_id, box = setup
    box.dovecot.append(box.name, "Sent", _msg(1, from_="sales@acme.test"))
    assert SyncEngine(db=db).sync_account(account_id).new_messages == 1
    # The admin's mail client created "Sent Items" and the old folder lost its \Sent flag? Here
    # simply: the name the role maps to changes; same mail, now also in the new folder.
    from core.db import session_scope

    with session_scope(db) as session:
        folder = session.exec(select(FolderState).where(FolderState.role == FolderRole.SENT)).one()
        folder.name = "Old Sent"
        session.add(folder)
    summary = SyncEngine(db=db).sync_account(account_id)
    assert summary.status == "ok" and summary.new_messages == 0 and summary.new_locations == 1
    with Session(db) as session:
        uids = session.exec(select(ImapUid).where(ImapUid.folder_id == folder.id)).all()
    assert len(uids) == 1 and _count(db, Message) == 1
