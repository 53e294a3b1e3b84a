"""The test harness itself: a real Dovecot that behaves like a production IMAP server.

If these fail, every sync test built on top of them is meaningless, so they check the
properties the sync engine relies on (TLS trust, UIDs, UIDVALIDITY, flags) end to end
with imapclient, plus the sample-mail generator's realism and determinism.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import email.utils
import gc
import re
import ssl
import time
import warnings
from email.message import EmailMessage
from pathlib import Path
from typing import Unpack

import pytest
from cryptography import x509
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from devtools.devmail import LocalDovecot, ensure_dovecot_installed
from devtools.samples import (
    Attachment,
    MessageFields,
    build_message,
    encoded_word,
    generate_mailbox,
    malformed_cases,
    malformed_messages,
)
from tests.dovecot_fixtures import MailboxUser

NEEDED_CAPABILITIES = {b"UIDPLUS", b"CONDSTORE", b"QRESYNC", b"SPECIAL-USE", b"MULTIAPPEND", b"IDLE", b"MOVE"}


def _msg(subject: str, /, **kwargs: Unpack[MessageFields]) -> bytes:
    fields: MessageFields = {
        "subject": subject,
        "from_": "Hank Scorpio <hank@globex.test>",
        "to": "sales@acme.test",
        "date": dt.datetime(2024, 3, 1, 12, 0, tzinfo=dt.UTC),
    }
    fields.update(kwargs)
    return build_message(**fields)


def _parse(raw: bytes) -> EmailMessage:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


# -- server, login, TLS ------------------------------------------------------------


def test_login_on_plain_port_and_capabilities(mailbox_user: MailboxUser) -> None:
    server = mailbox_user.dovecot
    assert server.host == "127.0.0.1"
    with IMAPClient(server.host, port=server.port, ssl=False, timeout=10) as conn:
        conn.login(mailbox_user.name, mailbox_user.password)
        assert set(conn.capabilities()) >= NEEDED_CAPABILITIES
        names = {name for _flags, _sep, name in conn.list_folders()}
        assert {"INBOX", "Sent", "Drafts", "Trash"} <= names
        assert conn.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 0
        assert conn.folder_status("Sent", ["MESSAGES"])[b"MESSAGES"] == 0


def test_wrong_password_is_rejected(mailbox_user: MailboxUser) -> None:
    server = mailbox_user.dovecot
    with IMAPClient(server.host, port=server.port, ssl=False, timeout=10) as conn, pytest.raises(LoginError):
        conn.login(mailbox_user.name, mailbox_user.password + "x")


def test_login_over_tls_trusting_ca_file(mailbox_user: MailboxUser) -> None:
    server = mailbox_user.dovecot
    assert server.ca_file is not None and server.ca_file.exists()
    context = ssl.create_default_context(cafile=str(server.ca_file))
    context.verify_flags |= ssl.VERIFY_X509_STRICT  # the default from Python 3.13 on
    with IMAPClient(server.host, port=server.ssl_port, ssl=True, ssl_context=context, timeout=10) as conn:
        conn.login(mailbox_user.name, mailbox_user.password)
        assert conn.folder_status("INBOX", ["MESSAGES"])[b"MESSAGES"] == 0
    # The name "localhost" is valid too (checked on the certificate: we never resolve it).
    cert = x509.load_pem_x509_certificate(server.cert_file.read_bytes())  # the server's, not the CA's
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


def test_tls_fails_with_default_trust_store(dovecot: LocalDovecot) -> None:
    """The certificate comes from a private test CA: a client trusting only the system CAs must refuse."""
    with warnings.catch_warnings():
        # imaplib leaks the raw socket when the handshake fails; not what we test here.
        warnings.simplefilter("ignore", ResourceWarning)
        with pytest.raises(ssl.SSLCertVerificationError):
            IMAPClient(
                dovecot.host, port=dovecot.ssl_port, ssl=True, ssl_context=ssl.create_default_context()
            )
        gc.collect()


def test_add_user_works_while_running(dovecot: LocalDovecot) -> None:
    name = f"late{time.monotonic_ns() % 10**9}"
    dovecot.add_user(name, "first")
    with dovecot.client(name) as conn:
        assert conn.folder_exists("Sent")
    dovecot.add_user(name, "second")  # change the password of a live server
    assert dovecot.users[name] == "second"
    with dovecot.client(name, tls=True) as conn:
        assert conn.folder_exists("INBOX")
    with (
        IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=10) as conn,
        pytest.raises(LoginError),
    ):
        conn.login(name, "first")


# -- mail helpers --------------------------------------------------------------------


def test_append_then_fetch_back(mailbox_user: MailboxUser) -> None:
    server, user = mailbox_user.dovecot, mailbox_user.name
    raw = _msg("Quote for 250 units", message_id="<append-1@globex.test>")
    uid = server.append(user, "INBOX", raw)
    assert uid == 1
    assert server.fetch(user, "INBOX") == {1: raw}
    with server.client(user) as conn:
        conn.select_folder("INBOX", readonly=True)
        assert conn.search(["HEADER", "Message-ID", "<append-1@globex.test>"]) == [1]
    assert server.flags(user, "INBOX") == {1: ()}, "helpers must never mark mail \\Seen"


def test_append_with_flags_and_internal_date(mailbox_user: MailboxUser) -> None:
    server, user = mailbox_user.dovecot, mailbox_user.name
    when = dt.datetime(2023, 5, 4, 3, 2, 1, tzinfo=dt.UTC)
    uid = server.append(user, "Sent", _msg("sent one"), flags=("\\Seen",), internal_date=when)
    assert server.flags(user, "Sent") == {uid: ("\\Seen",)}
    with server.client(user) as conn:
        conn.select_folder("Sent", readonly=True)
        internal = conn.fetch([uid], ["INTERNALDATE"])[uid][b"INTERNALDATE"]
    assert internal.astimezone(dt.UTC) == when if internal.tzinfo else internal == when.replace(tzinfo=None)


def test_append_many_returns_uids_in_order(mailbox_user: MailboxUser) -> None:
    server, user = mailbox_user.dovecot, mailbox_user.name
    raws = [_msg(f"bulk {i}", message_id=f"<bulk-{i}@globex.test>") for i in range(120)]
    uids = server.append_many(user, "INBOX", raws, chunk_size=50)
    assert uids == list(range(1, 121))
    fetched = server.fetch(user, "INBOX", [1, 60, 120])
    assert [fetched[u] for u in (1, 60, 120)] == [raws[0], raws[59], raws[119]]


def test_sent_has_special_use(mailbox_user: MailboxUser) -> None:
    with mailbox_user.dovecot.client(mailbox_user.name) as conn:
        specials = {name: flags for flags, _sep, name in conn.list_folders()}
        assert b"\\Sent" in specials["Sent"]
        assert b"\\Drafts" in specials["Drafts"]
        assert b"\\Trash" in specials["Trash"]
        assert conn.find_special_folder(b"\\Sent") == "Sent"


def test_create_folder_with_hierarchy(mailbox_user: MailboxUser) -> None:
    server, user = mailbox_user.dovecot, mailbox_user.name
    server.create_folder(user, "Customers/Globex")
    server.create_folder(user, "Customers/Globex")  # idempotent
    uid = server.append(user, "Customers/Globex", _msg("filed"))
    assert list(server.flags(user, "Customers/Globex")) == [uid]
    assert server.maildir_path(user, "Customers/Globex").is_dir()


def test_reset_uidvalidity_keeps_messages(mailbox_user: MailboxUser) -> None:
    server, user = mailbox_user.dovecot, mailbox_user.name
    raws = [_msg(f"keep {i}", message_id=f"<keep-{i}@globex.test>") for i in range(3)]
    server.append_many(user, "INBOX", raws)
    before = server.status(user, "INBOX")
    new = server.reset_uidvalidity(user, "INBOX")
    after = server.status(user, "INBOX")
    assert new != before["UIDVALIDITY"]
    assert after["UIDVALIDITY"] == new
    assert after["MESSAGES"] == before["MESSAGES"] == 3
    with server.client(user) as conn:  # a fresh SELECT reports it too
        assert conn.select_folder("INBOX", readonly=True)[b"UIDVALIDITY"] == new
    assert sorted(server.fetch(user, "INBOX").values()) == sorted(raws)


def test_reset_uidvalidity_renumber_changes_every_uid(mailbox_user: MailboxUser) -> None:
    server, user = mailbox_user.dovecot, mailbox_user.name
    raws = [_msg(f"renumber {i}", message_id=f"<ren-{i}@globex.test>") for i in range(4)]
    old_uids = server.append_many(user, "INBOX", raws)
    server.expunge(user, "INBOX", [old_uids[1]])
    before = server.status(user, "INBOX")
    with server.client(user) as open_session:  # an open session must not undo the change
        open_session.select_folder("INBOX")
        new = server.reset_uidvalidity(user, "INBOX", renumber=True)
    after = server.status(user, "INBOX")
    assert after["UIDVALIDITY"] == new != before["UIDVALIDITY"]
    assert after["MESSAGES"] == 3
    fetched = server.fetch(user, "INBOX")
    assert not set(fetched) & set(old_uids)
    assert min(fetched) > before["UIDNEXT"]
    assert [fetched[u] for u in sorted(fetched)] == [raws[0], raws[2], raws[3]]
    assert server.append(user, "INBOX", _msg("after")) > max(fetched)


def test_expunge_removes_only_given_uids(mailbox_user: MailboxUser) -> None:
    server, user = mailbox_user.dovecot, mailbox_user.name
    uids = server.append_many(user, "INBOX", [_msg(f"x{i}") for i in range(4)])
    server.expunge(user, "INBOX", [uids[1], uids[2]])
    assert server.flags(user, "INBOX") == {uids[0]: (), uids[3]: ()}
    assert server.status(user, "INBOX")["MESSAGES"] == 2


def test_flags_helper_reports_flags_and_reading_never_sets_seen(mailbox_user: MailboxUser) -> None:
    server, user = mailbox_user.dovecot, mailbox_user.name
    a = server.append(user, "INBOX", _msg("plain"))
    b = server.append(user, "INBOX", _msg("flagged"), flags=("\\Flagged", "\\Answered"))
    c = server.append(user, "INBOX", _msg("read"), flags=("\\Seen",))
    expected = {a: (), b: ("\\Answered", "\\Flagged"), c: ("\\Seen",)}
    assert server.flags(user, "INBOX") == expected
    server.fetch(user, "INBOX")
    assert server.flags(user, "INBOX") == expected
    assert server.status(user, "INBOX")["UNSEEN"] == 2


def test_load_maildir_messages_are_visible_via_imap(mailbox_user: MailboxUser) -> None:
    server, user = mailbox_user.dovecot, mailbox_user.name
    mail = list(generate_mailbox(60, seed=3))
    inbox = [m for m in mail if m.folder == "INBOX"]
    sent = [m for m in mail if m.folder == "Sent"]
    assert server.load_maildir(user, "INBOX", [m.raw for m in inbox]) == len(inbox)
    assert server.load_maildir(user, "Sent", [m.raw for m in sent], flags=("\\Seen",)) == len(sent)
    assert server.load_maildir(user, "Archive/2024", [inbox[0].raw]) == 1  # created on demand
    # UIDs follow input order, content is byte-identical, nothing is \Recent or \Seen.
    fetched = server.fetch(user, "INBOX")
    assert [fetched[u] for u in sorted(fetched)] == [m.raw for m in inbox]
    assert set(server.flags(user, "INBOX").values()) == {()}
    assert set(server.flags(user, "Sent").values()) == {("\\Seen",)}
    assert server.status(user, "Archive/2024")["MESSAGES"] == 1
    with server.client(user) as conn:
        conn.select_folder("INBOX", readonly=True)
        dates = conn.fetch(conn.search("ALL"), ["INTERNALDATE", "BODY.PEEK[HEADER.FIELDS (DATE)]"])
    for data in dates.values():
        header_date = email.utils.parsedate_to_datetime(
            data[b"BODY[HEADER.FIELDS (DATE)]"].decode().split(":", 1)[1].strip()
        )
        internal = data[b"INTERNALDATE"]
        internal = internal if internal.tzinfo else internal.replace(tzinfo=dt.UTC)
        assert internal == header_date  # INTERNALDATE comes from the Date header
    # Later APPENDs continue after the loaded messages.
    assert server.append(user, "INBOX", _msg("after load")) == len(inbox) + 1


def test_non_utf8_charset_search_works(mailbox_user: MailboxUser) -> None:
    """Dovecot needs glibc iconv modules (inside its chroot when run as root) for this."""
    server, user = mailbox_user.dovecot, mailbox_user.name
    raw = _msg("Grüße aus München", body="Die Bestätigung für Jürgen folgt.\n", charset="iso-8859-1")
    assert b"=?iso-8859-1?Q?Gr=FC=DFe" in raw
    uid = server.append(user, "INBOX", raw)
    with server.client(user) as conn:
        conn.select_folder("INBOX", readonly=True)
        assert conn.search(["BODY", "Bestätigung"], charset="UTF-8") == [uid]
        assert conn.search(["SUBJECT", "Grüße"], charset="UTF-8") == [uid]
        assert conn.search(["BODY", "Jürgen".encode("latin-1")], charset="ISO-8859-1") == [uid]


def test_malformed_messages_survive_the_server(mailbox_user: MailboxUser) -> None:
    """Dovecot stores all of them; NULs come back as 0x80 and bare LF as CRLF over IMAP."""
    server, user = mailbox_user.dovecot, mailbox_user.name
    cases = malformed_cases()
    assert list(cases.values()) == malformed_messages()
    server.create_folder(user, "Malformed")
    uids = [server.append(user, "Malformed", raw) for raw in cases.values()]
    fetched = server.fetch(user, "Malformed")
    for uid, (name, raw) in zip(uids, cases.items(), strict=True):
        expected = raw.replace(b"\0", b"\x80")
        if name == "bare_lf_and_cr":  # line endings are normalised on APPEND
            assert re.sub(rb"\r\n|\r|\n", b"\n", fetched[uid]) == re.sub(rb"\r\n|\r|\n", b"\n", raw)
        else:
            assert fetched[uid] == expected, name


def test_restart_keeps_ports_users_and_mail(tmp_path: Path) -> None:
    started = time.monotonic()
    server = LocalDovecot(tmp_path / "dc", tls=False)
    with server:
        startup = time.monotonic() - started
        assert server.ssl_port is None and server.ca_file is None
        server.add_user("restart", "pw")
        uid = server.append("restart", "INBOX", _msg("survives"))
        port = server.port
        server.stop()
        assert not server.running
        server.start()
        assert server.port == port
        assert list(server.flags("restart", "INBOX")) == [uid]
    assert not server.running
    assert startup < 5, f"server start took {startup:.2f}s"
    again = LocalDovecot(tmp_path / "dc", tls=False)  # a new object re-reads the users
    with again:
        assert again.users == {"restart": "pw"}


def test_ensure_dovecot_installed_and_config_is_private(dovecot: LocalDovecot) -> None:
    assert ensure_dovecot_installed().name == "dovecot"
    conf = dovecot.conf_path.read_text()
    assert "/etc/dovecot" not in conf
    assert "listen = 127.0.0.1" in conf
    assert str(dovecot.base_dir) in conf


def test_unsafe_base_dir_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="base_dir"):
        LocalDovecot(tmp_path / "has space")


# -- sample mail --------------------------------------------------------------------


def test_samples_are_deterministic_for_a_seed() -> None:
    first = list(generate_mailbox(150, seed=11))
    assert first == list(generate_mailbox(150, seed=11))
    assert [m.raw for m in first] != [m.raw for m in generate_mailbox(150, seed=12)]


def test_samples_are_parseable_and_realistic() -> None:
    mail = list(generate_mailbox(300, seed=5))
    seen_ids: set[str] = set()
    content_types: set[str] = set()
    charsets: set[str] = set()
    folders = {m.folder for m in mail}
    replies = encoded_subjects = attachments = 0
    for sample in mail:
        parsed = _parse(sample.raw)
        assert parsed["Message-ID"] == sample.message_id
        assert sample.message_id not in seen_ids
        assert b"\r\n" in sample.raw and b"\n" not in sample.raw.replace(b"\r\n", b"")
        sender = parsed["From"].addresses[0].addr_spec
        if sample.folder == "Sent":
            assert sender == "sales@acme.test"
        else:
            domain = sender.rpartition("@")[2]
            assert domain.endswith((".test", ".example")) or domain in {
                "gmail.com",
                "yahoo.com",
                "outlook.com",
                "gmx.de",
                "wp.pl",
            }
        if parsed["In-Reply-To"]:
            replies += 1
            assert parsed["In-Reply-To"] in seen_ids, "replies point at earlier messages"
            assert parsed["In-Reply-To"] in parsed["References"]
        if b"Subject: =?" in sample.raw:
            encoded_subjects += 1
        seen_ids.add(sample.message_id)
        for part in parsed.walk():
            content_types.add(part.get_content_type())
            if charset := part.get_content_charset():
                charsets.add(charset)
            if part.get_content_disposition() == "attachment":
                attachments += 1
                assert part.get_content() is not None
            elif part.get_content_maintype() == "text":
                assert isinstance(part.get_content(), str)
    assert folders == {"INBOX", "Sent"}
    assert replies > 50 and encoded_subjects > 10 and attachments > 20
    assert {"text/plain", "text/html", "multipart/alternative", "multipart/mixed"} <= content_types
    assert {"application/pdf", "text/csv", "image/png", "multipart/related"} <= content_types
    assert {"utf-8", "iso-8859-1", "windows-1252"} <= charsets


def test_large_messages_every_n() -> None:
    sizes = [len(m.raw) for m in generate_mailbox(10, seed=2, large_every=5, large_size=300_000)]
    assert sizes[4] > 300_000 and sizes[9] > 300_000
    assert sum(s > 300_000 for s in sizes) == 2


def test_build_message_exact_headers_and_101_recipients() -> None:
    recipients = [f"Customer {i} <c{i}@globex.test>" for i in range(101)]
    extra: dict[str, str | bytes] = {
        "X-Raw": b"=?windows-1252?Q?=93hi=94?=",
        "List-Id": "Promo <promo.hooli.example>",
    }
    raw = build_message(
        subject="Newsletter",
        from_="Zoë Ångström <zoe@hooli.example>",
        to=recipients,
        cc=["fox@acme.test"],
        bcc=["dana@acme.test"],
        body="Plain body\n",
        html="<p>HTML body</p>",
        message_id="<fixed@hooli.example>",
        in_reply_to="<parent@acme.test>",
        references=["<root@acme.test>", "<parent@acme.test>"],
        date=dt.datetime(2024, 2, 29, 23, 59, tzinfo=dt.UTC),
        extra_headers=extra,
        attachments=[
            Attachment("Übersicht.csv", "text/csv", b"a,b\n1,2\n"),
            ("x.bin", "application/octet-stream", b"\0\1"),
        ],
    )
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert b"X-Raw: =?windows-1252?Q?=93hi=94?=\r\n" in raw
    parsed = _parse(raw)
    assert len(parsed["To"].addresses) == 101
    assert parsed["From"].addresses[0].display_name == "Zoë Ångström"
    assert parsed["Bcc"].addresses[0].addr_spec == "dana@acme.test"
    assert parsed["X-Raw"] == "“hi”"
    assert parsed["References"].split() == ["<root@acme.test>", "<parent@acme.test>"]
    plain, html = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content().replace("\r\n", "\n") == "Plain body\n"
    assert html.get_content().strip() == "<p>HTML body</p>"
    assert [a.get_filename() for a in parsed.iter_attachments()] == ["Übersicht.csv", "x.bin"]
    assert raw == build_message(
        subject="Newsletter",
        from_="Zoë Ångström <zoe@hooli.example>",
        to=recipients,
        cc=["fox@acme.test"],
        bcc=["dana@acme.test"],
        body="Plain body\n",
        html="<p>HTML body</p>",
        message_id="<fixed@hooli.example>",
        in_reply_to="<parent@acme.test>",
        references=["<root@acme.test>", "<parent@acme.test>"],
        date=dt.datetime(2024, 2, 29, 23, 59, tzinfo=dt.UTC),
        extra_headers=extra,
        attachments=[
            Attachment("Übersicht.csv", "text/csv", b"a,b\n1,2\n"),
            ("x.bin", "application/octet-stream", b"\0\1"),
        ],
    ), "same input, same bytes"


def test_encoded_word_splits_long_text() -> None:
    text = "Ünïcödé " * 20
    header = encoded_word(text, "iso-8859-1")
    words = header.split("\r\n ")
    assert len(words) > 1 and all(len(w) <= 75 for w in words)
    assert str(_parse(f"Subject: {header}\r\n\r\n".encode())["Subject"]) == text


@pytest.mark.parametrize("name", list(malformed_cases()))
def test_malformed_messages_do_not_crash_the_stdlib_parser(name: str) -> None:
    parsed = email.message_from_bytes(malformed_cases()[name], policy=email.policy.default)
    for part in parsed.walk():
        part.get_content_type()
