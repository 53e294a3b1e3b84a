"""Deterministic, realistic sample mail for tests, benchmarks and the demo.

Why generated instead of fixture files: benchmarks need 20,000 messages, tests need exact
control over single headers, and everything must be reproducible from a seed (a failing
benchmark or test can be re-run on identical input).  Everything is built with the
stdlib ``email`` package and serialised with ``policy.SMTP`` (CRLF line endings, as an
IMAP server stores them).  Company addresses only use the reserved ``.test`` /
``.example`` TLDs; free-mail domains appear only as strings and are never contacted.

Global randomness is avoided on purpose: MIME boundaries and Message-IDs are derived
from the seed, because ``email`` would otherwise pick random boundaries and the same seed
would not give the same bytes.
"""

from __future__ import annotations

import base64
import datetime as dt
import email.utils
import hashlib
import random
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from email import policy
from email.headerregistry import HeaderRegistry
from email.message import EmailMessage
from typing import Literal, TypedDict

__all__ = [
    "Attachment",
    "SampleMessage",
    "build_message",
    "encoded_word",
    "generate_mailbox",
    "malformed_cases",
    "malformed_messages",
]

Folder = Literal["INBOX", "Sent"]


class _CachedHeaderRegistry(HeaderRegistry):
    """email's registry builds a new class per header lookup; caching halves build time."""

    def __init__(self) -> None:
        super().__init__()
        self._classes: dict[str, type] = {}

    def __getitem__(self, name: str) -> type:
        key = name.lower()
        cls = self._classes.get(key)
        if cls is None:
            cls = self._classes[key] = super().__getitem__(name)
        return cls


_POLICY = policy.SMTP.clone(header_factory=_CachedHeaderRegistry())
_EPOCH = dt.datetime(2024, 1, 8, 8, 30, tzinfo=dt.UTC)


@dataclass(frozen=True)
class SampleMessage:
    """One generated message and the folder it belongs in (replies we send go to Sent)."""

    folder: Folder
    raw: bytes
    message_id: str


@dataclass(frozen=True)
class Attachment:
    """A file to attach; ``inline_cid`` makes it an inline (multipart/related) part."""

    filename: str
    content_type: str
    data: bytes
    inline_cid: str | None = None


@dataclass(frozen=True)
class _Company:
    name: str
    domain: str
    contacts: tuple[tuple[str, str], ...]  # (display name, local part)


COMPANIES: tuple[_Company, ...] = (
    _Company("Globex Corporation", "globex.test", (("Hank Scorpio", "hank"), ("Mindy Simmons", "mindy.s"))),
    _Company("Initech", "initech.test", (("Bill Lumbergh", "blumbergh"), ("Peter Gibbons", "peter"))),
    _Company("Umbrella Corp", "umbrella.test", (("Albert Wesker", "a.wesker"), ("Jill Valentine", "jill"))),
    _Company("Müller & Söhne GmbH", "mueller-soehne.example", (("Jürgen Müller", "j.mueller"),)),
    _Company("Hooli", "hooli.example", (("Gavin Belson", "gavin"), ("Zoë Ångström", "zoe"))),
    _Company("Société Générale de Test", "sgt.test", (("François Lefèvre", "f.lefevre"),)),
    _Company("Yamada Trading", "yamada.example", (("山田 太郎", "taro.yamada"),)),
)
FREEMAIL: tuple[tuple[str, str], ...] = (
    ("José García", "jose.garcia84@gmail.com"),
    ("Priya Raman", "priya.r@yahoo.com"),
    ("Tom O'Brien", "tobrien@outlook.com"),
    ("", "anna.k@gmx.de"),
    ("Łukasz Nowak", "lukasz.nowak@wp.pl"),
)
COLLEAGUES: tuple[tuple[str, str], ...] = (
    ("Dana Scully", "dana@acme.test"),
    ("Fox Mulder", "fox@acme.test"),
    ("Acme Support", "support@acme.test"),
)
_TOPICS: tuple[str, ...] = (
    "Quote for 250 units",
    "Renewal of the annual licence",
    "Invoice 2024-{n:04d}",
    "Meeting next Tuesday?",
    "Onboarding checklist",
    "Pricing question about the Pro plan",
    "Contract draft v{n}",
    "Shipping delay on order #{n}",
    "Demo follow-up",
    "Angebot für Wartungsvertrag",
    "Réunion de lancement",
    "Résumé of our call",
)
_SENTENCES: tuple[str, ...] = (
    "Thanks for getting back to us so quickly.",
    "Could you send over the updated pricing sheet?",
    "We reviewed the proposal internally and have a few questions.",
    "Our procurement team needs the W-9 and the signed NDA before Friday.",
    "Let me know if Tuesday at 10:00 works for a quick call.",
    "Attached you will find the figures we discussed.",
    "The delivery arrived damaged, see the photos attached.",
    "We would like to increase the order to 300 units.",
    "Please loop in whoever handles invoicing on your side.",
    "Happy to jump on a call if that is easier.",
    "Les chiffres du trimestre sont en pièce jointe.",
    "Können Sie uns bitte ein überarbeitetes Angebot schicken?",
)
_CP1252_SENTENCES: tuple[str, ...] = (
    "The price is 1.200 € per seat – as agreed “last week”.",
    "Our CFO’s sign-off is expected… soon™.",
)
_LATIN1_SENTENCES: tuple[str, ...] = (
    "Grüße aus München, die Bestätigung folgt.",
    "Ça coûte 15 % de plus, désolé.",
)


# -- public builders --------------------------------------------------------------


def encoded_word(text: str, charset: str, encoding: Literal["Q", "B"] = "Q") -> str:
    """RFC 2047 encoded words in a specific charset (``email`` would always pick UTF-8).

    Long text is split into several words (each <= 75 chars) joined by folding
    whitespace, as real mailers do.
    """
    words: list[str] = []
    chunk = ""
    for char in text:
        candidate = chunk + char
        if len(_encode_word(candidate, charset, encoding)) > 75:
            words.append(_encode_word(chunk, charset, encoding))
            candidate = char
        chunk = candidate
    if chunk or not words:
        words.append(_encode_word(chunk, charset, encoding))
    return "\r\n ".join(words)


TransferEncoding = Literal["7bit", "8bit", "quoted-printable", "base64"]
_SAMPLE_ENCODINGS: tuple[TransferEncoding | None, ...] = (None, None, "quoted-printable", "base64")


class MessageFields(TypedDict, total=False):
    """The keyword arguments of :func:`build_message`, so helpers that fill in defaults can
    take ``**fields: Unpack[MessageFields]`` and stay type-checked."""

    subject: str
    from_: str
    to: str | Sequence[str]
    cc: Sequence[str]
    bcc: Sequence[str]
    body: str
    html: str | None
    message_id: str | None
    in_reply_to: str | None
    references: Sequence[str]
    date: dt.datetime | None
    extra_headers: Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]] | None
    attachments: Sequence[Attachment | tuple[str, str, bytes]]
    charset: str
    transfer_encoding: TransferEncoding | None


def build_message(
    *,
    subject: str,
    from_: str,
    to: str | Sequence[str],
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    body: str = "Hello,\n\nthis is a test message.\n\nRegards\n",
    html: str | None = None,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    references: Sequence[str] = (),
    date: dt.datetime | None = None,
    extra_headers: Mapping[str, str | bytes] | Iterable[tuple[str, str | bytes]] | None = None,
    attachments: Sequence[Attachment | tuple[str, str, bytes]] = (),
    charset: str = "utf-8",
    transfer_encoding: TransferEncoding | None = None,
) -> bytes:
    """Build one RFC 5322 message as CRLF bytes, with exactly the headers a test asks for.

    ``to``/``cc``/``bcc`` take "Name <addr>" or bare addresses (any number: e.g. 101).
    ``extra_headers`` values that are ``bytes`` are inserted verbatim (raw encoded
    words, 8-bit garbage); ``str`` values go through ``email`` and get encoded.
    Attachments are :class:`Attachment` or ``(filename, "type/subtype", data)``.
    ``charset`` applies to the text parts and to a non-ASCII subject (RFC 2047 encoded
    words in that charset); ``transfer_encoding`` defaults to what ``email`` picks
    (8bit for non-ASCII text under the SMTP policy).
    MIME boundaries derive from the Message-ID, so identical input gives identical bytes.
    """
    if message_id is None:
        domain = email.utils.parseaddr(from_)[1].rpartition("@")[2] or "acme.test"
        message_id = email.utils.make_msgid(domain=domain)
    when = date or dt.datetime.now(dt.UTC)
    # Top-level headers are written by hand: exact control over the bytes a test sees,
    # and several times faster than email's header registry for 20,000 messages.
    head: list[bytes] = [_address_header("From", [from_])]
    head.append(_address_header("To", [to] if isinstance(to, str) else to))
    if cc:
        head.append(_address_header("Cc", cc))
    if bcc:
        head.append(_address_header("Bcc", bcc))
    head.append(_text_header("Subject", subject, charset))
    head.append(b"Date: " + email.utils.format_datetime(when).encode("ascii"))
    head.append(b"Message-ID: " + message_id.encode("ascii"))
    if in_reply_to:
        head.append(b"In-Reply-To: " + in_reply_to.encode("ascii"))
    if references:
        head.append(_fold("References", list(references), " "))
    items = extra_headers.items() if isinstance(extra_headers, Mapping) else (extra_headers or ())
    for name, value in items:
        if isinstance(value, bytes):
            head.append(name.encode("ascii") + b": " + value)
        else:
            head.append(_text_header(name, value, "utf-8"))

    msg = EmailMessage(policy=_POLICY)
    msg.set_content(body, charset=charset, cte=transfer_encoding)
    if html is not None:
        msg.add_alternative(html, subtype="html", charset=charset, cte=transfer_encoding)
    files = [item if isinstance(item, Attachment) else Attachment(*item) for item in attachments]
    # Inline parts first: add_related needs the HTML part before the message becomes mixed.
    for att in sorted(files, key=lambda a: a.inline_cid is None):
        maintype, _, subtype = att.content_type.partition("/")
        html_part = msg.get_body(preferencelist=("html",)) if att.inline_cid else None
        if html_part is not None:
            html_part.add_related(
                att.data, maintype, subtype, cid=f"<{att.inline_cid}>", filename=att.filename
            )
        else:
            msg.add_attachment(att.data, maintype=maintype, subtype=subtype, filename=att.filename)
    _fix_boundaries(msg, message_id)
    # The EmailMessage carries only MIME-Version and the Content-* headers.
    return b"\r\n".join(head) + b"\r\n" + msg.as_bytes(policy=_POLICY)


def generate_mailbox(
    count: int,
    *,
    seed: int = 1,
    own_address: str = "sales@acme.test",
    large_every: int = 0,
    large_size: int = 2_000_000,
) -> Iterator[SampleMessage]:
    """Yield ``count`` messages of a shared sales inbox in chronological order.

    Conversations with customers (companies on ``.test``/``.example`` plus free-mail
    senders) are interleaved: inbound mail lands in INBOX, our replies (from
    ``own_address``) in Sent, threaded with In-Reply-To/References.  The mix covers
    plain text, HTML alternatives, inline images, pdf/png/csv attachments, 8-bit
    iso-8859-1 and windows-1252 bodies and RFC 2047 subjects in several charsets.
    Every ``large_every``-th message (when > 0) carries a ~``large_size`` attachment.
    Same arguments -> byte-identical output.
    """
    rng = random.Random(seed)
    own_name = "Acme Sales"
    threads: list[_Thread] = []
    now = _EPOCH
    for index in range(count):
        now += dt.timedelta(minutes=rng.randint(1, 180), seconds=rng.randint(0, 59))
        open_threads = [t for t in threads if not t.closed]
        if not open_threads or rng.random() < 0.35:
            thread = _new_thread(rng, index, own_address)
            threads.append(thread)
        else:
            thread = rng.choice(open_threads[-12:])
        outbound = thread.next_outbound(rng)
        sender_domain = _domain_of(own_address if outbound else thread.customer_addr)
        message_id = f"<{seed}.{index}.{rng.getrandbits(48):012x}@{sender_domain}>"
        subject = thread.subject if not thread.message_ids else f"Re: {thread.subject}"
        customer = _format_addr(thread.customer_name, thread.customer_addr)
        own = _format_addr(own_name, own_address)
        from_, to = (own, [customer]) if outbound else (customer, [own])
        cc = [_format_addr(*c) for c in thread.cc]
        bcc = [_format_addr(*COLLEAGUES[0])] if outbound and rng.random() < 0.1 else []
        charset = "utf-8"
        kind = rng.random()
        if not outbound and kind < 0.08:
            charset = "iso-8859-1"
        elif not outbound and kind < 0.14:
            charset = "windows-1252"
        body = _body(rng, thread, charset, outbound, own_name)
        if not _encodable(body + subject, charset):
            charset = "utf-8"  # e.g. a Japanese signature cannot be latin-1
        html = _html(body, charset) if rng.random() < 0.45 else None
        encoding = rng.choice(_SAMPLE_ENCODINGS) if charset == "utf-8" else None
        attachments = _attachments(rng, html is not None, index)
        if large_every > 0 and (index + 1) % large_every == 0:
            attachments.append(Attachment(f"scan-{index}.pdf", "application/pdf", _pdf(rng, large_size)))
        extra: list[tuple[str, str | bytes]] = [("X-Mailer", rng.choice(_MAILERS))]
        if not outbound and rng.random() < 0.05:
            extra.append(("Auto-Submitted", "auto-replied"))
        raw = build_message(
            subject=subject,
            from_=from_,
            to=to,
            cc=cc,
            bcc=bcc,
            body=body,
            html=html,
            message_id=message_id,
            in_reply_to=thread.message_ids[-1] if thread.message_ids else None,
            references=thread.message_ids[-10:],
            date=now,
            extra_headers=extra,
            attachments=attachments,
            charset=charset,
            transfer_encoding=encoding,
        )
        thread.message_ids.append(message_id)
        thread.last_outbound = outbound
        if len(thread.message_ids) >= thread.length:
            thread.closed = True
        yield SampleMessage("Sent" if outbound else "INBOX", raw, message_id)


def malformed_cases() -> dict[str, bytes]:
    """Named nasty inputs a robust parser must survive (use the names as test ids)."""
    nested = b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(200)
    )
    nested = (
        b"From: deep@globex.test\r\nSubject: nested 200\r\nMessage-ID: <deep@globex.test>\r\n"
        b"MIME-Version: 1.0\r\n"
        + nested
        + b"Content-Type: text/plain\r\n\r\nbottom\r\n"
        + b"".join(b"--b%d--\r\n" % i for i in reversed(range(200)))
    )
    head = b"From: Hank <hank@globex.test>\r\nTo: sales@acme.test\r\nDate: Mon, 8 Jan 2024 09:00:00 +0000\r\n"
    return {
        "no_headers": b"This message has no header block at all.\r\nJust text.\r\n",
        "truncated_multipart": head
        + b"Subject: truncated\r\nMessage-ID: <trunc@globex.test>\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="XYZ"\r\n\r\n--XYZ\r\nContent-Type: text/plain\r\n\r\n'
        b"first part\r\n--XYZ\r\nContent-Type: application/pdf\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"JVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSL0Zp",
        "broken_base64": head + b"Subject: bad b64\r\nMessage-ID: <b64@globex.test>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"SGVsbG8gd29y!!!bGQ=garbage==\r\n@@@@\r\n",
        "bogus_charset": head
        + b"Subject: =?x-no-such-charset?q?caf=E9?=\r\nMessage-ID: <charset@globex.test>\r\n"
        b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xe9 \xff\xfe\r\n",
        "8bit_headers": b"From: J\xfcrgen M\xfcller <j.mueller@mueller-soehne.example>\r\n"
        b"To: sales@acme.test\r\nSubject: Gr\xfc\xdfe \x93smart\x94 \xff\xc3\x28\r\n"
        b"Date: Mon, 8 Jan 2024 09:00:00 +0000\r\nMessage-ID: <8bit@mueller-soehne.example>\r\n\r\nbody\r\n",
        "nul_bytes": head
        + b"Subject: nul\x00byte\r\nMessage-ID: <nul@globex.test>\r\n\r\nbody\x00with\x00nuls\r\n",
        "missing_message_id_and_date": b"From: nobody@initech.test\r\nTo: sales@acme.test\r\n"
        b"Subject: no id, no date\r\n\r\nbody\r\n",
        "huge_header_line": head
        + b"Subject: "
        + b"x" * 200_000
        + b"\r\nMessage-ID: <huge@globex.test>\r\nReferences: "
        + b" ".join(b"<ref%d@globex.test>" % i for i in range(5000))
        + b"\r\n\r\nbody\r\n",
        "deeply_nested_multipart": nested,
        "bare_lf_and_cr": b"From: lf@umbrella.test\nSubject: bare LF\nMessage-ID: <lf@umbrella.test>\n"
        b"\nline\rcr\n",
        "invalid_dates_and_addresses": b"From: <<not an address>>\r\nTo: ;;;, @, sales@\r\n"
        b"Date: Someday, 99 Foo 20242 99:99:99 +9999\r\nMessage-ID: not-bracketed\r\n"
        b"Subject: =?utf-8?q?unterminated\r\n\r\nbody\r\n",
    }


def malformed_messages() -> list[bytes]:
    """The values of :func:`malformed_cases`, for callers that just need the inputs."""
    return list(malformed_cases().values())


# -- internals --------------------------------------------------------------------

_MAILERS: tuple[str, ...] = (
    "Microsoft Outlook 16.0",
    "Apple Mail (2.3774)",
    "Mozilla Thunderbird 115.6.0",
    "Gmail",
)


@dataclass
class _Thread:
    subject: str
    customer_name: str
    customer_addr: str
    cc: tuple[tuple[str, str], ...]
    length: int
    starts_outbound: bool
    message_ids: list[str]
    last_outbound: bool | None = None
    closed: bool = False

    def next_outbound(self, rng: random.Random) -> bool:
        """Alternate sides mostly; sometimes one side sends two in a row (follow-ups)."""
        if self.last_outbound is None:
            return self.starts_outbound
        return self.last_outbound if rng.random() < 0.15 else not self.last_outbound


def _new_thread(rng: random.Random, index: int, own_address: str) -> _Thread:
    if rng.random() < 0.2:
        name, addr = rng.choice(FREEMAIL)
    else:
        company = rng.choice(COMPANIES)
        name, local = rng.choice(company.contacts)
        addr = f"{local}@{company.domain}"
    cc: tuple[tuple[str, str], ...] = ()
    if rng.random() < 0.25:
        cc = (rng.choice(COLLEAGUES),)
    subject = rng.choice(_TOPICS).format(n=index + 1)
    return _Thread(
        subject=subject,
        customer_name=name,
        customer_addr=addr,
        cc=cc,
        length=rng.choice((1, 1, 2, 2, 3, 4, 6)),
        starts_outbound=rng.random() < 0.25,
        message_ids=[],
    )


def _format_addr(name: str, addr: str) -> str:
    return email.utils.formataddr((name, addr)) if name else addr


def _domain_of(address: str) -> str:
    return address.rpartition("@")[2] or "acme.test"


def _body(rng: random.Random, thread: _Thread, charset: str, outbound: bool, own_name: str) -> str:
    pool = _SENTENCES
    if charset == "windows-1252":
        pool = _CP1252_SENTENCES + tuple(
            s for s in _SENTENCES if s.encode("cp1252", "ignore").decode("cp1252") == s
        )
    elif charset == "iso-8859-1":
        pool = _LATIN1_SENTENCES + tuple(s for s in _SENTENCES if s.isascii())
    first = thread.customer_name.split(" ")[0] if thread.customer_name else "there"
    greeting = f"Hi {first}," if outbound else "Hello,"
    paragraphs = [
        " ".join(rng.choice(pool) for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 3))
    ]
    signer = own_name if outbound else (thread.customer_name or thread.customer_addr)
    text = f"{greeting}\n\n" + "\n\n".join(paragraphs) + f"\n\nBest regards,\n{signer}\n"
    if thread.message_ids:
        quoted = "\n".join(f"> {p}" for p in rng.choice(pool).split(". "))
        text += (
            f"\nOn an earlier date, {thread.customer_addr if outbound else 'Acme Sales'} wrote:\n{quoted}\n"
        )
    return text


def _encodable(text: str, charset: str) -> bool:
    try:
        text.encode(charset)
    except UnicodeEncodeError:
        return False
    return True


def _html(text: str, charset: str) -> str:
    paragraphs = "".join(
        "<p>" + p.replace("&", "&amp;").replace("<", "&lt;").replace("\n", "<br>") + "</p>\n"
        for p in text.split("\n\n")
    )
    return (
        f'<!DOCTYPE html><html><head><meta charset="{charset}"></head>'
        f'<body style="font-family:Arial">\n{paragraphs}</body></html>\n'
    )


def _attachments(rng: random.Random, has_html: bool, index: int) -> list[Attachment]:
    result: list[Attachment] = []
    roll = rng.random()
    if roll < 0.12:
        result.append(
            Attachment(f"Quote-{index:05d}.pdf", "application/pdf", _pdf(rng, rng.randint(2_000, 150_000)))
        )
    elif roll < 0.18:
        rows = "\n".join(
            f"{i},Widget {i},{rng.randint(1, 500)},{rng.randint(100, 99_999) / 100:.2f}"
            for i in range(rng.randint(5, 400))
        )
        result.append(Attachment("pricing.csv", "text/csv", f"sku,name,qty,price\n{rows}\n".encode()))
    elif roll < 0.22:
        result.append(
            Attachment("Übersicht Angebot.pdf", "application/pdf", _pdf(rng, rng.randint(1_000, 20_000)))
        )
    if has_html and rng.random() < 0.2:
        result.append(Attachment("logo.png", "image/png", _png(rng, 24), inline_cid=f"logo{index}@acme.test"))
    elif rng.random() < 0.05:
        result.append(Attachment("photo.png", "image/png", _png(rng, rng.randint(16, 128))))
    return result


def _pdf(rng: random.Random, size: int) -> bytes:
    """A PDF-looking blob of about ``size`` bytes (header, binary stream, trailer)."""
    head = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Length " + str(size).encode() + b" >>\nstream\n"
    tail = b"\nendstream\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n"
    return head + rng.randbytes(max(0, size - len(head) - len(tail))) + tail


def _png(rng: random.Random, side: int) -> bytes:
    """A valid, decodable RGB PNG of ``side`` x ``side`` pixels of seeded noise."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + rng.randbytes(side * 3) for _ in range(side))
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def _encode_word(text: str, charset: str, encoding: str) -> str:
    data = text.encode(charset)
    if encoding == "B":
        payload = base64.b64encode(data).decode("ascii")
    else:
        safe = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!*+-/"
        payload = "".join("_" if b == 0x20 else chr(b) if b in safe else f"={b:02X}" for b in data)
    return f"=?{charset}?{encoding}?{payload}?="


def _fix_boundaries(msg: EmailMessage, message_id: str) -> None:
    """Give every multipart a boundary derived from the Message-ID (determinism)."""
    digest = hashlib.sha1(message_id.encode()).hexdigest()[:16]
    for depth, part in enumerate(msg.walk()):
        if part.is_multipart():
            part.set_boundary(f"=_crm_{digest}_{depth}")


def _address_header(name: str, addresses: Sequence[str]) -> bytes:
    """``Name: a, b`` folded at 78 columns, non-ASCII display names as UTF-8 encoded words."""
    formatted = []
    for item in addresses:
        display, addr = email.utils.parseaddr(item)
        if not addr:  # not parseable: keep what the caller gave us
            formatted.append(item)
        elif display and not display.isascii():
            formatted.append(f"{encoded_word(display, 'utf-8', 'B')} <{addr}>")
        else:
            formatted.append(email.utils.formataddr((display, addr)))
    return _fold(name, [f"{a}," for a in formatted[:-1]] + formatted[-1:], " ")


def _text_header(name: str, value: str, charset: str) -> bytes:
    """Unstructured header; non-ASCII becomes RFC 2047 words in ``charset`` (UTF-8 fallback)."""
    if value.isascii():
        return _fold(name, value.split(" "), " ")
    if not _encodable(value, charset):
        charset = "utf-8"
    return f"{name}: {encoded_word(value, charset)}".encode("ascii")


def _fold(name: str, tokens: list[str], sep: str) -> bytes:
    """Greedy folding of ``tokens`` into lines of at most 78 characters where possible."""
    lines: list[str] = []
    line = f"{name}:"
    for token in tokens:
        if token and len(line) + len(sep) + len(token) > 78 and line != f"{name}:":
            lines.append(line)
            line = " " + token
        else:
            line = f"{line}{sep if line != f'{name}:' else ' '}{token}"
    lines.append(line)
    return "\r\n".join(lines).encode("utf-8", "surrogateescape")
