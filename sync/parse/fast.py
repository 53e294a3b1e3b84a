"""The optional accelerator: `fast-mail-parser` (Rust `mailparse`) splits the MIME structure and
undoes the transfer encodings, in place of `email.feedparser`, for mail of a shape it is known
to read exactly as the stdlib does. Everything else takes the bounded stdlib path unchanged.

Why only as an accelerator: measured over 5,000 generated messages (issue 14) it agreed with the
stdlib on bodies and most headers, but reads `HH:MM` dates without seconds wrongly, only the
first To/Cc header, `Content-Type: text` as an attachment, US-ASCII-labelled UTF-8 wrongly, and
raises on broken base64, a header block starting with a continuation line, or deep nesting. So
it decides nothing on its own here:

* the top-level header block (every stored header field: ids, addresses, dates, subject, the
  content hash) is still read by the stdlib, from the raw bytes;
* of the tree it gives, only the structure and each leaf's transfer-decoded bytes are used;
  content types, charsets, dispositions and filenames are read by the stdlib's own `Message`
  accessors from the part's headers, bodies are decoded by our charset rules (`charsets`), and
  the leaves go through the same code as on the stdlib path (`bodies._leaf`);
* any doubt hands the whole message back (False): an error from the library (its tree has
  no warnings channel; what `parse_email` reports as warnings is about fields not taken), a
  message the bounding pre-scan would touch, header defects, a parse error of our own, and
  every shape it is not proven on (attached messages, encoded words or non-ASCII in part
  headers, RFC 2231 parameters, transfer encodings beyond base64/quoted-printable/identity, a
  multipart it could not split, a closing delimiter missing, disagreement with the stdlib about
  what the top header block holds or about which parts are multiparts).

`tests/sync/test_parse_fast.py` compares every stored field with and without the accelerator
over every corpus we have, and checks that the generated mail does take this path.
"""

from __future__ import annotations

import base64
import binascii
import functools
from collections.abc import Callable
from email.message import Message
from typing import Any

from sync.parse.bodies import _Content, _leaf
from sync.parse.bounds import (
    _DELIMITER_TAIL,
    _EOL,
    _NOT_A_HEADER_LINE,
    _POLICY,
    ParseLimits,
    _Errors,
    _safely,
)
from sync.parse.headers import _AddressReader

_library: Any
try:  # optional (the `fast` extra): the product works the same without it
    import fast_mail_parser as _library
except ImportError:
    _library = None

AVAILABLE = _library is not None

# Transfer encodings whose decoding the two parsers share (the stdlib compares the raw value,
# lower-cased but not stripped: "base64 " is no base64 to it).
_ENCODINGS = frozenset({"", "7bit", "8bit", "binary", "base64", "quoted-printable"})
# The part headers the walk reads; the rest of a part's headers is never looked at.
_PART_HEADERS = ("content-type", "content-disposition", "content-id", "content-transfer-encoding")


class _Unsupported(Exception):
    """A shape the accelerator is not proven on: the stdlib reads the message instead."""


def walk(raw: bytes, body_start: int, head: Message, content: _Content) -> bool:
    """Fill `content` (bodies, attachments) from `raw` as `bodies._walk` over the stdlib's tree
    would; False (with `content` to be thrown away) when the stdlib must do it instead.

    `head` is the stdlib's reading of the top header block, `body_start` where the body starts.
    """
    if _library is None or raw.startswith(b"From ") or raw.find(b"=?", body_start) >= 0:
        return False  # an mbox From line, or encoded words that may sit in part headers
    if not _ends_with_blank_line(raw[:body_start]) and body_start < len(raw):
        return False  # a non-header line ended the block: the stdlib reads the rest as body
    try:
        # The tree has no warnings channel: what `parse_email` reports as warnings (charsets,
        # addresses, dates) concerns fields never taken from the library here.
        tree = _library.parse_email_tree(raw)
        if not _same_top(tree, head):
            return False
        _walk_tree(content, raw, tree, head, body_start)
    except Exception:  # the library's ParseError or a shape of ours: the stdlib reads it
        return False
    return not content.errors.result()


def _ends_with_blank_line(block: bytes) -> bool:
    for eol in (b"\r\n", b"\n", b"\r"):
        if block.endswith(eol):
            rest = block[: -len(eol)]
            return not rest or rest.endswith((b"\n", b"\r"))
    return False


def _same_top(tree: Any, head: Message) -> bool:
    """Both read the same fields in the top header block (else they disagree on where it ends)."""
    names = [str(name).lower() for name, _ in head.raw_items()]
    theirs = [str(name).lower() for name, values in tree.headers.items() for _ in values]
    return sorted(names) == sorted(theirs)


def _part_headers(node: Any) -> Message:
    """A stdlib `Message` holding the part's MIME headers, for its own accessors. The library
    hands values out unfolded and decoded; only plain ASCII values (no RFC 2231 parameters)
    are the same either way."""
    fields: list[tuple[str, str]] = []
    for name, values in node.headers.items():
        if str(name).lower() not in _PART_HEADERS:
            continue
        for value in values:
            if not value.isascii() or "*" in value or "\\" in value:
                raise _Unsupported("part header not plain ASCII")
            fields.append((str(name), value))
    return _part(tuple(fields))


class _Part(Message):
    """Part headers whose accessors answer from a memo: the same few MIME header values come
    back in mail after mail, and `get_param` re-parses the value on every call. Instances are
    shared through `_part` and never changed after it built them."""

    def __init__(self) -> None:
        super().__init__(policy=_POLICY)
        self._memo: dict[str, Any] = {}

    def _once(self, key: str, get: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = get()  # an accessor that raises is asked again next time
        return self._memo[key]

    def get_content_type(self) -> str:
        return str(self._once("type", super().get_content_type))

    def get_content_charset(self, failobj: Any = None) -> Any:
        found = self._once("charset", super().get_content_charset)
        return failobj if found is None else found

    def get_filename(self, failobj: Any = None) -> Any:
        found = self._once("filename", super().get_filename)
        return failobj if found is None else found

    def get_content_disposition(self) -> str | None:
        return self._once("disposition", super().get_content_disposition)

    def get_boundary(self, failobj: Any = None) -> Any:
        found = self._once("boundary", super().get_boundary)
        return failobj if found is None else found


@functools.lru_cache(maxsize=1024)
def _part(fields: tuple[tuple[str, str], ...]) -> _Part:
    part = _Part()
    for name, value in fields:
        part[name] = value
    return part


def _walk_tree(content: _Content, raw: bytes, root: Any, head: Message, body_start: int) -> None:
    _node(content, raw, root, head, body_start, len(raw))


def _node(content: _Content, raw: bytes, node: Any, part: Message, start: int, end: int) -> None:
    """One part whose body (the stdlib's payload) is raw[start:end], then its children in
    document order (depth is below `max_mime_depth`: the quick bounding path counted them)."""
    content_type = part.get_content_type()
    maintype = part.get_content_maintype()
    if maintype == "message" or node.is_message:
        raise _Unsupported("attached message")
    encoding = str(part.get("content-transfer-encoding", "")).lower()
    if encoding not in _ENCODINGS:
        raise _Unsupported("transfer encoding")
    is_container = bool(node.children) or str(node.content_type).lower().startswith("multipart/")
    if maintype != "multipart":
        if is_container or node.content is None:
            raise _Unsupported("a leaf read as a container")
        _leaf(content, part, data=_decoded(raw[start:end], encoding))
        return
    boundary = _safely(part.get_boundary, None)
    if not is_container or content_type == "multipart/digest" or boundary is None or not boundary.isascii():
        raise _Unsupported("multipart")
    lines = _delimiter_lines(raw, boundary.encode("ascii"), start, end)
    children = node.children
    if len(lines) != len(children) + 1 or not lines[-1][2] or any(closing for _, _, closing in lines[:-1]):
        raise _Unsupported("delimiter lines do not match the parts")  # the stdlib reads them its way
    for index, child in enumerate(children):
        child_start, child_end = lines[index][1], lines[index + 1][0]
        body = _body_of(raw, child, child_start, child_end)
        # The line end before a delimiter line belongs to the delimiter (RFC 2046), not the part.
        eol = 2 if raw[child_end - 2 : child_end] == b"\r\n" else 1
        _node(content, raw, child, _part_headers(child), body, max(body, child_end - eol))


def _decoded(payload: bytes, encoding: str) -> bytes:
    """A leaf's content as `Message.get_payload(decode=True)` gives it, from the part's own bytes:
    the library's decoding differs (every line break becomes CRLF in quoted-printable; base64 is
    read leniently where the stdlib reports damage)."""
    if encoding == "quoted-printable":
        return binascii.a2b_qp(payload)  # what `quopri.decodestring` runs
    if encoding == "base64":
        compact = payload.translate(None, b"\r\n")  # = b"".join(payload.splitlines())
        try:  # `email._encoded_words.decode_b`'s first try; when it fails, the stdlib reads it
            return base64.b64decode(compact + b"==="[: -len(compact) % 4], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise _Unsupported("damaged base64") from exc
    return payload


def _delimiter_lines(raw: bytes, boundary: bytes, start: int, end: int) -> list[tuple[int, int, bool]]:
    """(start, end after the line end, closing) of every "--boundary" in raw[start:end], each of
    which must be a delimiter line as the feedparser reads one (anything else: unsupported)."""
    needle = b"--" + boundary
    found: list[tuple[int, int, bool]] = []
    pos = start
    while (at := raw.find(needle, pos, end)) >= 0:
        if at > 0 and raw[at - 1] not in b"\r\n":
            raise _Unsupported("boundary inside a line")
        tail = _DELIMITER_TAIL.match(raw, at + len(needle), end)
        if tail is None:
            raise _Unsupported("boundary followed by text")
        found.append((at, tail.end(), tail.group(1) is not None))
        pos = tail.end()
    return found


def _body_of(raw: bytes, node: Any, start: int, end: int) -> int:
    """Where the body of the part at raw[start:end] begins. Its header block must end with a
    blank line, with no continuation line first and no "From " line in it: else the stdlib
    reads it with a defect (the rest as body) that the library does not share."""
    if raw[start : start + 1] in (b" ", b"\t"):
        raise _Unsupported("part header block starts with a continuation line")
    stop = _NOT_A_HEADER_LINE.search(raw, start, end)
    if stop is None or raw[stop.start() : stop.start() + 1] not in (b"\r", b"\n"):
        raise _Unsupported("part header block not ended by a blank line")
    if raw.startswith(b"From ", start) or raw.find(b"\nFrom ", start, stop.start()) >= 0:
        raise _Unsupported("From line in part headers")
    if raw.find(b"\rFrom ", start, stop.start()) >= 0:
        raise _Unsupported("From line in part headers")
    names = [line.split(b":", 1)[0].strip().lower() for line in _EOL.split(raw[start : stop.start()])]
    if sorted(n.decode("latin-1") for n in names if n and n[:1] not in b" \t") != sorted(
        str(name).lower() for name, values in node.headers.items() for _ in values
    ):
        raise _Unsupported("the library read other part headers")
    blank = _EOL.match(raw, stop.start())
    return blank.end() if blank else stop.start()


def content_for(limits: ParseLimits) -> _Content:
    """A fresh `_Content` for `walk`, with its own error list (thrown away on a fallback)."""
    errors = _Errors()
    return _Content(limits=limits, errors=errors, addresses=_AddressReader(errors))
