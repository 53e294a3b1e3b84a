"""Tests for `sync.parse`: the message parser must survive anything and stay bounded."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import cast

import pytest

from sync.parse import (
    DEFAULT_LIMITS,
    ParseLimits,
    count_recipients,
    normalize_subject,
    parse_message,
    synthetic_message_id,
)
from sync.types import Address, Attachment

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "eml"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def mail(*headers: str | bytes, body: bytes = b"", crlf: bool = True) -> bytes:
    """A message from header lines and a body; lines end in CRLF unless `crlf` is False."""
    eol = b"\r\n" if crlf else b"\n"
    lines = [h.encode() if isinstance(h, str) else h for h in headers]
    return eol.join(lines) + eol + eol + body.replace(b"\n", eol)


BASIC_HEADERS = (
    "From: Alice Example <Alice@Example.com>",
    "To: bob@example.com",
    "Subject: Hello",
    "Date: Tue, 5 Mar 2024 10:00:00 +0100",
    "Message-ID: <m1@example.com>",
)


# ---------------------------------------------------------------------------------------------
# Plain messages


def test_plain_ascii_message() -> None:
    raw = mail(
        "Return-Path: <bounce@example.com>",
        "Received: from mx.example.com by imap.example.com",
        'From: "Alice Example" <Alice@Example.COM>',
        "To: Bob <bob@example.com>, carol@example.com",
        "Cc: Dave <DAVE@example.com>",
        "Reply-To: replies@example.com",
        "Subject: Re: Quote for\r\n  March",
        "Date: Tue, 5 Mar 2024 10:00:00 +0100",
        "Message-ID: <m1@example.com>",
        "In-Reply-To: <m0@example.com> (sent earlier)",
        "References: <root@example.com>\r\n <m0@example.com>",
        "Auto-Submitted: auto-replied",
        "Precedence: bulk",
        "X-Spam-Score: 3",
        body=b"Hi Bob,\n\nthanks.\n",
    )
    parsed = parse_message(raw)
    assert parsed.parse_errors == ()
    assert parsed.message_id == "<m1@example.com>"
    assert not parsed.message_id_synthetic
    assert parsed.subject == "Re: Quote for  March"
    assert parsed.normalized_subject == "quote for march"
    assert parsed.date == datetime(2024, 3, 5, 9, 0, tzinfo=UTC)
    assert parsed.from_ == Address("alice@example.com", "Alice Example")
    assert parsed.to == (Address("bob@example.com", "Bob"), Address("carol@example.com"))
    assert parsed.cc == (Address("dave@example.com", "Dave"),)
    assert parsed.bcc == ()
    assert parsed.reply_to == (Address("replies@example.com"),)
    assert parsed.in_reply_to == "<m0@example.com>"
    assert parsed.references == ("<root@example.com>", "<m0@example.com>")
    assert parsed.text_body == "Hi Bob,\n\nthanks.\n"
    assert parsed.html_body == ""
    assert parsed.attachments == ()
    assert parsed.size == len(raw)
    assert parsed.recipient_count == 3
    assert parsed.headers == (
        ("return-path", "<bounce@example.com>"),
        ("auto-submitted", "auto-replied"),
        ("precedence", "bulk"),
    )
    assert parsed.header("Auto-Submitted") == "auto-replied"
    assert len(parsed.content_hash) == 64


def test_mbox_from_line_is_skipped() -> None:
    raw = b"From alice@example.com Tue Mar  5 10:00:00 2024\n" + mail(*BASIC_HEADERS, body=b"hi", crlf=False)
    parsed = parse_message(raw)
    assert parsed.parse_errors == ()
    assert parsed.message_id == "<m1@example.com>"
    assert parsed.text_body == "hi"


def test_header_only_input_has_empty_bodies_and_no_errors() -> None:
    """The engine parses a few fetched header fields before deciding to download a body."""
    raw = (
        b"Message-ID: <big@example.com>\r\nFrom: a@example.com\r\nTo: b@example.com, c@example.com\r\n"
        b"Content-Type: multipart/mixed; boundary=xyz\r\n\r\n"
    )
    parsed = parse_message(raw)
    assert parsed.parse_errors == ()
    assert parsed.message_id == "<big@example.com>"
    assert parsed.recipient_count == 2
    assert (parsed.text_body, parsed.html_body, parsed.attachments) == ("", "", ())
    # No trailing blank line at all is just as fine.
    assert parse_message(b"Message-ID: <x@y>\r\nTo: b@example.com").to == (Address("b@example.com"),)


# ---------------------------------------------------------------------------------------------
# MIME structure


def test_multipart_alternative_with_nested_related() -> None:
    parsed = parse_message(fixture("multipart_alternative.eml"))
    assert parsed.parse_errors == ()
    assert parsed.subject == "Quartalsbericht für Q1"
    assert parsed.from_ == Address("anna.mueller@example.de", "Müller, Anna")
    assert parsed.text_body.startswith("Hallo Bob,\n\nanbei der Bericht für das erste Quartal.")
    assert "sehr lang und wird mit" in parsed.text_body  # quoted-printable soft line break
    assert parsed.text_body.endswith("Grüße\nAnna")
    assert parsed.html_body.startswith("<html><head><style>")
    assert parsed.attachments == (
        Attachment(
            filename=None, content_type="image/png", size=8, inline=True, content_id="logo@example.de"
        ),
    )
    assert parsed.header("list-id") == "Sales team <sales.example.com>"
    assert parsed.header("return-path") == "<bounce@lists.example.com>"


def test_same_message_with_crlf_line_ends_parses_identically() -> None:
    lf = fixture("multipart_alternative.eml")
    crlf = lf.replace(b"\n", b"\r\n")
    a, b = parse_message(lf), parse_message(crlf)
    assert (a.text_body, a.html_body, a.attachments, a.content_hash) == (
        b.text_body,
        b.html_body,
        b.attachments,
        b.content_hash,
    )


def test_html_only_message_derives_text_body() -> None:
    html = (
        b"<html><head><title>Newsletter</title><style>.x{color:red}</style>"
        b"<script>alert('no')</script></head><body>"
        b"<h1>Hello&nbsp;World</h1><p>Prices &amp; offers:</p><ul><li>One</li><li>Two</li></ul>"
        b"<p>Caf&eacute;<br>second   line</p><table><tr><td>a</td><td>b</td></tr></table></body></html>"
    )
    raw = mail(*BASIC_HEADERS, "Content-Type: text/html; charset=utf-8", body=html)
    parsed = parse_message(raw)
    assert parsed.parse_errors == ()
    assert parsed.html_body == html.decode()
    assert parsed.text_body == "Hello World\n\nPrices & offers:\n\nOne\nTwo\n\nCafé\nsecond line\n\na b"


@pytest.mark.parametrize("junk", [b"<!--", b"<a", b'<a b="', b"<![", b"</"])
def test_html_text_extraction_survives_unterminated_markup(junk: bytes) -> None:
    """Python 3.11's HTMLParser is quadratic on these at close(); parsing must still finish."""
    html = b"<p>visible</p>" + junk * 100_000
    parsed = parse_message(mail(*BASIC_HEADERS, "Content-Type: text/html", body=html))
    assert parsed.text_body == "visible"


def test_html_text_keeps_long_trailing_text() -> None:
    """A final text run ending in a bare "&" stays pending after feed(); close() must keep it."""
    html = b"<p>start</p>" + b"long text " * 2000 + b"R&D"
    parsed = parse_message(mail(*BASIC_HEADERS, "Content-Type: text/html", body=html))
    assert parsed.text_body.startswith("start\n\nlong text long text")
    assert parsed.text_body.endswith("long text R&D")


def test_html_text_after_large_inline_image() -> None:
    html = b'<p>before</p><img src="data:image/png;base64,' + b"A" * 500_000 + b'"><p>after</p>'
    parsed = parse_message(mail(*BASIC_HEADERS, "Content-Type: text/html", body=html))
    assert parsed.text_body == "before\n\nafter"


def test_attachments_with_rfc2231_and_rfc2047_filenames() -> None:
    parsed = parse_message(fixture("attachment_rfc2231.eml"))
    assert parsed.parse_errors == ()
    assert parsed.text_body == "Please find the documents attached."
    assert parsed.attachments == (
        Attachment(filename="€ rates 2024.pdf", content_type="application/pdf", size=15),
        Attachment(filename="Grüße.txt", content_type="text/plain", size=33),
        Attachment(
            filename="Übersicht.xlsx",
            content_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            size=4,
        ),
        Attachment(filename=None, content_type="text/calendar", size=29),
    )


def test_attached_message_sender_is_recorded_and_not_descended_into() -> None:
    parsed = parse_message(fixture("forwarded_rfc822.eml"))
    assert parsed.parse_errors == ()
    assert parsed.attached_message_senders == (Address("francois@customer.example", "François"),)
    assert parsed.text_body == "See the customer's mail below."
    assert "INNER BODY" not in parsed.text_body
    assert [a.content_type for a in parsed.attachments] == ["message/rfc822"]
    assert parsed.attachments[0].filename == "Order question.eml"
    assert parsed.date == datetime(2024, 3, 7, 17, 0, tzinfo=UTC)


def test_truncated_multipart_without_closing_boundary() -> None:
    body = (
        b"--b\nContent-Type: text/plain\n\nfirst part\n"
        b"--b\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\nJVBERi0x"
    )
    parsed = parse_message(mail(*BASIC_HEADERS, 'Content-Type: multipart/mixed; boundary="b"', body=body))
    assert parsed.text_body == "first part"
    assert parsed.attachments == (Attachment(filename=None, content_type="application/pdf", size=6),)
    assert parsed.parse_errors == ("multipart is truncated: closing boundary missing",)


def test_multipart_whose_boundary_never_occurs_shows_body_as_text() -> None:
    raw = mail(*BASIC_HEADERS, "Content-Type: multipart/mixed; boundary=nope", body=b"just text")
    parsed = parse_message(raw)
    assert parsed.text_body == "just text"
    assert parsed.parse_errors == ("multipart boundary never occurs in the body",)


@pytest.mark.parametrize("content_type", ["multipart/mixed", f"multipart/mixed; boundary={'b' * 201}"])
def test_multipart_without_usable_boundary_parameter(content_type: str) -> None:
    parsed = parse_message(mail(*BASIC_HEADERS, f"Content-Type: {content_type}", body=b"text"))
    assert parsed.text_body == "text"
    assert parsed.parse_errors == ("multipart without usable boundary parameter",)


def test_nul_characters_are_removed_from_bodies() -> None:
    body = b"--b\nContent-Type: text/plain\n\na\x00b\n--b\nContent-Type: text/html\n\n<p>c\x00d</p>\n--b--\n"
    parsed = parse_message(mail(*BASIC_HEADERS, "Content-Type: multipart/alternative; boundary=b", body=body))
    assert parsed.text_body == "ab"
    assert parsed.html_body == "<p>cd</p>"


# ---------------------------------------------------------------------------------------------
# Charsets and encodings


@pytest.mark.parametrize(
    ("charset", "payload", "expected"),
    [
        ("iso-8859-1", "Café crème".encode("latin-1"), "Café crème"),
        # latin-1 labels routinely carry cp1252 punctuation; read them the way browsers do
        ("iso-8859-1", b"\x93quoted\x94 \x80", "“quoted” €"),
        ("windows-1252", "“Smart” quotes – €5".encode("cp1252"), "“Smart” quotes – €5"),
        ("koi8-r", "Привет, мир".encode("koi8-r"), "Привет, мир"),
        ("shift_jis", "こんにちは世界".encode("shift_jis"), "こんにちは世界"),
        ("gb2312", "你好".encode("gb2312"), "你好"),
        ("x-bogus-charset", "Grüße".encode(), "Grüße"),
        ("x-bogus-charset", "Grüße".encode("latin-1"), "Grüße"),
        ("us-ascii", "naïve".encode(), "naïve"),  # mislabelled UTF-8
        ("utf-8", "naïve".encode("latin-1"), "naïve"),  # mislabelled latin-1
        ("base64", b"plain text", "plain text"),  # a bytes codec is no charset
    ],
)
def test_body_charsets(charset: str, payload: bytes, expected: str) -> None:
    raw = mail(*BASIC_HEADERS, f"Content-Type: text/plain; charset={charset}", body=payload)
    parsed = parse_message(raw)
    assert parsed.text_body == expected
    assert parsed.parse_errors == ()


def test_base64_with_padding_inside_is_decoded_chunk_by_chunk() -> None:
    encoded = base64.b64encode(b"first ") + base64.b64encode(b"second")
    raw = mail(*BASIC_HEADERS, "Content-Transfer-Encoding: base64", body=encoded)
    parsed = parse_message(raw)
    assert parsed.text_body == "first second"
    assert parsed.parse_errors == ()


def test_base64_body_and_missing_padding_is_not_an_error() -> None:
    encoded = base64.b64encode("Grüße aus Köln".encode()).rstrip(b"=")
    raw = mail(
        *BASIC_HEADERS,
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: base64",
        body=encoded[:8] + b"\n" + encoded[8:],
    )
    parsed = parse_message(raw)
    assert parsed.text_body == "Grüße aus Köln"
    assert parsed.parse_errors == ()


def test_broken_base64_is_flagged_but_does_not_raise() -> None:
    body = (
        b"--b\nContent-Type: text/plain\nContent-Transfer-Encoding: base64\n\nSGVsbG8g!!!V29y*bGQ\n"
        b"--b\nContent-Type: application/pdf\nContent-Transfer-Encoding: base64\n\nJVBERi0xL\n--b--\n"
    )
    parsed = parse_message(mail(*BASIC_HEADERS, "Content-Type: multipart/mixed; boundary=b", body=body))
    assert parsed.text_body == "Hello World"  # junk characters skipped
    assert parsed.attachments == (Attachment(filename=None, content_type="application/pdf", size=6),)
    assert parsed.parse_errors == (
        "broken base64 in a text/plain part",
        "broken base64 in a application/pdf part",
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("=?UTF-8?B?SGVsbG8g4pyT?=", "Hello ✓"),
        ("=?iso-8859-1?q?Caf=E9_cr=E8me?=", "Café crème"),
        ("=?utf-8?q?a?= =?utf-8?q?b?=  plain =?utf-8?q?c?=", "ab  plain c"),
        # a multibyte character split across two words
        ("=?utf-8?b?w6k=?= =?utf-8?q?=E2=82?= =?utf-8?q?=AC?=", "é€"),
        ("Re: =?koi8-r?b?8NLJ18XU?=", "Re: Привет"),
        # broken words: missing padding, unknown charset, bad encoding letter, no terminator
        ("=?utf-8?b?SGVsbG8?=", "Hello"),
        ("=?x-unknown?q?caf=E9?=", "café"),
        ("=?utf-8?x?abc?= tail", "=?utf-8?x?abc?= tail"),
        ("=?utf-8?q?unterminated", "=?utf-8?q?unterminated"),
        ("=?utf-8?b?!!!!?= ok", " ok"),
        ("=?utf-8?q?caf=C3=A9?=x", "caféx"),  # word glued to text
    ],
)
def test_rfc2047_subjects(header: str, expected: str) -> None:
    parsed = parse_message(mail(f"Subject: {header}", "Message-ID: <s@x>"))
    assert parsed.subject == expected.strip()
    assert parsed.parse_errors == ()


@pytest.mark.parametrize(
    ("raw_subject", "expected"),
    [
        ("Grüße – “OK”".encode(), "Grüße – “OK”"),
        ("Grüße".encode("latin-1"), "Grüße"),
        ("“Quoted”".encode("cp1252"), "“Quoted”"),
    ],
)
def test_8bit_headers(raw_subject: bytes, expected: str) -> None:
    raw = mail(b"Subject: " + raw_subject, b"From: " + raw_subject + b" <a@example.com>")
    parsed = parse_message(raw)
    assert parsed.subject == expected
    assert parsed.from_ == Address("a@example.com", expected)


# ---------------------------------------------------------------------------------------------
# Message ids, hashes, references


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("<abc@example.com>", "<abc@example.com>"),
        ("   <abc@example.com>  ", "<abc@example.com>"),
        ("abc@example.com", "<abc@example.com>"),
        ("<abc@example.com> (added by relay)", "<abc@example.com>"),
        ("(comment) <abc@example.com>", "<abc@example.com>"),
        ("< abc@example.com >", "<abc@example.com>"),
        ("<abc@example.com", "<abc@example.com>"),
        ("<12345.JavaMail.server>", "<12345.JavaMail.server>"),
        ("<>", None),
        ("", None),
        ("two words", None),
    ],
)
def test_message_id_normalization(header: str, expected: str | None) -> None:
    parsed = parse_message(mail(f"Message-ID: {header}", "Subject: x", body=b"body"))
    if expected is None:
        assert parsed.message_id_synthetic
        assert parsed.message_id == synthetic_message_id(parsed.content_hash)
    else:
        assert not parsed.message_id_synthetic
        assert parsed.message_id == expected
    assert parsed.parse_errors == ()


def test_missing_message_id_gets_stable_synthetic_id() -> None:
    headers = (
        "From: a@example.com",
        "To: b@example.com",
        "Subject: Hi",
        "Date: Tue, 5 Mar 2024 10:00:00 +0000",
    )
    inbox_copy = mail(
        "Return-Path: <a@example.com>",
        "Received: from mx1 by imap1; Tue, 5 Mar 2024 10:00:01 +0000",
        "Delivered-To: b@example.com",
        "X-Spam-Status: No",
        *headers,
        body=b"Same body\n",
    )
    other_account_copy = mail(
        "Received: from mx7 by imap9; Tue, 5 Mar 2024 10:00:09 +0000",
        "X-Folder: Sent",
        *headers,
        body=b"Same body\n\n",
        crlf=False,
    )
    different_body = mail(*headers, body=b"Other body\n")
    a, b, c = (parse_message(r) for r in (inbox_copy, other_account_copy, different_body))
    assert a.message_id_synthetic and b.message_id_synthetic and c.message_id_synthetic
    assert a.message_id == b.message_id == f"<{a.content_hash}@crm-inbox.invalid>"
    assert a.content_hash == b.content_hash
    assert c.content_hash != a.content_hash
    assert c.message_id != a.message_id
    assert a.parse_errors == ()


def test_content_hash_depends_on_identifying_headers() -> None:
    one = parse_message(mail(*BASIC_HEADERS, body=b"x"))
    other_subject = parse_message(mail(*BASIC_HEADERS[:2], "Subject: Bye", *BASIC_HEADERS[3:], body=b"x"))
    refolded = parse_message(mail(*BASIC_HEADERS[:2], "Subject:\r\n Hello", *BASIC_HEADERS[3:], body=b"x"))
    assert one.content_hash != other_subject.content_hash
    assert one.content_hash == refolded.content_hash


def test_synthetic_message_id_format() -> None:
    digest = hashlib.sha256(b"x").hexdigest()
    assert synthetic_message_id(digest) == f"<{digest}@crm-inbox.invalid>"


def test_references_are_deduplicated_and_capped() -> None:
    ids = [f"<r{i}@example.com>" for i in range(150)]
    header = "References: " + "\r\n ".join([*ids, ids[3], ids[-1]])
    parsed = parse_message(mail(header, "In-Reply-To: junk <r149@example.com> <r148@example.com>"))
    assert len(parsed.references) == 100
    assert parsed.references[0] == "<r0@example.com>"
    assert parsed.references[1] == "<r51@example.com>"
    assert parsed.references[-1] == "<r149@example.com>"
    assert len(set(parsed.references)) == 100
    assert parsed.in_reply_to == "<r149@example.com>"


def test_references_without_angle_brackets() -> None:
    parsed = parse_message(mail("References: a@example.com b@example.com", "In-Reply-To: b@example.com"))
    assert parsed.references == ("<a@example.com>", "<b@example.com>")
    assert parsed.in_reply_to == "<b@example.com>"


# ---------------------------------------------------------------------------------------------
# Dates

INTERNAL = datetime(2024, 3, 1, 12, 0, tzinfo=timezone(timedelta(hours=2)))


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Tue, 5 Mar 2024 10:00:00 +0100", datetime(2024, 3, 5, 9, 0, tzinfo=UTC)),
        ("Tue, 05 Mar 2024 10:00:00 +0100 (CET)", datetime(2024, 3, 5, 9, 0, tzinfo=UTC)),
        ("Tue, 5 Mar 2024 10:00:00 -0000", datetime(2024, 3, 5, 10, 0, tzinfo=UTC)),
        ("5 Mar 2024 10:00 EST", datetime(2024, 3, 5, 15, 0, tzinfo=UTC)),
        ("2024-03-05 10:00:00", datetime(2024, 3, 5, 10, 0, tzinfo=UTC)),  # naive: read as UTC
        ("2024-03-05T10:00:00+02:00", datetime(2024, 3, 5, 8, 0, tzinfo=UTC)),
        ("Tuesday, March 5, 2024 10:00 AM CEST", datetime(2024, 3, 5, 8, 0, tzinfo=UTC)),
        ("Tue, 5 Mar 2024 10:00:00 XYZ", datetime(2024, 3, 5, 10, 0, tzinfo=UTC)),
        # unparseable or implausible: INTERNALDATE instead, and no parse error
        ("garbage", datetime(2024, 3, 1, 10, 0, tzinfo=UTC)),
        ("12", datetime(2024, 3, 1, 10, 0, tzinfo=UTC)),
        ("Mon, 45 Foo 2024 99:99:99 +0100", datetime(2024, 3, 1, 10, 0, tzinfo=UTC)),
        ("Thu, 01 Jan 1970 00:00:00 +0000", datetime(2024, 3, 1, 10, 0, tzinfo=UTC)),
    ],
)
def test_date_header(header: str, expected: datetime) -> None:
    parsed = parse_message(mail(f"Date: {header}", "Message-ID: <d@x>"), internal_date=INTERNAL)
    assert parsed.date == expected
    assert parsed.date is not None and parsed.date.tzinfo is UTC
    assert parsed.parse_errors == ()


def test_missing_date_uses_internal_date_in_utc() -> None:
    parsed = parse_message(mail("Message-ID: <d@x>", body=b"x"), internal_date=INTERNAL)
    assert parsed.date == datetime(2024, 3, 1, 10, 0, tzinfo=UTC)
    assert parsed.parse_errors == ()


def test_missing_date_without_internal_date_is_none() -> None:
    assert parse_message(mail("Message-ID: <d@x>", body=b"x")).date is None
    naive_internal = datetime(2024, 3, 1, 12, 0)
    assert parse_message(mail("Date: bad"), internal_date=naive_internal).date == naive_internal.replace(
        tzinfo=UTC
    )


# ---------------------------------------------------------------------------------------------
# Addresses and recipients


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("undisclosed-recipients:;", ()),
        (
            "Team: a@example.com, B <b@example.com>;, c@example.com",
            (Address("a@example.com"), Address("b@example.com", "B"), Address("c@example.com")),
        ),
        ('"Doe, John" <John.Doe@Example.com>', (Address("john.doe@example.com", "Doe, John"),)),
        ("john@example.com (John Doe)", (Address("john@example.com", "John Doe"),)),
        ("=?utf-8?q?J=C3=B6rg?= <joerg@example.com>", (Address("joerg@example.com", "Jörg"),)),
        ('"=?utf-8?q?J=C3=B6rg?=" <joerg@example.com>', (Address("joerg@example.com", "Jörg"),)),
        ("Jörg <Jörg@Bücher.Example>", (Address("jörg@bücher.example", "Jörg"),)),
        ("user@xn--bcher-kva.EXAMPLE", (Address("user@xn--bcher-kva.example"),)),
        ("not an address, b@example.com, <>, @, x@", (Address("b@example.com"),)),
        ("a@example.com; b@example.com", (Address("a@example.com"), Address("b@example.com"))),
        ("John Doe john@example.com", (Address("john@example.com", "John Doe"),)),
        ("<mailto:a@example.com>", (Address("a@example.com"),)),
        ('"john smith"@example.com', (Address('"john smith"@example.com'),)),
        ("<@relay.example:a@example.com>", (Address("a@example.com"),)),
        ("Alice <a@example.com", (Address("a@example.com", "Alice"),)),
    ],
)
def test_address_parsing(header: str, expected: tuple[Address, ...]) -> None:
    parsed = parse_message(mail(f"To: {header}", "Message-ID: <a@x>"))
    assert parsed.to == expected
    assert parsed.parse_errors == ()


def test_unusable_address_header_is_flagged() -> None:
    parsed = parse_message(mail("From: nobody at all", "To: ,,,", "Message-ID: <a@x>"))
    assert parsed.from_ is None
    assert parsed.to == ()
    assert parsed.parse_errors == ("no usable address in From header", "no usable address in To header")


def test_recipients_counted_once_across_to_cc_bcc() -> None:
    to = ", ".join(f"user{i}@example.com" for i in range(60))
    cc = ", ".join(f"User{i} <USER{i}@Example.com>" for i in range(50, 101))  # 50..59 repeat To
    bcc = "user0@example.com, user100@example.com"
    parsed = parse_message(mail(f"To: {to}", f"Cc: {cc}", f"Bcc: {bcc}", "Message-ID: <r@x>"))
    assert len(parsed.to) == 60 and len(parsed.cc) == 51 and len(parsed.bcc) == 2
    assert parsed.recipient_count == 101


def test_count_recipients() -> None:
    a, b = Address("a@example.com"), Address("b@example.com", "B")
    assert count_recipients((), (), ()) == 0
    assert count_recipients((a, b), (Address("A@Example.com"),), (b,)) == 2


# ---------------------------------------------------------------------------------------------
# Damaged input and caps


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", "empty message"),
        (b"\r\n\r\n", "empty message"),
        (b"\x00\xff\xfe\x89PNG garbage\nmore", "no header block"),
        (b"just some text without headers\n\nsecond paragraph", "no header block"),
        (bytes(range(256)) * 40, "no header block"),
        (b"\r\nbody after an empty header block", "no header block"),
    ],
)
def test_input_without_header_block(raw: bytes, error: str) -> None:
    parsed = parse_message(raw, internal_date=INTERNAL)
    assert parsed.parse_errors == (error,)
    assert parsed.message_id_synthetic
    assert parsed.size == len(raw)
    assert parsed.date == INTERNAL.astimezone(UTC)
    assert "\x00" not in parsed.text_body


def test_random_text_body_is_kept_best_effort() -> None:
    parsed = parse_message(b"just some text without headers\n\nsecond paragraph")
    assert parsed.text_body == "just some text without headers\n\nsecond paragraph"


def test_malformed_header_line_ends_header_block() -> None:
    parsed = parse_message(b"Subject: ok\r\nthis is not a header\r\nbody line\r\n")
    assert parsed.subject == "ok"
    assert parsed.text_body == "this is not a header\nbody line\n"
    assert parsed.parse_errors == ("malformed header line; the rest was read as body",)


@pytest.mark.parametrize(
    "raw", [None, 42, "Subject: str input\r\n\r\nbody", bytearray(b"Subject: ba\r\n\r\nx")]
)
def test_non_bytes_input_never_raises(raw: object) -> None:
    parsed = parse_message(cast(bytes, raw))  # deliberately not bytes: the parser must still not raise
    if isinstance(raw, str | bytearray):
        assert parsed.parse_errors == ()
        assert parsed.subject in ("str input", "ba")
    else:
        assert parsed.parse_errors == ("message could not be parsed (TypeError)",)
        assert parsed.message_id_synthetic


def nested_multiparts(depth: int, *, closed: bool) -> bytes:
    opening = b"".join(
        b"Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n" % (i, i) for i in range(depth)
    )
    closing = b"".join(b"\r\n--b%d--" % i for i in reversed(range(depth))) if closed else b""
    return b"Message-ID: <deep@x>\r\n" + opening + b"Content-Type: text/plain\r\n\r\ndeep text" + closing


@pytest.mark.parametrize("closed", [True, False])
def test_deep_nesting_is_capped(closed: bool) -> None:
    parsed = parse_message(nested_multiparts(100_000, closed=closed))
    assert "MIME nesting deeper than 20 levels; inner parts ignored" in parsed.parse_errors
    assert parsed.text_body == ""
    assert parsed.message_id == "<deep@x>"


def test_nesting_within_the_limit_is_walked() -> None:
    raw = nested_multiparts(5, closed=True)
    assert parse_message(raw).text_body == "deep text"
    capped = parse_message(raw, limits=ParseLimits(max_mime_depth=4))
    assert capped.text_body == ""
    assert capped.parse_errors == ("MIME nesting deeper than 4 levels; inner parts ignored",)


def many_parts(count: int) -> bytes:
    parts = b"".join(
        b"--p\nContent-Type: application/octet-stream\nContent-Disposition: attachment; "
        b'filename="f%d.bin"\n\nxx\n' % i
        for i in range(count)
    )
    return mail(
        *BASIC_HEADERS, "Content-Type: multipart/mixed; boundary=p", body=b"intro\n" + parts + b"--p--\n"
    )


def test_part_count_is_capped() -> None:
    parsed = parse_message(many_parts(50_000))
    assert parsed.parse_errors == ("more than 500 MIME parts; the rest was ignored",)
    assert len(parsed.attachments) == DEFAULT_LIMITS.max_parts - 1  # the message itself is a part
    assert parsed.attachments[0] == Attachment(
        filename="f0.bin", content_type="application/octet-stream", size=2
    )
    assert parsed.attachments[-1].filename == "f498.bin"


def test_part_count_below_cap_is_complete() -> None:
    parsed = parse_message(many_parts(30))
    assert parsed.parse_errors == ()
    assert [a.filename for a in parsed.attachments] == [f"f{i}.bin" for i in range(30)]


def test_header_block_cap() -> None:
    raw = mail(
        "Subject: early",
        *(f"X-Filler-{i}: {'y' * 50}" for i in range(100)),
        "To: late@example.com",
        body=b"b",
    )
    parsed = parse_message(raw, limits=ParseLimits(max_header_bytes=1024))
    assert parsed.subject == "early"
    assert parsed.to == ()
    assert parsed.text_body == "b"
    assert parsed.parse_errors == ("header block larger than 1024 bytes; truncated",)


def test_body_character_cap() -> None:
    body = b"--b\nContent-Type: text/plain\n\n" + "é".encode() * 50 + b"\n--b\nContent-Type: text/html\n\n"
    body += b"<p>" + b"x" * 50 + b"</p>\n--b--\n"
    raw = mail(*BASIC_HEADERS, "Content-Type: multipart/alternative; boundary=b", body=body)
    parsed = parse_message(raw, limits=ParseLimits(max_body_chars=10))
    assert parsed.text_body == "é" * 10
    assert parsed.html_body == "<p>xxxxxxx"
    assert parsed.parse_errors == (
        "text/plain body longer than 10 characters; truncated",
        "text/html body longer than 10 characters; truncated",
    )


# ---------------------------------------------------------------------------------------------
# Subjects


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        ("Re: RE: Fwd: [sales] Hello  World", "hello world"),
        ("AW: WG: Angebot", "angebot"),
        ("TR: Réf: devis", "devis"),
        ("TR : RE : devis", "devis"),
        ("Re[2]: Status", "status"),
        ("Re(3): Status", "status"),
        ("FW: Fw: fwd:Report", "report"),
        ("SV: Svar: VS: Tilbud", "tilbud"),
        ("RV: Antw: Offerte", "offerte"),
        ("回复: 转发: 报价单", "报价单"),
        ("Re：全角コロン", "全角コロン"),
        ("[EXTERNAL] Re: [sales] Re: Order #5", "order #5"),
        ("Re: Re\u0301f: x", "x"),  # decomposed é is normalized first
        ("Réunion demain", "réunion demain"),  # "Ré" is not a prefix without a colon
        ("Fwd: [Fwd: Old style]", "[fwd: old style]"),
        ("Regarding: budget", "regarding: budget"),
        ("  Hello\tWORLD  ", "hello world"),
        ("Straße", "strasse"),
        ("Re: ", ""),
        ("", ""),
    ],
)
def test_normalize_subject(subject: str, expected: str) -> None:
    assert normalize_subject(subject) == expected


def test_parsed_message_normalizes_decoded_subject() -> None:
    parsed = parse_message(mail("Subject: =?utf-8?q?AW=3A_WG=3A_Angebot_f=C3=BCr_Sie?="))
    assert parsed.subject == "AW: WG: Angebot für Sie"
    assert parsed.normalized_subject == "angebot für sie"


def test_control_characters_never_make_an_address() -> None:
    """PostgreSQL refuses NUL in text: such an address must not reach the database."""
    raw = b'From: a\x00b@x.test\r\nTo: ok@y.test, "q\x01"@z.test\r\nSubject: s\r\n\r\nbody\r\n'
    parsed = parse_message(raw)
    emails = [a.email for a in (*((parsed.from_,) if parsed.from_ else ()), *parsed.to)]
    assert all("\x00" not in e and "\x01" not in e for e in emails)
    assert "ok@y.test" in emails
