"""Turn raw RFC 5322 message bytes into a `ParsedMessage`: pure, bounded, never raising.

The sync engine feeds this whatever an IMAP server hands out: complete messages, a few fetched header
fields of an oversized message, or plain garbage. A single bad message must never stop a folder sync,
so `parse_message` catches everything and returns best-effort fields.

Why not `email.parser.BytesParser` for the MIME structure
    The stdlib FeedParser recurses once per multipart level (RecursionError below 2,000 levels)
    and checks every open boundary for every line, and it took ~11 s for a message with 50,000
    parts on our Python 3.11. Limits must hold *while* parsing, so this module splits the header
    block and the multipart bodies itself, with searches that run at C speed over offsets into the
    original buffer (no copies per level) and an explicit stack bounded by `ParseLimits`. Work is
    linear in the input size times `max_mime_depth`. Header *values* are decoded here too (8-bit bytes,
    RFC 2047 words, RFC 2231 parameters) because `policy.default` raises or yields surrogates on
    exactly the broken input we must survive. The stdlib still does the well-contained parts:
    `email.utils.parsedate_to_datetime`, `binascii` base64 / quoted-printable, `codecs`, `urllib`
    percent-decoding and `html.parser`.

What goes into `parse_errors` (a non-empty tuple flags the message as malformed in the CRM)
    Only real damage: empty input, no header block, a non-header line inside the header block,
    a multipart without boundary / whose boundary never occurs / without closing boundary
    (truncated), undecodable base64, an address header with nothing usable in it, a cap from
    `ParseLimits` being hit, or an internal parser failure.
    Soft problems are repaired silently and are *not* errors: a missing Date (falls back to
    `internal_date`), an unparseable or implausible Date (before 1971 or after 2100; also falls back
    to `internal_date`), a missing or unusable Message-ID (`message_id_synthetic` shows it), unknown
    or wrong charset labels, malformed RFC 2047 words (left as literal text), bad parameters.

`content_hash` is computed over raw header bytes (whitespace-collapsed) rather than decoded text, so
that improving the decoders later never changes the hash of mail already stored.
"""

from __future__ import annotations

import binascii
import codecs
import hashlib
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from email.utils import parsedate_to_datetime
from html.parser import HTMLParser
from urllib.parse import unquote_to_bytes

from dateutil import parser as dateutil_parser

from sync.types import Address, Attachment, ParsedMessage

__all__ = [
    "DEFAULT_LIMITS",
    "ParseLimits",
    "count_recipients",
    "normalize_subject",
    "parse_message",
    "synthetic_message_id",
]


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Caps that keep one hostile message from eating the sync worker's time or memory.

    `max_header_bytes` bounds the top-level header block and, separately, the total size of all
    MIME part headers (including the headers of attached messages) taken together.
    """

    max_mime_depth: int = 20
    max_parts: int = 500
    max_header_bytes: int = 256 * 1024
    max_body_chars: int = 2_000_000


DEFAULT_LIMITS = ParseLimits()

# Headers that linking rules look at; everything else is dropped to keep the record small.
_KEPT_HEADERS = (
    "auto-submitted",
    "list-id",
    "list-unsubscribe",
    "precedence",
    "x-autoreply",
    "x-auto-response-suppress",
    "return-path",
    "x-forwarded-for",
    "x-forwarded-to",
)
_KEPT_HEADER_SET = frozenset(_KEPT_HEADERS)
# Headers whose values identify a copy of a message; servers add others (Received, X-*) per copy.
_HASHED_HEADERS = ("from", "to", "cc", "date", "subject", "message-id")
_MAX_ERRORS = 20  # a message with 10,000 broken parts needs one flag, not 10,000 strings
_MAX_REFERENCES = 100
_MAX_ID_CHARS = 998  # RFC 5322 line length; longer "ids" are garbage
_MAX_DATE_CHARS = 256
_HTML_CLOSE_BUDGET = 20_000_000  # characters HTMLParser.close() may re-scan (see _html_to_text)
_MAX_BOUNDARY = 200  # RFC 2046 allows 70; longer ones are hostile and costly to search for
_B64_MAX_CHUNKS = 1000
_EARLIEST_YEAR = 1971  # 1970 dates come from clients with a zero clock
_LATEST_YEAR = 2100


def synthetic_message_id(content_hash: str) -> str:
    """Stable stand-in for a missing Message-ID: two copies of one message get the same id."""
    return f"<{content_hash}@crm-inbox.invalid>"


def count_recipients(to: Iterable[Address], cc: Iterable[Address], bcc: Iterable[Address]) -> int:
    """Distinct addresses over To, Cc and Bcc, so a person listed twice counts once."""
    return len({a.email.lower() for group in (to, cc, bcc) for a in group if a.email})


# --------------------------------------------------------------------------------------------
# Subjects

_REPLY_WORDS = (
    "re", "aw", "antw", "antwort", "sv", "svar", "vs", "vl", "rv", "enc", "res", "rif", "ref",
    "réf", "rép", "odp", "ynt", "fwd", "fw", "wg", "tr", "doorst",
    "回复", "回覆", "答复", "转发", "轉寄", "轉發", "返信", "転送", "답장", "전달",
)  # fmt: skip
_SUBJECT_PREFIX = re.compile(
    r"\s*(?:(?:"
    + "|".join(re.escape(w) for w in sorted(_REPLY_WORDS, key=len, reverse=True))
    + r")\s*(?:\[\d{1,6}\]|\(\d{1,6}\)|\^\d{1,6})?\s*[:：]|\[[^\[\]:]{1,80}\])\s*",
    re.IGNORECASE,
)


def normalize_subject(subject: str) -> str:
    """Subject reduced to what stays constant along a thread, for matching replies to threads.

    Strips any run of reply/forward prefixes (Re, Fwd, AW, WG, TR, Réf, SV, 回复, "Re[2]:", ...)
    and leading list tags such as "[sales]" (but not an old-style "[Fwd: subject]", which is the
    whole subject), collapses whitespace and casefolds. A subject that is nothing but prefixes
    and tags normalizes to "".
    """
    text = " ".join(unicodedata.normalize("NFC", subject).split())
    pos = 0
    while True:  # each match consumes at least two characters, so this is linear
        match = _SUBJECT_PREFIX.match(text, pos)
        if match is None or match.end() == pos:
            break
        pos = match.end()
    return text[pos:].strip().casefold()


# --------------------------------------------------------------------------------------------
# Error collection


class _Errors:
    """Deduplicated, capped list of parse problems."""

    __slots__ = ("_items", "_overflow")

    def __init__(self) -> None:
        self._items: list[str] = []
        self._overflow = False

    def add(self, message: str) -> None:
        if message in self._items:
            return
        if len(self._items) >= _MAX_ERRORS:
            self._overflow = True
            return
        self._items.append(message)

    def result(self) -> tuple[str, ...]:
        if self._overflow:
            return (*self._items, "further parse errors omitted")
        return tuple(self._items)


# --------------------------------------------------------------------------------------------
# Charsets and text cleanup

# Labels Python does not know, or knows as a narrower codec than mailers actually use.
_CHARSET_LABELS = {
    "windows-874": "cp874",
    "x-sjis": "cp932",
    "iso-8859-8-i": "iso8859-8",
    "iso-8859-6-i": "iso8859-6",
    "x-mac-roman": "mac-roman",
    "x-gbk": "gb18030",
}
_CODEC_UPGRADES = {
    "ascii": "utf-8",  # mislabelled 8-bit text is far more often UTF-8 than anything else
    "iso8859-1": "cp1252",  # what browsers do: latin-1 labels routinely carry cp1252 quotes
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "shift_jis": "cp932",
    "euc_kr": "cp949",
    "tis-620": "cp874",
}
# Text codecs that are not character sets: decoding mail with them yields nonsense or surrogates.
_REJECTED_CODECS = frozenset(
    {"undefined", "idna", "punycode", "unicode-escape", "raw-unicode-escape", "unicode_escape"}
)
_SURROGATES = re.compile("[\ud800-\udfff]")
_LINE_CONTROLS = {c: " " for c in [*range(1, 32), 127]} | {0: None}


def _codec_for(charset: str | None) -> str | None:
    """Python codec name for a MIME charset label, or None when the label is unusable."""
    if not charset:
        return None
    label = charset.strip().strip("\"'").lower()
    label = _CHARSET_LABELS.get(label, label)
    try:
        info = codecs.lookup(label)
    except (LookupError, ValueError, TypeError):
        return None
    if not getattr(info, "_is_text_encoding", True) or info.name in _REJECTED_CODECS:
        return None
    return _CODEC_UPGRADES.get(info.name, info.name)


def _try_decode(data: bytes, codec: str, final: bool) -> str | None:
    try:
        return codecs.getincrementaldecoder(codec)("strict").decode(data, final)
    except (UnicodeError, LookupError, ValueError, TypeError):
        return None


def _decode_bytes(data: bytes, charset: str | None, *, final: bool = True) -> str:
    """Decode with the declared charset, falling back to UTF-8, then cp1252, then latin-1.

    `final=False` tolerates a multibyte sequence cut off at the end (used after truncation).
    Never raises: latin-1 maps every byte.
    """
    codec = _codec_for(charset)
    if codec and codec != "utf-8":
        text = _try_decode(data, codec, final)
        if text is not None:
            return text
    text = _try_decode(data, "utf-8", final)
    if text is not None:
        return text
    if codec and codec not in ("utf-8", "cp1252"):
        # A known but slightly wrong declaration (a few bad bytes in shift_jis, say) is still a
        # better guess than reading the text as Western European.
        try:
            return codecs.getincrementaldecoder(codec)("replace").decode(data, final)
        except (UnicodeError, LookupError, ValueError, TypeError):
            pass
    text = _try_decode(data, "cp1252", True)
    return text if text is not None else data.decode("latin-1")


def _clean_text(text: str) -> str:
    """Body text safe for PostgreSQL: no NUL, no lone surrogates, LF line ends."""
    text = text.replace("\x00", "").replace("\r\n", "\n")
    if _SURROGATES.search(text):
        text = _SURROGATES.sub("\ufffd", text)
    return text


def _clean_line(text: str) -> str:
    """Single-line header text: controls become spaces, NUL and surrogates go, ends stripped."""
    text = text.translate(_LINE_CONTROLS)
    if _SURROGATES.search(text):
        text = _SURROGATES.sub("\ufffd", text)
    return text.strip()


def _decode_8bit_header(raw: bytes) -> str:
    """Header bytes to str. Raw 8-bit headers are usually UTF-8, otherwise cp1252/latin-1."""
    try:
        return raw.decode("ascii")
    except UnicodeDecodeError:
        return _decode_bytes(raw, None)


# --------------------------------------------------------------------------------------------
# RFC 2047 encoded words

_ENCODED_WORD = re.compile(r"=\?([^?\s]+)\?([bBqQ])\?([^?\s]*)\?=")
_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_DROP = bytes(b for b in range(256) if b not in _B64_ALPHABET + b"=")
_B64_WHITESPACE = b" \t\r\n\x0b\x0c"
_B64_PADDING = re.compile(rb"=+")


def _b64decode(data: bytes) -> tuple[bytes, bool]:
    """Lenient base64: skips junk, repairs padding, decodes concatenated padded chunks.

    Returns (decoded, damaged). `damaged` is True when junk bytes were present or a chunk had an
    impossible length, i.e. when the result is known to be incomplete or wrong.
    """
    cleaned = data.translate(None, _B64_DROP)
    damaged = len(cleaned) != len(data.translate(None, _B64_WHITESPACE))
    body = cleaned.rstrip(b"=")
    if b"=" not in body:
        chunks = [body]
    elif body.count(b"=") > 2 * _B64_MAX_CHUNKS:  # count first: splitting "A=A=A=..." is costly
        chunks, damaged = [body.replace(b"=", b"")], True
    else:
        chunks = _B64_PADDING.split(body)
    out: list[bytes] = []
    for chunk in chunks:
        if len(chunk) % 4 == 1:  # one stray sextet cannot encode anything
            chunk, damaged = chunk[:-1], True
        chunk += b"=" * (-len(chunk) % 4)
        try:
            out.append(binascii.a2b_base64(chunk))
        except (binascii.Error, ValueError):
            damaged = True
    return b"".join(out), damaged


def _decode_word(encoding: str, text: str) -> bytes:
    raw = text.encode("utf-8", "surrogateescape")
    if encoding in "bB":
        return _b64decode(raw)[0]
    try:
        return binascii.a2b_qp(raw, header=True)
    except (binascii.Error, ValueError):
        return raw


def _decode_rfc2047(text: str) -> str:
    """Decode encoded words anywhere in `text`, tolerating the usual breakage.

    Adjacent words in one charset are decoded together (mailers split multibyte characters
    across words), whitespace between encoded words is dropped, malformed words stay literal.
    """
    if "=?" not in text:
        return text
    out: list[str] = []
    pending = bytearray()
    pending_charset: str | None = None
    pos = 0
    for match in _ENCODED_WORD.finditer(text):
        between = text[pos : match.start()]
        if pending_charset is not None and between and not between.isspace():
            out.append(_decode_bytes(bytes(pending), pending_charset))
            pending.clear()
            pending_charset = None
        if pending_charset is None:
            out.append(between)
        charset = match.group(1).split("*", 1)[0].lower()  # drop RFC 2231 language
        if pending_charset is not None and charset != pending_charset:
            out.append(_decode_bytes(bytes(pending), pending_charset))
            pending.clear()
        pending_charset = charset
        pending += _decode_word(match.group(2), match.group(3))
        pos = match.end()
    if pending_charset is not None:
        out.append(_decode_bytes(bytes(pending), pending_charset))
    out.append(text[pos:])
    return "".join(out)


def _unstructured(raw: bytes) -> str:
    """Value of a free-text header (Subject, List-Id, ...) as display text."""
    return _clean_line(_decode_rfc2047(_decode_8bit_header(raw)))


# --------------------------------------------------------------------------------------------
# Header blocks

_FIELD_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


@dataclass(slots=True)
class _HeaderBlock:
    fields: list[tuple[str, bytes]]  # (lower-cased name, unfolded raw value), in order
    body_start: int
    malformed: bool = False  # a line that is neither a field nor a continuation ended the block
    truncated: bool = False

    def first(self, name: str) -> bytes | None:
        for key, value in self.fields:
            if key == name:
                return value
        return None

    def all(self, name: str) -> list[bytes]:
        return [value for key, value in self.fields if key == name]


def _after_blank_line(buf: bytes, start: int, end: int) -> int:
    candidates = [i + 2 for i in (buf.find(b"\n\n", start, end),) if i >= 0]
    candidates += [i + 3 for i in (buf.find(b"\n\r\n", start, end),) if i >= 0]
    return min(candidates) if candidates else end


def _split_headers(buf: bytes, start: int, end: int, limit: int) -> _HeaderBlock:
    """Split buf[start:end] into header fields and the offset where the body starts.

    Works on offsets so nested parts never copy the message. Fields beyond `limit` bytes are
    skipped (the body still starts after the real blank line). Without a blank line the whole
    range is headers, which is what a fetch of a few header fields looks like.
    """
    block = _HeaderBlock(fields=[], body_start=end)
    name: str | None = None
    chunks: list[bytes] = []
    pos = start
    while pos < end:
        newline = buf.find(b"\n", pos, end)
        line_end = end if newline < 0 else newline
        next_pos = end if newline < 0 else newline + 1
        line = buf[pos:line_end]
        if line.endswith(b"\r"):
            line = line[:-1]
        if not line:
            block.body_start = next_pos
            break
        if next_pos - start > limit:
            block.truncated = True
            block.body_start = _after_blank_line(buf, pos, end)
            break
        if line[0] in (0x20, 0x09):
            if name is None:
                block.malformed, block.body_start = True, pos
                break
            chunks.append(line)
        else:
            match = _FIELD_NAME.match(line)
            if match is None:
                block.malformed, block.body_start = True, pos
                break
            if name is not None:
                block.fields.append((name, b"".join(chunks)))
            name = match.group(1).decode("ascii").lower()
            chunks = [line[match.end() :]]
        pos = next_pos
    if name is not None:
        block.fields.append((name, b"".join(chunks)))
    return block


# --------------------------------------------------------------------------------------------
# MIME parameters (RFC 2045 / RFC 2231)

_PARAM_SEGMENT = re.compile(r'(?:"(?:[^"\\]|\\.)*"?|[^;"])+', re.S)
_QUOTED_PAIR = re.compile(r"\\(.)", re.S)
_SECTION = re.compile(r"([0-9]{1,3})(\*?)")
_MIME_TYPE = re.compile(r"[a-z0-9!#$&^_.+-]+/[a-z0-9!#$&^_.+-]+")


def _unquote(value: str) -> str:
    value = value.strip()
    if value.startswith('"'):
        value = value[1:-1] if len(value) > 1 and value.endswith('"') else value[1:]
        return _QUOTED_PAIR.sub(r"\1", value)
    return value


def _parse_params(value: str) -> tuple[str, dict[str, str]]:
    """Main value (lower-cased) and parameters of Content-Type / Content-Disposition.

    Linear, unlike `email.message.Message.get_params`, which is quadratic on unbalanced quotes.
    RFC 2231 continuations and charsets are joined and decoded. Values are otherwise left raw:
    a boundary must be matched byte for byte.
    """
    segments = _PARAM_SEGMENT.findall(value)
    if not segments:
        return "", {}
    main = segments[0].split("(", 1)[0].strip().lower()
    simple: dict[str, str] = {}
    extended: dict[str, dict[int, tuple[bool, str]]] = {}
    for segment in segments[1:]:
        key, sep, raw_value = segment.partition("=")
        if not sep:
            continue
        key = key.strip().lower()
        if "*" in key:
            base, _, section = key.partition("*")
            if section == "":
                number, encoded = 0, True
            else:
                match = _SECTION.fullmatch(section)
                if match is None:
                    continue
                number, encoded = int(match.group(1)), bool(match.group(2))
            extended.setdefault(base, {}).setdefault(number, (encoded, _unquote(raw_value)))
        elif key:
            simple.setdefault(key, _unquote(raw_value))
    params = dict(simple)
    for base, sections in extended.items():
        charset: str | None = None
        data = bytearray()
        for index, number in enumerate(sorted(sections)):
            encoded, text = sections[number]
            if encoded:
                if index == 0 and text.count("'") >= 2:
                    charset, _language, text = text.split("'", 2)
                data += unquote_to_bytes(text)
            else:
                data += text.encode("utf-8", "surrogateescape")
        params[base] = _decode_bytes(bytes(data), charset or "utf-8")
    return main, params


@dataclass(slots=True)
class _PartInfo:
    content_type: str
    params: dict[str, str]
    disposition: str
    filename: str | None
    transfer_encoding: str
    content_id: str | None


def _part_info(block: _HeaderBlock, default_type: str) -> _PartInfo:
    """What a MIME part's headers say about it, with stdlib-like defaults for broken values."""
    raw_type = block.first("content-type")
    content_type, params = _parse_params(_decode_8bit_header(raw_type)) if raw_type else ("", {})
    if not _MIME_TYPE.fullmatch(content_type):
        content_type = default_type
    raw_disposition = block.first("content-disposition")
    disposition, disposition_params = (
        _parse_params(_decode_8bit_header(raw_disposition)) if raw_disposition else ("", {})
    )
    raw_filename = disposition_params.get("filename") or params.get("name") or ""
    # RFC 2047 words inside a quoted filename are a violation, but Outlook and others send them.
    filename = _clean_line(_decode_rfc2047(raw_filename)) or None
    raw_cte = block.first("content-transfer-encoding")
    cte = _decode_8bit_header(raw_cte).split("(", 1)[0].strip().lower() if raw_cte else ""
    raw_cid = block.first("content-id")
    content_id = _clean_line(_decode_8bit_header(raw_cid)).strip("<> \t") if raw_cid else ""
    return _PartInfo(content_type, params, disposition, filename, cte, content_id or None)


# --------------------------------------------------------------------------------------------
# Addresses

_ADDRESS_TOKEN = re.compile(
    r'"(?:[^"\\]|\\.)*"?'  # quoted string (may be unterminated)
    r"|<[^<>]*>?"  # angle address
    r"|\((?:[^()\\]|\\.)*\)?"  # comment (nesting is not worth the complexity)
    r"|[,;:]"
    r"|\s+"
    r'|[^\s"<>(),;:]+'
    r"|[<>()]",
    re.S,
)
_EMAIL = re.compile(r'(?:"[^"]*"|[^\s"<>(),;:@\\]+)@[^\s"<>(),;:@\\]+')


def _usable_email(candidate: str) -> str | None:
    candidate = candidate.strip().strip("<>").strip()
    if candidate.startswith("@") and ":" in candidate:  # obsolete source route "@a,@b:user@host"
        candidate = candidate.rsplit(":", 1)[1]
    if candidate[:7].lower() == "mailto:":
        candidate = candidate[7:]
    if len(candidate) > _MAX_ID_CHARS or not _EMAIL.fullmatch(candidate):
        return None
    return candidate.lower()


def _display_name(parts: list[str]) -> str:
    return " ".join(_clean_line(_decode_rfc2047("".join(parts))).split())


def _parse_address_list(value: str) -> tuple[list[Address], bool]:
    """Mailboxes in an address header, groups flattened. Returns (addresses, saw_group).

    Unusable entries are skipped: one broken recipient must not hide the others.
    """
    found: list[Address] = []
    phrase: list[str] = []  # display-name pieces, whitespace kept as " "
    words: list[str] = []  # whitespace-separated words for a bare addr-spec
    comments: list[str] = []
    angle: str | None = None
    in_group = saw_group = False

    def flush() -> None:
        nonlocal angle
        email: str | None = None
        name_parts = phrase
        if angle is not None:
            email = _usable_email(angle)
        elif words:
            bare = [w for w in words if w != " "]
            with_at = [i for i, w in enumerate(bare) if "@" in w]
            name_parts = []
            if len(with_at) == 1 and len(bare) > 1:
                # "John Doe john@example.com": the word with the @ is the address
                email = _usable_email(bare[with_at[0]])
                if email is not None:
                    name_parts = [" ".join(w for i, w in enumerate(bare) if i != with_at[0])]
            if email is None:
                email = _usable_email("".join(bare))  # also obsolete "john @ example.com"
        if email is not None:
            name = _display_name(name_parts) or _display_name(comments[:1])
            found.append(Address(email=email, name=name))
        phrase.clear()
        words.clear()
        comments.clear()
        angle = None

    for match in _ADDRESS_TOKEN.finditer(value):
        token = match.group()
        first = token[0]
        if first == ",":
            flush()
        elif first == ";":
            flush()
            in_group = False
        elif first == ":":
            if angle is None and not in_group:
                phrase.clear()  # the group's display name
                words.clear()
                comments.clear()
                in_group = saw_group = True
        elif first == "<":
            if len(token) > 1:
                angle = token
        elif first == "(":
            if len(token) > 1:
                comments.append(token[1:-1] if token.endswith(")") else token[1:])
        elif first in ">)":
            continue
        elif first.isspace():
            if phrase:
                phrase.append(" ")
            if words and words[-1] != " ":
                words.append(" ")
        elif first == '"':
            phrase.append(_unquote(token))
            words.append(token)
        else:
            phrase.append(token)
            words.append(token)
    flush()
    return found, saw_group


# --------------------------------------------------------------------------------------------
# Message ids and dates

_ANGLE_ID = re.compile(r"<\s*([^<>\s]+)\s*>")
_COMMENTS = re.compile(r"\([^()]*\)")


def _usable_id(ident: str) -> str | None:
    ident = ident.strip().strip("<>")
    if not ident or len(ident) > _MAX_ID_CHARS or any(c.isspace() or c in "<>" for c in ident):
        return None
    if any(ord(c) < 32 or ord(c) == 127 for c in ident):
        return None
    return f"<{ident}>"


def _message_ids(value: str) -> list[str]:
    """All message ids in a Message-ID / In-Reply-To / References value, in order."""
    found = [i for i in (_usable_id(m) for m in _ANGLE_ID.findall(value)) if i]
    if found:
        return found
    bare = _COMMENTS.sub(" ", value).replace("<", " ").replace(">", " ").split()
    with_at = [w for w in bare if "@" in w]
    candidates = with_at or (bare if len(bare) == 1 else [])
    return [i for i in (_usable_id(w) for w in candidates) if i]


def _cap_references(ids: list[str]) -> tuple[str, ...]:
    """De-duplicated, keeping the thread root (first) and the most recent ancestors (last)."""
    unique = list(dict.fromkeys(ids))
    if len(unique) > _MAX_REFERENCES:
        unique = [unique[0], *unique[-(_MAX_REFERENCES - 1) :]]
    return tuple(unique)


_TZ_ABBREVIATIONS = {
    "UT": 0, "UTC": 0, "GMT": 0, "Z": 0, "WET": 0, "WEST": 1, "BST": 1, "CET": 1, "MET": 1,
    "CEST": 2, "MEST": 2, "EET": 2, "EEST": 3, "MSK": 3, "HKT": 8, "SGT": 8, "JST": 9, "KST": 9,
    "AEST": 10, "AEDT": 11, "NZST": 12, "NZDT": 13, "EST": -5, "EDT": -4, "CST": -6, "CDT": -5,
    "MST": -7, "MDT": -6, "PST": -8, "PDT": -7,
}  # fmt: skip


def _tzinfos(name: str | None, offset: int | None) -> tzinfo | None:
    """dateutil hook: known abbreviations only; unknown ones stay naive (read as UTC).

    A callable also stops dateutil from emitting UnknownTimezoneWarning.
    """
    if offset is not None and abs(offset) < 24 * 3600:
        return timezone(timedelta(seconds=offset))
    if name and name.upper() in _TZ_ABBREVIATIONS:
        return timezone(timedelta(hours=_TZ_ABBREVIATIONS[name.upper()]))
    return None


def _to_utc(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _parse_date(value: str) -> datetime | None:
    """Date header to aware UTC, or None when unparseable or implausible."""
    value = " ".join(value.split())[:_MAX_DATE_CHARS]
    if not value:
        return None
    parsed: datetime | None = None
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        parsed = None
    if parsed is not None and parsed.tzinfo is None and "-0000" not in value:
        # The stdlib knows only US zone names; "CEST" and friends come back naive.
        for token in reversed(value.replace("(", " ").replace(")", " ").split()):
            zone = _tzinfos(token, None)
            if zone is not None:
                parsed = parsed.replace(tzinfo=zone)
                break
    if parsed is None:
        try:
            # Two different defaults expose missing components: dateutil would otherwise fill a
            # bare "12" with today's month and year.
            first = dateutil_parser.parse(value, default=datetime(2001, 1, 1), tzinfos=_tzinfos)
            second = dateutil_parser.parse(value, default=datetime(2002, 2, 2), tzinfos=_tzinfos)
        except (ValueError, OverflowError, TypeError, AttributeError, IndexError):
            return None
        if first.date() != second.date():
            return None
        parsed = first
    try:
        result = _to_utc(parsed)
    except (ValueError, OverflowError):
        return None
    if not _EARLIEST_YEAR <= result.year <= _LATEST_YEAR:
        return None
    return result


# --------------------------------------------------------------------------------------------
# HTML to text


class _TextExtractor(HTMLParser):
    """Visible text of an HTML body: paragraphs separated by a blank line, other blocks by a
    line break. Breaks are collected as a pending level, so nested or adjacent block tags
    (`</li><li>`, `</div></td></tr>`) give one break instead of a stack of empty lines."""

    _PARAGRAPHS = frozenset({
        "p", "h1", "h2", "h3", "h4", "h5", "h6", "blockquote", "table", "ul", "ol", "dl", "pre", "hr",
    })  # fmt: skip
    _BLOCKS = frozenset({
        "address", "article", "aside", "dd", "div", "dt", "fieldset", "figcaption", "figure",
        "footer", "form", "header", "li", "main", "nav", "section", "tbody", "thead", "tfoot", "tr",
    })  # fmt: skip
    _CELLS = frozenset({"td", "th"})
    _HIDDEN = frozenset({"script", "style", "title", "template"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.pieces: list[str] = []
        self._hidden = 0
        self._pre = 0
        self._breaks = 0  # newlines owed before the next visible text

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._tag(tag, opening=True)

    def handle_endtag(self, tag: str) -> None:
        self._tag(tag, opening=False)

    def _tag(self, tag: str, *, opening: bool) -> None:
        if tag in self._HIDDEN:
            self._hidden = max(0, self._hidden + (1 if opening else -1))
        elif tag == "pre":
            self._pre = max(0, self._pre + (1 if opening else -1))
        if tag == "br":
            if opening:
                self._breaks = min(2, self._breaks + 1)
        elif tag in self._PARAGRAPHS:
            self._breaks = 2
        elif tag in self._BLOCKS:
            self._breaks = max(self._breaks, 1)
        elif tag in self._CELLS and opening:
            self.pieces.append(" ")

    def handle_data(self, data: str) -> None:
        if self._hidden:
            return
        text = data if self._pre else re.sub(r"\s+", " ", data)
        if self._breaks:
            if not text.strip():
                return
            if self.pieces:
                self.pieces.append("\n" * self._breaks)
            self._breaks = 0
        self.pieces.append(text)


def _html_to_text(html: str) -> str:
    """Plain text from HTML using html.parser, bounded in time.

    `feed()` is linear: it stops at the first construct that never terminates and keeps the
    rest pending. `close()` then forces through the pending tail, re-scanning it once per "<"
    (quadratic on "<!--<!--<!--..." in Python 3.11), so it runs only when that stays cheap.
    Otherwise the tail is dropped, which is also what browsers do with an unterminated
    comment or tag: everything after it is swallowed.
    """
    extractor = _TextExtractor()
    try:
        extractor.feed(html)
        tail = extractor.rawdata
        if len(tail) * (tail.count("<") + 1) <= _HTML_CLOSE_BUDGET:
            extractor.close()
    except Exception:  # html.parser raises AssertionError on some bogus declarations
        pass
    return "\n".join(" ".join(line.split()) for line in "".join(extractor.pieces).split("\n")).strip()


# --------------------------------------------------------------------------------------------
# MIME walk


@dataclass(slots=True)
class _Walk:
    """Mutable state of one parse; kept out of the frozen result."""

    buf: bytes
    limits: ParseLimits
    errors: _Errors
    header_budget: int
    parts: int = 1  # the message itself
    text_body: str | None = None
    html_body: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    senders: list[Address] = field(default_factory=list)


def _delimiters(buf: bytes, start: int, end: int, boundary: bytes) -> Iterator[tuple[int, int, bool]]:
    """(line start, line end, is_close) of each boundary delimiter line in buf[start:end].

    The regex starts with a literal, so the search runs at C speed even when a crafted body is
    full of near-miss lines like "--boundaryX".
    """
    tail = rb"(--)?[ \t]*\r?(?=\n|\Z)"
    at_start = re.compile(rb"--" + re.escape(boundary) + tail).match(buf, start, end)
    if at_start:
        yield start, at_start.end(), at_start.group(1) is not None
    for match in re.compile(rb"\n--" + re.escape(boundary) + tail).finditer(buf, start, end):
        yield match.start(), match.end(), match.group(1) is not None


def _split_multipart(walk: _Walk, start: int, end: int, boundary: bytes) -> list[tuple[int, int]] | None:
    """Offsets of the body parts of one multipart, recording structural damage as errors.

    None means the boundary never occurs, so the body is not MIME-structured at all.
    """
    buf = walk.buf
    parts: list[tuple[int, int]] = []
    part_start: int | None = None
    closed = False
    for line_start, line_end, is_close in _delimiters(buf, start, end, boundary):
        if part_start is not None:
            part_end = line_start
            if part_end > part_start and buf[part_end - 1] == 0x0D:
                part_end -= 1
            if walk.parts >= walk.limits.max_parts:
                walk.errors.add(f"more than {walk.limits.max_parts} MIME parts; the rest was ignored")
                return parts
            walk.parts += 1
            parts.append((part_start, max(part_start, part_end)))
        if is_close:
            closed = True
            break
        part_start = min(line_end + 1, end)
    if part_start is None:
        walk.errors.add("multipart boundary never occurs in the body")
        return None
    if not closed:
        if walk.parts >= walk.limits.max_parts:
            walk.errors.add(f"more than {walk.limits.max_parts} MIME parts; the rest was ignored")
        else:
            walk.parts += 1
            parts.append((part_start, end))
        walk.errors.add("multipart is truncated: closing boundary missing")
    return parts


def _payload(walk: _Walk, info: _PartInfo, start: int, end: int) -> bytes:
    """Part content with its Content-Transfer-Encoding undone; unknown encodings pass through."""
    data = walk.buf[start:end]
    if info.transfer_encoding == "base64":
        decoded, damaged = _b64decode(data)
        if damaged:
            walk.errors.add(f"broken base64 in a {info.content_type} part")
        return decoded
    if info.transfer_encoding == "quoted-printable":
        try:
            return binascii.a2b_qp(data)
        except (binascii.Error, ValueError):
            return data
    return data


def _body_text(walk: _Walk, info: _PartInfo, data: bytes, label: str) -> str:
    """Decoded, cleaned body text truncated to `max_body_chars` (decoding only what is kept)."""
    limit = max(0, walk.limits.max_body_chars)
    byte_cap = limit * 4 + 16  # no charset needs more than 4 bytes per character
    truncated = len(data) > byte_cap
    text = _decode_bytes(
        data[:byte_cap] if truncated else data, info.params.get("charset"), final=not truncated
    )
    text = _clean_text(text)
    if truncated or len(text) > limit:
        text = text[:limit]
        walk.errors.add(f"{label} body longer than {limit} characters; truncated")
    return text


def _leaf(walk: _Walk, info: _PartInfo, start: int, end: int) -> None:
    content_type = info.content_type
    attached = info.disposition == "attachment" or info.filename is not None
    if content_type in ("text/plain", "text/html") and not attached:
        if content_type == "text/plain" and walk.text_body is None:
            walk.text_body = _body_text(walk, info, _payload(walk, info, start, end), "text/plain")
        elif content_type == "text/html" and walk.html_body is None:
            walk.html_body = _body_text(walk, info, _payload(walk, info, start, end), "text/html")
        return  # later inline alternatives of the body are neither body nor attachment
    payload = _payload(walk, info, start, end)
    walk.attachments.append(
        Attachment(
            filename=info.filename,
            content_type=content_type,
            size=len(payload),
            inline=info.disposition == "inline",
            content_id=info.content_id,
        )
    )
    if content_type in ("message/rfc822", "message/global"):
        _attached_sender(walk, payload)


def _attached_sender(walk: _Walk, payload: bytes) -> None:
    """Record the From of a forwarded-as-attachment message, without walking into its body."""
    if walk.header_budget <= 0:
        walk.errors.add("MIME part headers exceed the header size limit; the rest was ignored")
        return
    block = _split_headers(payload, 0, len(payload), walk.header_budget)
    walk.header_budget -= block.body_start
    raw_from = block.first("from")
    if raw_from is None:
        return
    addresses, _ = _parse_address_list(_decode_8bit_header(raw_from))
    for address in addresses:
        if address not in walk.senders:
            walk.senders.append(address)


def _walk_mime(walk: _Walk, top: _HeaderBlock, end: int) -> None:
    """Depth-first walk in document order with an explicit stack (no recursion limit to hit)."""
    # (header block or None, start, end, depth, default content type)
    stack: list[tuple[_HeaderBlock | None, int, int, int, str]] = [
        (top, top.body_start, end, 0, "text/plain")
    ]
    limits = walk.limits
    while stack:
        block, start, part_end, depth, default_type = stack.pop()
        if block is None:
            if walk.header_budget <= 0:
                walk.errors.add("MIME part headers exceed the header size limit; the rest was ignored")
                continue
            block = _split_headers(walk.buf, start, part_end, walk.header_budget)
            walk.header_budget -= block.body_start - start
            start = block.body_start
        info = _part_info(block, default_type)
        if not info.content_type.startswith("multipart/"):
            _leaf(walk, info, start, part_end)
            continue
        if depth >= limits.max_mime_depth:
            walk.errors.add(f"MIME nesting deeper than {limits.max_mime_depth} levels; inner parts ignored")
            continue
        boundary = info.params.get("boundary", "")
        if not boundary or len(boundary) > _MAX_BOUNDARY:
            walk.errors.add("multipart without usable boundary parameter")
            _leaf(
                walk,
                _PartInfo("text/plain", info.params, "", None, info.transfer_encoding, None),
                start,
                part_end,
            )
            continue
        children = _split_multipart(walk, start, part_end, boundary.encode("utf-8", "surrogateescape"))
        if children is None:  # show the unstructured body as text rather than nothing
            _leaf(
                walk,
                _PartInfo("text/plain", info.params, "", None, info.transfer_encoding, None),
                start,
                part_end,
            )
            continue
        child_type = "message/rfc822" if info.content_type == "multipart/digest" else "text/plain"
        for child_start, child_end in reversed(children):
            stack.append((None, child_start, child_end, depth + 1, child_type))


# --------------------------------------------------------------------------------------------
# Whole message


def _content_hash(block: _HeaderBlock | None, body: bytes) -> str:
    """sha256 over the identifying headers and the body, independent of per-copy server headers.

    Raw header bytes with collapsed whitespace survive refolding; the body is compared with
    LF line ends and without trailing newlines, which servers add or strip per copy.
    """
    digest = hashlib.sha256()
    for name in _HASHED_HEADERS:
        values = block.all(name) if block else []
        digest.update(name.encode() + b":" + b"\x1f".join(b" ".join(v.split()) for v in values) + b"\n")
    digest.update(b"\n")
    digest.update(body.replace(b"\r\n", b"\n").rstrip(b"\n"))
    return digest.hexdigest()


def _addresses(block: _HeaderBlock, name: str, label: str, errors: _Errors) -> tuple[Address, ...]:
    values = block.all(name)
    found: list[Address] = []
    for raw in values:
        text = _decode_8bit_header(raw)
        try:
            addresses, saw_group = _parse_address_list(text)
        except Exception:  # defensive: one header must not cost the whole message
            addresses, saw_group = [], False
        if not addresses and not saw_group and text.strip():
            errors.add(f"no usable address in {label} header")
        found.extend(addresses)
    return tuple(found)


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
    raw: bytes, *, internal_date: datetime | None = None, limits: ParseLimits = DEFAULT_LIMITS
) -> ParsedMessage:
    """Parse one message (or just its header fields). Never raises.

    `internal_date` (the IMAP INTERNALDATE) stands in when the Date header is missing or
    unusable. See the module docstring for what counts as a parse error.
    """
    try:
        return _parse(_as_bytes(raw), internal_date, limits)
    except Exception as exc:  # the contract is "never raises"; flag the message instead
        return _fallback(raw, internal_date, exc)


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


_NON_SPACE = re.compile(rb"\S")


def _parse(raw: bytes, internal_date: datetime | None, limits: ParseLimits) -> ParsedMessage:
    errors = _Errors()
    end = len(raw)
    start = 0
    if raw.startswith(b"From "):  # mbox separator line from an .eml export, not a header
        newline = raw.find(b"\n")
        start = end if newline < 0 else newline + 1
    block = _split_headers(raw, start, end, max(0, limits.max_header_bytes))
    if not raw.strip():
        errors.add("empty message")
    elif not block.fields:
        errors.add("no header block")
    elif block.malformed:
        errors.add("malformed header line; the rest was read as body")
    if block.truncated:
        errors.add(f"header block larger than {limits.max_header_bytes} bytes; truncated")

    content_hash = _content_hash(block, raw[block.body_start :])

    raw_subject = block.first("subject")
    subject = _unstructured(raw_subject) if raw_subject is not None else ""

    message_id: str | None = None
    raw_id = block.first("message-id")
    if raw_id is not None:
        ids = _message_ids(_decode_8bit_header(raw_id))
        message_id = ids[0] if ids else None
    raw_reply = block.first("in-reply-to")
    reply_ids = _message_ids(_decode_8bit_header(raw_reply)) if raw_reply is not None else []
    references = _cap_references(
        [i for v in block.all("references") for i in _message_ids(_decode_8bit_header(v))]
    )

    date: datetime | None = None
    raw_date = block.first("date")
    if raw_date is not None:
        try:
            date = _parse_date(_decode_8bit_header(raw_date))
        except Exception:
            date = None
    if date is None:
        date = _internal_utc(internal_date)

    senders = _addresses(block, "from", "From", errors)
    to = _addresses(block, "to", "To", errors)
    cc = _addresses(block, "cc", "Cc", errors)
    bcc = _addresses(block, "bcc", "Bcc", errors)
    reply_to = _addresses(block, "reply-to", "Reply-To", errors)

    headers = tuple((name, _unstructured(value)) for name, value in block.fields if name in _KEPT_HEADER_SET)

    walk = _Walk(buf=raw, limits=limits, errors=errors, header_budget=max(0, limits.max_header_bytes))
    if _NON_SPACE.search(raw, block.body_start):  # header-only input has no structure to walk
        try:
            _walk_mime(walk, block, end)
        except Exception as exc:
            errors.add(f"MIME structure could not be parsed ({type(exc).__name__})")

    html_body = walk.html_body or ""
    text_body = walk.text_body
    if text_body is None:
        text_body = _html_to_text(html_body)[: max(0, limits.max_body_chars)] if html_body else ""

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
        attachments=tuple(walk.attachments),
        size=len(raw),
        recipient_count=count_recipients(to, cc, bcc),
        headers=headers,
        attached_message_senders=tuple(walk.senders),
        parse_errors=errors.result(),
    )
