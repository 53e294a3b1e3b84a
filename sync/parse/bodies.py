"""From the stdlib's message tree to bodies and attachments: walk the parts, undo transfer
encodings, decode text, keep attachment facts (never their content).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from email import errors as email_errors
from email.generator import BytesGenerator
from email.message import Message
from io import BytesIO

from sync.parse.bounds import _MAX_BOUNDARY, ParseLimits, _Errors, _safely
from sync.parse.charsets import (
    _clean_line,
    _clean_text,
    _decode_bytes,
    _header_text,
    _raw_bytes,
    _unstructured,
)
from sync.parse.headers import _AddressReader
from sync.types import Address, Attachment

_BASE64_DAMAGE = (email_errors.InvalidBase64CharactersDefect, email_errors.InvalidBase64LengthDefect)
_BASE64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_NOT_BASE64 = bytes(b for b in range(256) if b not in _BASE64_ALPHABET)


@dataclass(slots=True)
class _Content:
    limits: ParseLimits
    errors: _Errors
    addresses: _AddressReader
    text_body: str | None = None
    html_body: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    senders: list[Address] = field(default_factory=list)
    # The attachments' content, in step with `attachments`, when asked for (serving a download);
    # None while syncing, which keeps only the facts.
    payloads: list[bytes] | None = None


def _payload(part: Message, content_type: str, errors: _Errors) -> bytes:
    """Part content with its Content-Transfer-Encoding undone by `get_payload(decode=True)`."""
    known = len(part.defects)
    data = _safely(lambda: part.get_payload(decode=True), None)
    if not isinstance(data, bytes):
        return b""
    damage = [d for d in part.defects[known:] if isinstance(d, _BASE64_DAMAGE)]
    if not damage:
        return data
    compact = _raw_bytes(_safely(lambda: part.get_payload(), "")).translate(None, b" \t\r\n\x0b\x0c")
    try:  # whitespace inside lines is what got in the way: not damage
        return base64.b64decode(compact + b"=" * (-len(compact) % 4), validate=True)
    except (binascii.Error, ValueError):
        errors.add(f"broken base64 in a {content_type} part")
    if any(isinstance(d, email_errors.InvalidBase64LengthDefect) for d in damage):
        # the stdlib returns the encoded text here; decode all but the stray last character
        usable = compact.translate(None, _NOT_BASE64)
        usable = usable[: len(usable) - (len(usable) % 4 == 1)]
        return binascii.a2b_base64(usable + b"=" * (-len(usable) % 4))
    return data


def _body_text(content: _Content, part: Message, data: bytes, label: str) -> str:
    """Decoded, cleaned body text truncated to `max_body_chars` (decoding only what is kept)."""
    limit = max(0, content.limits.max_body_chars)
    byte_cap = limit * 4 + 16  # no charset needs more than 4 bytes per character
    truncated = len(data) > byte_cap
    charset = _safely(part.get_content_charset, None)
    text = _clean_text(_decode_bytes(data[:byte_cap] if truncated else data, charset, final=not truncated))
    if truncated or len(text) > limit:
        text = text[:limit]
        content.errors.add(f"{label} body longer than {limit} characters; truncated")
    return text


def _attachment(part: Message, content_type: str, size: int) -> Attachment:
    filename = _safely(part.get_filename, None)
    content_id = part.get("content-id")
    return Attachment(
        filename=_unstructured(filename) or None if filename is not None else None,
        content_type=content_type,
        size=size,
        inline=part.get_content_disposition() == "inline",
        content_id=_clean_line(_header_text(content_id)).strip("<> \t") or None if content_id else None,
    )


def _leaf(content: _Content, part: Message, *, data: bytes | None = None) -> None:
    """One non-container part. `data`: its transfer-decoded content when the caller has it (the
    accelerator, `sync.parse.fast`); else undone here from the stdlib's part."""
    content_type = part.get_content_type()
    attached = part.get_content_disposition() == "attachment" or _safely(part.get_filename, None) is not None
    if content_type in ("text/plain", "text/html") and not attached:
        if content_type == "text/plain" and content.text_body is None:
            data = _payload(part, content_type, content.errors) if data is None else data
            content.text_body = _body_text(content, part, data, content_type)
        elif content_type == "text/html" and content.html_body is None:
            data = _payload(part, content_type, content.errors) if data is None else data
            content.html_body = _body_text(content, part, data, content_type)
        return  # later inline alternatives of the body are neither body nor attachment
    data = _payload(part, content_type, content.errors) if data is None else data
    content.attachments.append(_attachment(part, content_type, len(data)))
    if content.payloads is not None:
        content.payloads.append(data)


def _message_bytes(messages: list[Message]) -> bytes:
    try:
        out = BytesIO()
        for message in messages:
            BytesGenerator(out, mangle_from_=False).flatten(message)
        return out.getvalue()
    except Exception:
        return b""


def _attached_message(content: _Content, part: Message) -> None:
    """A message/* part: an attachment, plus the sender of a forwarded message. Not walked into."""
    content_type = part.get_content_type()
    inner = [m for m in part.get_payload() if isinstance(m, Message)]
    data = _message_bytes(inner)
    content.attachments.append(_attachment(part, content_type, len(data)))
    if content.payloads is not None:
        content.payloads.append(data)
    if content_type in ("message/rfc822", "message/global") and inner:
        for address in content.addresses.read(inner[0].get_all("from") or [], "From", report=False):
            if address not in content.senders:
                content.senders.append(address)


def _walk(content: _Content, root: Message) -> None:
    """Depth-first in document order; depth is bounded by the pre-scan."""
    stack = [root]
    while stack:
        part = stack.pop()
        if any(isinstance(d, email_errors.CloseBoundaryNotFoundDefect) for d in part.defects):
            content.errors.add("multipart is truncated: closing boundary missing")
        if part.is_multipart():
            if part.get_content_maintype() == "message":
                _attached_message(content, part)
            else:
                stack.extend(reversed([p for p in part.get_payload() if isinstance(p, Message)]))
        elif part.get_content_maintype() == "multipart":  # the parser could not split it
            data = _payload(part, "text/plain", content.errors)
            if not data.strip():
                continue  # header-only fetch, or a part emptied by the depth cap
            boundary = _safely(part.get_boundary, None)
            if boundary is None or len(boundary) > _MAX_BOUNDARY:
                content.errors.add("multipart without usable boundary parameter")
            else:
                content.errors.add("multipart boundary never occurs in the body")
            if content.text_body is None:  # show the unstructured body as text
                content.text_body = _body_text(content, part, data, "text/plain")
        else:
            _leaf(content, part)
