"""Turn raw RFC 5322 message bytes into a `ParsedMessage`: pure, bounded, never raising.

The sync engine feeds this whatever an IMAP server hands out: complete messages, a few fetched
header fields of an oversized message, or plain garbage. A single bad message must never stop a
folder sync, so `parse_message` catches everything and returns best-effort fields.

The standard library parses; this package bounds its input and maps its result
    `email.feedparser` (compat32 policy) does the MIME structure, `email.utils.getaddresses` the
    address lists, `email.header.decode_header` RFC 2047, `Message.get_filename` RFC 2231,
    `get_payload(decode=True)` the transfer encodings, `parsedate_to_datetime` the dates.

Why the input is bounded first
    Crafted mail must cost bounded time and memory, and the stdlib is not bounded by itself: the
    feedparser nests one generator per MIME level (RecursionError below ~2,000 levels), checks
    every line against every open boundary and costs roughly a microsecond per line, so 50,000
    parts took ~11 s. `_Bounder` therefore pre-scans the bytes once, mostly with searches that
    run at C speed. It follows the structure exactly as the feedparser will see it (part headers
    are read with the stdlib header parser, delimiter lines with the feedparser's own rules) and
    edits the bytes before they are handed over:
    - a top-level header block over `max_header_bytes` loses its later fields; part headers share
      a second budget of the same size;
    - a multipart or message/* part nested `max_mime_depth` deep loses its body (the part stays);
    - at part `max_parts` + 1, or when a line budget weighted by nesting depth (what the
      feedparser's work grows with) runs out, the rest is cut off and the open multiparts are
      closed with their closing delimiters, so the parser sees a well-formed, shorter message.
    Each kind of edit adds one parse error. The parser's message factory counts parts as well,
    as a backstop. What the stdlib does with header values is bounded too: parameter headers
    get at most `_MAX_PARAMS` parameters (`Message.get_param` is quadratic in them), RFC 2047
    decoding is skipped where `decode_header`'s regex would go quadratic, and `getaddresses`
    (microseconds per address) gets at most `_ADDRESS_CHARS` characters per message.

What goes into `parse_errors` (a non-empty tuple flags the message as malformed in the CRM)
    Only real damage: empty input, no header block, a non-header line inside the header block,
    a multipart without usable boundary / whose boundary never occurs / without closing boundary
    (truncated), undecodable base64, an address header with nothing usable in it, a cap from
    `ParseLimits` (or the line budget) being hit, or an internal parser failure.
    Soft problems are repaired silently and are *not* errors: a missing Date (falls back to
    `internal_date`), an unparseable or implausible Date (before 1971 or after 2100; also falls back
    to `internal_date`), a missing or unusable Message-ID (`message_id_synthetic` shows it), unknown
    or wrong charset labels, malformed RFC 2047 words (left as literal text), bad parameters.

Layout
    `bounds` (caps and the pre-scan before the feedparser), `headers` (addresses, ids, dates,
    subjects, the content hash), `charsets` (decoding bytes and header values), `bodies` (the
    walk over parts: text, HTML, attachments); HTML-only mail gets its text body from
    `core.html_text`, the extractor shared with the display side. `fast` is the optional
    accelerator: `fast-mail-parser` splits the MIME tree of mail whose shape it is proven to
    read as the stdlib does, in place of the feedparser (same result; see its docstring).

`content_hash` is computed over raw header bytes (whitespace-collapsed) rather than decoded text, so
that improving the decoders later never changes the hash of mail already stored.
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_LIMITS",
    "ParseLimits",
    "attachment_payloads",
    "count_recipients",
    "normalize_subject",
    "parse_head",
    "parse_message",
    "synthetic_message_id",
]

import hashlib
from collections.abc import Callable
from datetime import datetime
from email import errors as email_errors
from email.message import Message

from core.html_text import html_to_text
from sync.parse import fast as accelerator
from sync.parse.bodies import _Content, _walk
from sync.parse.bounds import (
    DEFAULT_LIMITS,
    ParseLimits,
    _Bounder,
    _Errors,
    _feed,
    _plain_header_fields,
    _read_headers,
    _safely,
)
from sync.parse.charsets import _header_text, _unstructured
from sync.parse.headers import (
    _KEPT_HEADERS,
    _AddressReader,
    _cap_references,
    _content_hash,
    _message_ids,
    _parse_date,
    _to_utc,
    count_recipients,
    normalize_subject,
    synthetic_message_id,
)
from sync.types import Attachment, ParsedMessage


def _as_bytes(raw: object) -> bytes:
    if isinstance(raw, bytes):
        return raw
    if isinstance(raw, bytearray | memoryview):
        return bytes(raw)
    if isinstance(raw, str):
        return raw.encode("utf-8", "surrogateescape")
    raise TypeError(f"expected bytes, got {type(raw).__name__}")


def _internal_utc(internal_date: datetime | None) -> datetime | None:
    if not isinstance(internal_date, datetime):
        return None
    try:
        return _to_utc(internal_date)
    except (ValueError, OverflowError):
        return None


def parse_message(
    raw: bytes,
    *,
    internal_date: datetime | None = None,
    limits: ParseLimits = DEFAULT_LIMITS,
    fast: bool = True,
) -> ParsedMessage:
    """Parse one message (or just its header fields). Never raises.

    `internal_date` (the IMAP INTERNALDATE) stands in when the Date header is missing or
    unusable. See the module docstring for what counts as a parse error. `fast`: let the
    optional accelerator (`sync.parse.fast`, when installed) split the MIME structure of the
    mail it is proven on; the result is the same either way (setting `fast_parser`).
    """
    try:
        return _parse(_as_bytes(raw), internal_date, limits, fast=fast)
    except Exception as exc:  # the contract is "never raises"; flag the message instead
        return _fallback(raw, internal_date, exc)


def attachment_payloads(
    raw: bytes, *, limits: ParseLimits = DEFAULT_LIMITS
) -> list[tuple[Attachment, bytes]]:
    """The attachments of a message with their content, in the order `parse_message` lists them
    (the index a stored attachment is known by), read by the same bounded walk. Never raises: a
    message that cannot be read has no attachments."""
    try:
        data = _Bounder(_as_bytes(raw), limits).run()
        root, _feed_error = _feed(data, limits)
        errors = _Errors()
        content = _Content(limits=limits, errors=errors, addresses=_AddressReader(errors), payloads=[])
        _walk(content, root)
        return list(zip(content.attachments, content.payloads or [], strict=False))
    except Exception:
        return []


def parse_head(raw: bytes, *, limits: ParseLimits = DEFAULT_LIMITS) -> ParsedMessage:
    """`parse_message` of a header block alone (the fields fetched before any body), never
    raising, with identical results (tests/sync/test_parse.py compares them over every corpus)
    at about half the cost: the block is read once, by the pre-scan, instead of again by the
    feedparser, and there is no body to walk. Anything but a plain header block (a body, an
    edit by the pre-scan) takes the full path.

    The usual header pre-fetch answer (plain `Name: value` lines, a blank line, nothing else) is
    split into fields here, by the stdlib's own rules, instead of by the stdlib's header parser:
    the same fields for a fifth of the cost (tests/sync/test_parse_head.py proves the identity)."""
    try:
        data = _as_bytes(raw)
        fields = _plain_header_fields(data, limits)
        if fields is not None:
            errors = _Errors()
            return _from_fields(
                data,
                fields,
                b"",
                errors,
                None,
                limits,
                late_errors=[],
                contents=lambda addresses: _Content(limits=limits, errors=errors, addresses=addresses),
            )
        return _parse(data, None, limits, head_only=True)
    except Exception as exc:
        return _fallback(raw, None, exc)


def _fallback(raw: object, internal_date: datetime | None, exc: Exception) -> ParsedMessage:
    try:
        data = _as_bytes(raw)
    except Exception:
        data = b""
    content_hash = hashlib.sha256(data).hexdigest()
    return ParsedMessage(
        message_id=synthetic_message_id(content_hash),
        message_id_synthetic=True,
        content_hash=content_hash,
        subject="",
        normalized_subject="",
        date=_internal_utc(internal_date),
        from_=None,
        size=len(data),
        parse_errors=(f"message could not be parsed ({type(exc).__name__})",),
    )


def _accelerated(raw: bytes, bounder: _Bounder, limits: ParseLimits) -> tuple[Message, _Content] | None:
    """The top header block as the stdlib reads it, with the bodies and attachments as the
    accelerator read them (`sync.parse.fast`); None when the stdlib must read the message: the
    accelerator is not installed, the bounding scan was needed, or the header block is damaged."""
    if not accelerator.AVAILABLE or not bounder.quick:
        return None
    top, rest = _read_headers(raw[: bounder.body_start])
    if rest or top.defects:
        return None
    content = accelerator.content_for(limits)
    return (top, content) if accelerator.walk(raw, bounder.body_start, top, content) else None


def _parse(
    raw: bytes,
    internal_date: datetime | None,
    limits: ParseLimits,
    *,
    head_only: bool = False,
    fast: bool = False,
) -> ParsedMessage:
    bounder = _Bounder(raw, limits)
    data = bounder.run(quick=not head_only)  # parse_head reuses the scan's reading of the block
    head = bounder.top_headers
    feed_error: str | None = None
    walked = _accelerated(raw, bounder, limits) if fast and not head_only else None
    if walked is not None:
        root, walked_content = walked
    elif (
        head_only
        and head is not None
        and data is raw
        and not bounder.errors
        and not raw[bounder.body_start :]  # (a blank line more is a text body of "\n")
        and _safely(head.get_content_type, "") == "text/plain"  # else a part to walk (an attachment)
    ):
        root = head  # nothing after the header block: what the feedparser would read again
    else:
        head_only = False
        root, feed_error = _feed(data, limits)
    fields = [(str(name).strip().lower(), value) for name, value in root.raw_items()]
    errors = _Errors()
    if not raw.strip():
        errors.add("empty message")
    elif not fields:
        errors.add("no header block")
    elif any(isinstance(d, email_errors.MissingHeaderBodySeparatorDefect) for d in root.defects):
        errors.add("malformed header line; the rest was read as body")
    elif any(isinstance(d, email_errors.FirstHeaderLineIsContinuationDefect) for d in root.defects):
        errors.add("malformed header line: the header block starts with a continuation line")
    if bounder.header_error:
        errors.add(bounder.header_error)

    def contents(addresses: _AddressReader) -> _Content:
        content = walked_content if walked else _Content(limits=limits, errors=errors, addresses=addresses)
        try:
            if not head_only and walked is None:  # a header block alone has no parts to walk
                _walk(content, root)
        except Exception as exc:
            errors.add(f"MIME structure could not be parsed ({type(exc).__name__})")
        return content

    return _from_fields(
        raw,
        fields,
        raw[bounder.body_start :],
        errors,
        internal_date,
        limits,
        late_errors=[*bounder.errors, feed_error],
        contents=contents,
    )


def _from_fields(
    raw: bytes,
    fields: list[tuple[str, str]],
    body: bytes,
    errors: _Errors,
    internal_date: datetime | None,
    limits: ParseLimits,
    *,
    late_errors: list[str | None],
    contents: Callable[[_AddressReader], _Content],
) -> ParsedMessage:
    """The message's values from its header fields (lower-cased names, raw values) and what
    `contents` walks, shared by every way of reading the header block. `errors` already holds
    what reading the block found; `late_errors` are reported after the address headers'."""

    by_name: dict[str, list[str]] = {}
    for key, value in fields:
        by_name.setdefault(key, []).append(value)

    def all_of(name: str) -> list[str]:
        return by_name.get(name, [])

    def first(name: str) -> str | None:
        values = all_of(name)
        return values[0] if values else None

    content_hash = _content_hash(fields, body)
    raw_subject = first("subject")
    subject = _unstructured(raw_subject) if raw_subject is not None else ""
    raw_id = first("message-id")
    ids = _message_ids(_header_text(raw_id)) if raw_id is not None else []
    message_id = ids[0] if ids else None
    raw_reply = first("in-reply-to")
    reply_ids = _message_ids(_header_text(raw_reply)) if raw_reply is not None else []
    references = _cap_references([i for v in all_of("references") for i in _message_ids(_header_text(v))])

    date: datetime | None = None
    raw_date = first("date")
    if raw_date is not None:
        try:
            date = _parse_date(_header_text(raw_date))
        except Exception:
            date = None
    if date is None:
        date = _internal_utc(internal_date)

    addresses = _AddressReader(errors)
    senders = addresses.read(all_of("from"), "From")
    to = addresses.read(all_of("to"), "To")
    cc = addresses.read(all_of("cc"), "Cc")
    bcc = addresses.read(all_of("bcc"), "Bcc")
    reply_to = addresses.read(all_of("reply-to"), "Reply-To")
    headers = tuple((name, _unstructured(value)) for name, value in fields if name in _KEPT_HEADERS)

    for message in late_errors:
        if message:
            errors.add(message)
    content = contents(addresses)
    html_body = content.html_body or ""
    text_body = content.text_body
    if text_body is None:
        text_body = html_to_text(html_body)[: max(0, limits.max_body_chars)] if html_body else ""

    return ParsedMessage(
        message_id=message_id or synthetic_message_id(content_hash),
        message_id_synthetic=message_id is None,
        content_hash=content_hash,
        subject=subject,
        normalized_subject=normalize_subject(subject),
        date=date,
        from_=senders[0] if senders else None,
        to=to,
        cc=cc,
        bcc=bcc,
        reply_to=reply_to,
        in_reply_to=reply_ids[0] if reply_ids else None,
        references=references,
        text_body=text_body,
        html_body=html_body,
        attachments=tuple(content.attachments),
        size=len(raw),
        recipient_count=count_recipients(to, cc, bcc),
        headers=headers,
        attached_message_senders=tuple(content.senders),
        parse_errors=errors.result(),
    )
