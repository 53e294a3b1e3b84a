"""The send queue against real servers: aiosmtpd (plain + AUTH, STARTTLS, implicit TLS) and the
session's Dovecot for the Sent folder; SQLite and PostgreSQL.

End to end: a customer's mail is synced, a member replies, the worker sends it once, appends it
to Sent, stores it in the conversation; the next sync stores nothing twice. Then the failure
paths: 4xx retried with backoff, 5xx final, a worker killed in each phase, a lost lease.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import NamedTuple

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine, func, update
from sqlmodel import Session, col, select

from core.caller import Caller
from core.db import session_scope
from core.secrets import SecretBox
from core.settings import Settings
from core.types import Direction, Security, utcnow
from crm.models import ImapUid, MailAccount, Message, OutboundAccount, OutboundMail, SendPhase
from crm.outbound import queue
from crm.outbound.compose import ComposeMode, Draft, send_mail
from crm.outbound.views import OutboundState, OutboundView
from devtools.samples import build_message
from sync.account_pass import SyncEngine
from sync.send_queue import work_queue
from tests.dovecot_fixtures import MailboxUser
from tests.factories import caller_of, grant, make_account, make_tenant, make_user
from tests.outbound.smtp import SmtpServer, recording_smtp


class Setup(NamedTuple):
    db: Engine
    tenant_id: int
    account_id: int
    member: Caller
    box: MailboxUser
    smtp: SmtpServer


def _configure_smtp(db: Engine, account_id: int, smtp: SmtpServer, ca_file: str) -> None:
    with session_scope(db) as s:
        row = s.get_one(MailAccount, account_id)
        row.smtp_host, row.smtp_port, row.smtp_security = "127.0.0.1", smtp.port, smtp.security
        row.smtp_username = smtp.username
        row.smtp_secret_encrypted = SecretBox.from_settings().encrypt(SecretStr(smtp.password))
        row.ca_file = ca_file


@pytest.fixture(params=[Security.STARTTLS])
def setup(
    request: pytest.FixtureRequest, db: Engine, mailbox_user: MailboxUser, settings: Settings
) -> Iterator[Setup]:
    settings.allow_private_hosts = True
    tenant_id = make_tenant(db)
    account_id = make_account(db, tenant_id, mailbox_user, email="sales@acme.test")
    user_id = make_user(db, tenant_id, "mia@acme.test", first_name="Mia", last_name="Moss")
    grant(db, tenant_id, account_id, user_id)
    mailbox_user.dovecot.append(
        mailbox_user.name,
        "INBOX",
        build_message(
            subject="Quote please",
            from_="buyer@globex.test",
            to="sales@acme.test",
            message_id="<q1@globex.test>",
            date=datetime(2026, 3, 1, 9, 0, tzinfo=UTC),
        ),
    )
    assert SyncEngine(db=db, settings=settings).sync_account(account_id).status == "ok"
    with recording_smtp(mailbox_user.dovecot, request.param) as smtp:
        _configure_smtp(db, account_id, smtp, str(mailbox_user.dovecot.ca_file))
        yield Setup(db, tenant_id, account_id, caller_of(db, tenant_id, user_id), mailbox_user, smtp)


def _parent(db: Engine) -> int:
    with Session(db) as s:
        return s.exec(select(Message.id).where(Message.message_id == "<q1@globex.test>")).one() or 0


def _reply(st: Setup, html: str = "<p>Here is the quote.</p>", **kw: object) -> OutboundView:
    with session_scope(st.db) as s:
        result = send_mail(
            session=s,
            caller=st.member,
            draft=Draft(html=html, bcc=("archive@acme.test",)),
            mode=ComposeMode.REPLY,
            message_pk=_parent(st.db),
            undo_seconds=0,
            **kw,  # type: ignore[arg-type]
        )
    assert result.mail is not None
    return result.mail


def _row(db: Engine, outbound_id: int) -> OutboundMail:
    with Session(db) as s:
        return s.get_one(OutboundMail, outbound_id)


def _make_due(db: Engine, outbound_id: int) -> None:
    """The clock moved on: a deferred mail is due again."""
    with session_scope(db) as s:
        s.execute(
            update(OutboundMail)
            .where(col(OutboundMail.id) == outbound_id)
            .values(next_attempt_at=utcnow() - timedelta(seconds=1))
        )


@pytest.mark.parametrize("setup", [Security.PLAIN, Security.STARTTLS, Security.TLS], indirect=True)
def test_reply_is_sent_once_filed_in_sent_and_stored_once(setup: Setup, settings: Settings) -> None:
    st = setup
    mail = _reply(st)
    summary = work_queue(db=st.db, settings=settings)
    assert (summary.sent, summary.stored, summary.sent_folder_errors) == (1, 1, [])
    (got,) = st.smtp.recorder.received
    assert got.mail_from == "sales@acme.test"
    assert sorted(got.rcpt_tos) == ["archive@acme.test", "buyer@globex.test"]
    assert f"Message-ID: {mail.message_id}".encode() in got.data and b"Bcc:" not in got.data
    row = _row(st.db, mail.id)
    assert row.state is OutboundState.SENT and row.attempts == 1
    assert (row.last_response_code, row.last_response) == (250, "2.0.0 Ok: queued as TEST42")
    # In Dovecot's Sent folder, with the Bcc kept and \Seen set.
    sent = st.box.dovecot.fetch(st.box.name, "Sent")
    assert len(sent) == 1
    (copy,) = sent.values()
    assert mail.message_id.encode() in copy and b"Bcc: archive@acme.test" in copy
    assert all("\\Seen" in f for f in st.box.dovecot.flags(st.box.name, "Sent").values())
    # In the conversation, as our outbound mail, at once.
    with Session(st.db) as s:
        stored = s.exec(select(Message).where(Message.message_id == mail.message_id)).one()
        parent = s.get_one(Message, _parent(st.db))
        assert stored.id == row.stored_message_pk and stored.thread_id == parent.thread_id
        assert stored.direction is Direction.OUTBOUND and stored.in_reply_to == "<q1@globex.test>"
    # A second pass sends nothing; the next sync meets the Sent copy and stores nothing twice.
    assert work_queue(db=st.db, settings=settings).sent == 0
    again = SyncEngine(db=st.db, settings=settings).sync_account(st.account_id)
    assert (again.status, again.new_messages, again.new_locations) == ("ok", 0, 0), again.errors
    with Session(st.db) as s:
        assert (
            s.exec(
                select(func.count()).select_from(Message).where(Message.message_id == mail.message_id)
            ).one()
            == 1
        )
        assert (
            s.exec(select(func.count()).select_from(ImapUid).where(ImapUid.message_pk == stored.id)).one()
            == 1
        )
    assert len(st.smtp.recorder.received) == 1


def test_server_saving_sent_mail_itself_gets_no_append(setup: Setup, settings: Settings) -> None:
    st = setup
    with session_scope(st.db) as s:
        s.add(OutboundAccount(account_id=st.account_id, server_saves_sent=True))
    mail = _reply(st)
    assert work_queue(db=st.db, settings=settings).sent == 1
    assert st.box.dovecot.fetch(st.box.name, "Sent") == {}
    assert _row(st.db, mail.id).sent_folder_done


def test_temporary_failures_are_retried_with_backoff_permanent_ones_not(
    setup: Setup, settings: Settings
) -> None:
    st = setup
    st.smtp.recorder.data_replies.extend(["451 4.3.0 Try again later", "452 4.3.1 Out of memory"])
    mail = _reply(st)
    before = utcnow()
    first = work_queue(db=st.db, settings=settings)
    assert (first.sent, first.deferred) == (0, 1)
    row = _row(st.db, mail.id)
    assert (row.state, row.attempts, row.last_response_code) == (OutboundState.DEFERRED, 1, 451)
    assert row.last_response == "4.3.0 Try again later" and row.error_code == "message_refused"
    assert row.next_attempt_at is not None and row.next_attempt_at >= before + timedelta(seconds=59)
    assert work_queue(db=st.db, settings=settings).deferred == 0  # not due yet
    _make_due(st.db, mail.id)
    assert work_queue(db=st.db, settings=settings).deferred == 1
    row = _row(st.db, mail.id)
    assert row.attempts == 2 and row.next_attempt_at is not None
    assert row.next_attempt_at >= utcnow() + timedelta(seconds=110)  # doubled
    _make_due(st.db, mail.id)
    assert work_queue(db=st.db, settings=settings).sent == 1
    assert _row(st.db, mail.id).state is OutboundState.SENT and len(st.smtp.recorder.received) == 1

    st.smtp.recorder.data_replies.append("554 5.7.1 Message rejected as spam")
    final = _reply(st)
    assert work_queue(db=st.db, settings=settings).failed == 1
    row = _row(st.db, final.id)
    assert (row.state, row.attempts, row.last_response_code) == (OutboundState.FAILED, 1, 554)
    _make_due(st.db, final.id)
    assert work_queue(db=st.db, settings=settings).sent == 0  # failed is final
    assert len(st.smtp.recorder.received) == 1


def test_a_refused_recipient_fails_the_whole_mail_before_any_body(setup: Setup, settings: Settings) -> None:
    st = setup
    st.smtp.recorder.refuse["archive@acme.test"] = "550 5.1.1 No such user"
    mail = _reply(st)
    assert work_queue(db=st.db, settings=settings).failed == 1
    row = _row(st.db, mail.id)
    assert (row.error_code, row.error_params) == ("recipient_refused", {"recipients": ["archive@acme.test"]})
    assert st.smtp.recorder.received == []  # buyer@ did not get a half-delivered mail


def test_wrong_password_and_unreachable_server(setup: Setup, settings: Settings) -> None:
    st = setup
    with session_scope(st.db) as s:
        row = s.get_one(MailAccount, st.account_id)
        row.smtp_secret_encrypted = SecretBox.from_settings().encrypt(SecretStr("wrong-password-1"))
    mail = _reply(st)
    assert work_queue(db=st.db, settings=settings).failed == 1
    assert _row(st.db, mail.id).error_code == "auth_failed"
    with session_scope(st.db) as s:
        s.get_one(MailAccount, st.account_id).smtp_port = 1  # nothing listens: refused, retried
    other = _reply(st)
    assert work_queue(db=st.db, settings=settings).deferred == 1
    assert _row(st.db, other.id).error_code == "connection_refused"


def test_a_worker_killed_in_each_phase(setup: Setup, settings: Settings) -> None:
    """The crash rules of crm.outbound.queue: a claim that never reached DATA is sent again
    (once); one that may have reached the server is never resent and is flagged."""
    st = setup
    safe, unsure = _reply(st, "<p>one</p>"), _reply(st, "<p>two</p>")
    with session_scope(st.db) as s:  # a worker claims both, then dies (its lease runs out)
        assert queue.claim(session=s, outbound_id=safe.id, owner="dead", lease_seconds=1) is not None
        assert queue.claim(session=s, outbound_id=unsure.id, owner="dead", lease_seconds=1) is not None
        assert queue.enter_data_phase(session=s, outbound_id=unsure.id, owner="dead")
    assert work_queue(db=st.db, settings=settings).sent == 0  # leases still valid: hands off
    with session_scope(st.db) as s:
        s.execute(update(OutboundMail).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    summary = work_queue(db=st.db, settings=settings)
    assert (summary.recovered, summary.sent) == (2, 1)
    assert _row(st.db, safe.id).state is OutboundState.SENT
    row = _row(st.db, unsure.id)
    assert (row.state, row.error_code) == (OutboundState.FAILED, "send_uncertain")
    assert len(st.smtp.recorder.received) == 1
    # The dead worker's late answers change nothing.
    with session_scope(st.db) as s:
        assert not queue.enter_data_phase(session=s, outbound_id=safe.id, owner="dead")
        assert queue.record_failure(
            session=s, outbound_id=unsure.id, owner="dead", transient=True, error_code="x", params={}
        ) is None  # fmt: skip
    assert _row(st.db, safe.id).state is OutboundState.SENT
    assert _row(st.db, unsure.id).phase is None or _row(st.db, unsure.id).phase is SendPhase.DATA


def test_cli_send_now_and_mail_log(setup: Setup, settings: Settings) -> None:
    import json

    from typer.testing import CliRunner

    from crm_inbox.cli import app

    st = setup
    runner = CliRunner()
    done = runner.invoke(
        app,
        [
            "send", "--user", "mia@acme.test", "--account", str(st.account_id),
            "--to", "Buyer <buyer@globex.test>",
            "--subject", "Your order", "--body", "Shipped today.\n\nRegards", "--now", "--json",
        ],
    )  # fmt: skip
    assert done.exit_code == 0, done.output
    sent = json.loads(done.stdout)
    assert (sent["state"], sent["kind"], sent["attempts"]) == ("sent", "compose", 1)
    (got,) = st.smtp.recorder.received
    assert b"Subject: Your order" in got.data and b"Shipped today." in got.data
    refused = runner.invoke(
        app, ["send", "--user", "mia@acme.test", "--account", str(st.account_id), "--to", "x@"]
    )
    assert refused.exit_code == 1 and "not a valid e-mail address" in refused.output
    log = runner.invoke(app, ["mail-log", "--state", "sent", "--address", "buyer@globex.test"])
    assert log.exit_code == 0, log.output
    assert (
        "sent" in log.stdout
        and "'Your order'" in log.stdout
        and "[250 2.0.0 Ok: queued as TEST42]" in log.stdout
    )
    empty = runner.invoke(app, ["mail-log", "--state", "failed", "--json"])
    assert json.loads(empty.stdout) == []


def test_kill_9_at_random_points_never_sends_twice_nor_loses(setup: Setup, settings: Settings) -> None:
    """10 kills per database (20 in all) of a `crm-inbox send-queue` process at random points of
    its sends; then a normal pass. Every mail is received at most once; every mail ends sent
    (received exactly once) or flagged `send_uncertain` (never silently dropped)."""
    import os
    import random
    import signal
    import subprocess
    import sys
    import time
    from collections import Counter

    st = setup
    # Each mail takes 0.2 s at the server: 12 of them outlast the kill's random delay (up to
    # 0.25 s after the first send is seen) even when this process, polling, is slowed by a busy
    # machine; at 0.05 s a worker could finish before it was noticed (no kill: a failed test).
    st.smtp.recorder.delay = 0.2
    mails = [_reply(st, f"<p>mail {i}</p>") for i in range(12)]
    rng = random.Random(42)
    kills = 0
    for _ in range(10):
        with Session(st.db) as s:
            open_rows = s.exec(
                select(func.count())
                .select_from(OutboundMail)
                .where(col(OutboundMail.state) != OutboundState.SENT)
            ).one()
        if not open_rows:
            break
        proc = subprocess.Popen(
            [sys.executable, "-m", "crm_inbox", "send-queue"],
            env=dict(os.environ),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and proc.poll() is None:
            with Session(st.db) as s:
                busy = s.exec(
                    select(OutboundMail.id).where(OutboundMail.state == OutboundState.SENDING)
                ).first()
            if busy is not None:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.25))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=10)
    assert kills >= 3, "the sends finished before the process could be killed"
    # The restarted worker: the dead processes' leases are broken at once (same host, pid gone).
    work_queue(db=st.db, settings=settings)
    work_queue(db=st.db, settings=settings)

    received = Counter(
        line.split(b":", 1)[1].strip().decode()
        for got in st.smtp.recorder.received
        for line in got.data.split(b"\r\n")
        if line.lower().startswith(b"message-id:")
    )
    assert all(n == 1 for n in received.values()), received  # never twice
    with Session(st.db) as s:
        rows = {r.message_id: r for r in s.exec(select(OutboundMail)).all()}
        stored = Counter(
            s.exec(select(Message.message_id).where(col(Message.message_id).in_(list(rows)))).all()
        )
    assert len(rows) == len(mails)
    uncertain = 0
    for message_id, row in rows.items():
        if row.state is OutboundState.SENT:
            assert received[message_id] == 1
            # Filed once in Sent and stored once, even when the sender died before filing.
            assert row.sent_folder_done and stored[message_id] == 1, row
        else:  # never lost silently: flagged for a person, with the message kept
            assert (row.state, row.error_code) == (OutboundState.FAILED, "send_uncertain"), row
            uncertain += 1
        assert stored[message_id] <= 1
    copies = Counter(
        line.split(b":", 1)[1].strip().decode()
        for raw in st.box.dovecot.fetch(st.box.name, "Sent").values()
        for line in raw.split(b"\r\n")
        if line.lower().startswith(b"message-id:")
    )
    assert all(n == 1 for n in copies.values()), copies
    assert set(copies) == {m for m, r in rows.items() if r.state is OutboundState.SENT}
    print(
        f"kills={kills} sent={len(rows) - uncertain} uncertain={uncertain} delivered={sum(received.values())}"
    )


def test_filing_is_taken_up_again_and_never_appended_twice(setup: Setup, settings: Settings) -> None:
    st = setup
    with session_scope(st.db) as s:
        real_port = s.get_one(MailAccount, st.account_id).imap_port
        s.get_one(MailAccount, st.account_id).imap_port = 1  # IMAP down while the mail goes out
    mail = _reply(st)
    first = work_queue(db=st.db, settings=settings)
    assert first.sent == 1 and first.stored == 0 and len(first.sent_folder_errors) == 1
    row = _row(st.db, mail.id)
    assert row.state is OutboundState.SENT and not row.sent_folder_done and row.lease_owner is not None
    with session_scope(st.db) as s:
        s.get_one(MailAccount, st.account_id).imap_port = real_port
    # A worker that died right after its APPEND: the copy is in Sent but not recorded.
    st.box.dovecot.append(st.box.name, "Sent", b"Bcc: archive@acme.test\r\n" + row.raw)
    assert work_queue(db=st.db, settings=settings).stored == 0  # the lease is still running
    with session_scope(st.db) as s:
        s.execute(update(OutboundMail).values(lease_expires_at=utcnow() - timedelta(seconds=1)))
    assert work_queue(db=st.db, settings=settings).stored == 1
    assert len(st.box.dovecot.fetch(st.box.name, "Sent")) == 1
    row = _row(st.db, mail.id)
    assert row.sent_folder_done and row.stored_message_pk is not None and row.lease_owner is None
    assert len(st.smtp.recorder.received) == 1
    again = SyncEngine(db=st.db, settings=settings).sync_account(st.account_id)
    assert (again.new_messages, again.new_locations) == (0, 0)
