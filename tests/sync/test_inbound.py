"""The inbound listener against the real thing: aiosmtpd on loopback, the stdlib smtplib client
(SMTP and LMTP), SQLite and PostgreSQL."""

from __future__ import annotations

import os
import signal
import smtplib
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import trustme
from sqlalchemy import Engine
from sqlmodel import func, select

from core.db import session_scope
from core.settings import Settings
from core.types import DeliveryOutcome, SkipReason
from crm import forwarding
from crm.models import ImapUid, InboundDelivery, Message, SkippedMessage, Thread
from tests.sync.inbound_harness import DOMAIN, inbound_settings, listener, mail, make_world


def count(db: Engine, model: type) -> int:
    with session_scope(db) as session:
        return int(session.exec(select(func.count()).select_from(model)).one())


def test_stored_before_250_and_visible_as_account_mail(db: Engine, settings: Settings) -> None:
    world = make_world(db)
    s = inbound_settings(settings)
    raw = mail()
    with listener(s, db), smtplib.SMTP("127.0.0.1", s.inbound_port, timeout=10) as client:
        refused = client.sendmail("jane.doe@acme.example", [world.address], raw)
        assert refused == {}
        # Once the client has its 250 the message is committed: a new session sees it.
        with session_scope(db) as session:
            message = session.exec(select(Message)).one()
            assert message.from_email == "jane.doe@acme.example"
            assert message.thread_id is not None
            location = session.exec(select(ImapUid)).one()
            assert location.account_id == world.account_id
        # The same delivery again (a retry after a lost 250): answered 250, stored once.
        code, _ = client.mail("jane.doe@acme.example")
        client.rcpt(world.address)
        code, reply = client.data(raw)
        assert code == 250 and b"already stored" in reply
    assert count(db, Message) == 1
    with session_scope(db) as session:
        delivery = session.exec(select(InboundDelivery)).one()
        assert delivery.arrivals == 2 and delivery.outcome is DeliveryOutcome.STORED
        channel = forwarding.get_channel(session=session, caller=world.admin, channel_id=world.channel_id)
        assert channel.activated  # the first mail fixed the address


def test_recipients_refused_at_rcpt_and_no_relay(sqlite_db: Engine, settings: Settings) -> None:
    world = make_world(sqlite_db)
    s = inbound_settings(settings)
    with listener(s, sqlite_db), smtplib.SMTP("127.0.0.1", s.inbound_port, timeout=10) as client:
        client.ehlo()
        client.mail("jane.doe@acme.example")
        code, reply = client.rcpt(f"sales-nosuch@{DOMAIN}")
        assert code == 550 and b"5.1.1" in reply
        code, reply = client.rcpt("victim@elsewhere.example")  # not an open relay
        assert code == 550 and b"5.7.1" in reply
        code, _ = client.rcpt(world.address)
        assert code == 250
        client.rset()
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("spam@spam.example", ["someone@gmail.com"], mail())
    assert count(sqlite_db, Message) == 0


def test_size_limit(sqlite_db: Engine, settings: Settings) -> None:
    world = make_world(sqlite_db)
    s = inbound_settings(settings, inbound_max_message_bytes=20_000)
    with listener(s, sqlite_db), smtplib.SMTP("127.0.0.1", s.inbound_port, timeout=10) as client:
        client.ehlo()
        assert client.has_extn("size") and client.esmtp_features["size"] == "20000"
        big = mail(body=("x" * 60 + "\n") * 500)
        # Declared (SIZE in MAIL FROM): refused before the data is sent.
        with pytest.raises(smtplib.SMTPSenderRefused) as declared:
            client.sendmail("jane.doe@acme.example", [world.address], big)
        assert declared.value.smtp_code == 552
    with listener(s, sqlite_db), smtplib.SMTP("127.0.0.1", s.inbound_port, timeout=10) as client:
        # Undeclared: refused after DATA, nothing kept.
        client.ehlo()
        client.mail("jane.doe@acme.example")
        client.rcpt(world.address)
        code, reply = client.data(big)
        assert code == 552, reply
    assert count(sqlite_db, Message) == 0


def test_starttls(sqlite_db: Engine, settings: Settings, tmp_path: Path) -> None:
    world = make_world(sqlite_db)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    cert.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    s = inbound_settings(
        settings, inbound_tls_cert=tmp_path / "cert.pem", inbound_tls_key=tmp_path / "key.pem"
    )
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    with listener(s, sqlite_db), smtplib.SMTP("127.0.0.1", s.inbound_port, timeout=10) as client:
        client.ehlo()
        assert client.has_extn("starttls")
        client.starttls(context=client_ctx)
        client.ehlo()
        assert client.sendmail("jane.doe@acme.example", [world.address], mail()) == {}
    assert count(sqlite_db, Message) == 1


def test_lmtp_answers_per_recipient(sqlite_db: Engine, settings: Settings) -> None:
    world = make_world(sqlite_db)
    s = inbound_settings(settings, inbound_lmtp_port=inbound_settings(settings).inbound_port)
    with listener(s, sqlite_db), smtplib.LMTP("127.0.0.1", s.inbound_lmtp_port, timeout=10) as client:
        assert client.sendmail("jane.doe@acme.example", [world.address], mail()) == {}
        with pytest.raises(smtplib.SMTPRecipientsRefused):
            client.sendmail("jane.doe@acme.example", [f"nobody-x@{DOMAIN}"], mail())
    assert count(sqlite_db, Message) == 1


def test_per_peer_connection_limit(sqlite_db: Engine, settings: Settings) -> None:
    make_world(sqlite_db)
    s = inbound_settings(settings, inbound_max_connections_per_peer=2)
    with listener(s, sqlite_db):
        first = smtplib.SMTP("127.0.0.1", s.inbound_port, timeout=10)
        second = smtplib.SMTP("127.0.0.1", s.inbound_port, timeout=10)
        with pytest.raises(smtplib.SMTPConnectError) as busy:
            smtplib.SMTP("127.0.0.1", s.inbound_port, timeout=10)
        assert busy.value.smtp_code == 421
        first.quit()
        second.quit()
        with smtplib.SMTP("127.0.0.1", s.inbound_port, timeout=10) as again:  # a slot is free again
            assert again.noop()[0] == 250


def test_automated_bounces_own_mail_never_start_a_conversation(sqlite_db: Engine, settings: Settings) -> None:
    world = make_world(sqlite_db)
    s = inbound_settings(settings)
    with listener(s, sqlite_db), smtplib.SMTP("127.0.0.1", s.inbound_port, timeout=10) as client:
        client.sendmail(
            "jane.doe@acme.example",
            [world.address],
            mail(subject="Out of office", headers={"Auto-Submitted": "auto-replied"}),
        )
        client.sendmail("", [world.address], mail(sender="mailer-daemon@acme.example", subject="Undelivered"))
        client.sendmail(world.address, [world.address], mail(sender=world.address, subject="Echo"))
    assert count(sqlite_db, Message) == 0
    assert count(sqlite_db, Thread) == 0
    with session_scope(sqlite_db) as session:
        reasons = sorted(str(r) for r in session.exec(select(SkippedMessage.reason)).all())
    assert reasons == sorted([SkipReason.AUTOMATED.value, SkipReason.BOUNCE.value, SkipReason.OWN_MAIL.value])


def test_forwarding_loop_stopped_with_a_warning(sqlite_db: Engine, settings: Settings) -> None:
    world = make_world(sqlite_db)
    s = inbound_settings(settings, inbound_loop_threshold=3)
    raw = mail(message_id="<loop@acme.example>")
    codes = []
    with listener(s, sqlite_db), smtplib.SMTP("127.0.0.1", s.inbound_port, timeout=10) as client:
        client.ehlo()
        for hop in range(4):
            client.mail(f"hop{hop}@ourco.example")
            client.rcpt(world.address)
            codes.append(client.data(raw)[0])
    assert codes == [250, 250, 554, 554]
    assert count(sqlite_db, Message) == 1
    # A message that went round too many relays (RFC 5321 6.3) is refused on sight.
    hops = "".join(f"Received: from hop{n}.example by hop{n + 1}.example\r\n" for n in range(60))
    with listener(s, sqlite_db), smtplib.SMTP("127.0.0.1", s.inbound_port, timeout=10) as client:
        client.ehlo()
        client.mail("jane.doe@acme.example")
        client.rcpt(world.address)
        assert client.data(hops.encode() + mail(message_id="<hops@acme.example>"))[0] == 554
    assert count(sqlite_db, Message) == 1
    with session_scope(sqlite_db) as session:
        channel = forwarding.get_channel(session=session, caller=world.admin, channel_id=world.channel_id)
    assert channel.loop_warning is not None and "<loop@acme.example>" in channel.loop_warning


def test_recipient_limit_applies(sqlite_db: Engine, settings: Settings) -> None:
    world = make_world(sqlite_db)
    s = inbound_settings(settings, max_recipients=3)
    many = ", ".join(f"p{i}@acme.example" for i in range(5))
    with listener(s, sqlite_db), smtplib.SMTP("127.0.0.1", s.inbound_port, timeout=10) as client:
        client.sendmail("news@acme.example", [world.address], mail(to=many))
    assert count(sqlite_db, Message) == 0
    with session_scope(sqlite_db) as session:
        skipped = session.exec(select(SkippedMessage)).one()
    assert skipped.reason is SkipReason.TOO_MANY_RECIPIENTS and skipped.account_id == world.account_id
    assert count(sqlite_db, ImapUid) == 1


@pytest.mark.parametrize("where", ["before", "after"])
def test_kill_9_around_the_commit_then_retry_stores_once(
    sqlite_db: Engine, settings: Settings, tmp_path: Path, where: str
) -> None:
    """The process dies between DATA and its reply (before or after the commit); the sending
    server's retry is stored exactly once."""
    world = make_world(sqlite_db)
    port = inbound_settings(settings).inbound_port
    marker = tmp_path / "marker"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    child = subprocess.Popen(
        [sys.executable, "-m", "tests.sync.inbound_child", str(port), where, str(marker)], env=env
    )
    try:
        deadline = time.monotonic() + 30
        while not Path(f"{marker}.ready").exists():
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.05)
        raw = mail(message_id="<crash@acme.example>")
        client = smtplib.SMTP("127.0.0.1", port, timeout=30)
        client.ehlo()
        client.mail("jane.doe@acme.example")
        client.rcpt(world.address)
        result: dict[str, object] = {}

        def send() -> None:
            try:
                result["reply"] = client.data(raw)
            except (smtplib.SMTPException, OSError) as exc:
                result["error"] = exc

        sender = threading.Thread(target=send)
        sender.start()
        while not marker.exists():
            assert time.monotonic() < deadline and child.poll() is None
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
        sender.join(10)
        assert "reply" not in result  # never acknowledged
    finally:
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
        child.wait()
    assert count(sqlite_db, Message) == (1 if where == "after" else 0)
    s = inbound_settings(settings, inbound_port=port)
    with listener(s, sqlite_db), smtplib.SMTP("127.0.0.1", port, timeout=10) as retry:
        assert retry.sendmail("jane.doe@acme.example", [world.address], raw) == {}
    assert count(sqlite_db, Message) == 1
    assert count(sqlite_db, ImapUid) == 1


def test_busy_database_answers_451_and_the_retry_stores_once(sqlite_db: Engine, settings: Settings) -> None:
    """Like a real MTA: a 4xx at DATA (the database is locked by another writer) and the same
    message again later is stored exactly once."""
    import sqlite3

    from sqlalchemy import create_engine

    world = make_world(sqlite_db)
    url = sqlite_db.url.render_as_string(hide_password=False)
    impatient = create_engine(url, connect_args={"check_same_thread": False, "timeout": 0.3})
    s = inbound_settings(settings)
    raw = mail(message_id="<busy@acme.example>")
    blocker = sqlite3.connect(str(sqlite_db.url.database), timeout=1)
    try:
        with listener(s, impatient), smtplib.SMTP("127.0.0.1", s.inbound_port, timeout=30) as client:
            client.ehlo()
            blocker.execute("BEGIN IMMEDIATE")  # another writer holds the write lock
            client.mail("jane.doe@acme.example")
            assert client.rcpt(world.address)[0] == 250  # reading still works
            code, reply = client.data(raw)
            assert code == 451, reply
            blocker.rollback()
            assert client.sendmail("jane.doe@acme.example", [world.address], raw) == {}
    finally:
        blocker.close()
        impatient.dispose()
    assert count(sqlite_db, Message) == 1
