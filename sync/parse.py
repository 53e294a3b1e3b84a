"""Turn raw RFC 5322 message bytes into a `ParsedMessage`: pure, bounded, never raising.

The sync engine feeds this whatever an IMAP server hands out: complete messages, a few fetched
header fields of an oversized message, or plain garbage. A single bad message must never stop a
folder sync, so `parse_message` catches everything and returns best-effort fields.

The standard library parses; this module bounds its input and maps its result
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

`content_hash` is computed over raw header bytes (whitespace-collapsed) rather than decoded text, so
that improving the decoders later never changes the hash of mail already stored.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import functools
import hashlib
import inspect
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from email import errors as email_errors
from email.feedparser import BytesFeedParser
from email.generator import BytesGenerator
from email.header import decode_header
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import Compat32
from email.utils import getaddresses, parsedate_to_datetime
from html.parser import HTMLParser
from io import BytesIO
from typing import TypeVar

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
_KEPT_HEADERS = frozenset({
    "auto-submitted", "list-id", "list-unsubscribe", "precedence", "x-autoreply",
    "x-auto-response-suppress", "return-path", "x-forwarded-for", "x-forwarded-to",
})  # fmt: skip
# Headers whose values identify a copy of a message; servers add others (Received, X-*) per copy.
_HASHED_HEADERS = ("from", "to", "cc", "date", "subject", "message-id")
_MAX_ERRORS = 20  # a message with 10,000 broken parts needs one flag, not 10,000 strings
_MAX_REFERENCES = 100
_MAX_ID_CHARS = 998  # RFC 5322 line length; longer "ids" are garbage
_MAX_DATE_CHARS = 256
_MAX_BOUNDARY = 200  # RFC 2046 allows 70; a longer one that never occurs counts as unusable
_MAX_PARAMS = 64  # parameters per Content-Type / Content-Disposition handed to get_param
_ADDRESS_CHARS = 64 * 1024  # of address headers per message handed to getaddresses
_RFC2047_WORK = 250_000  # "=?" count x value length above which decode_header is not tried
_HTML_CLOSE_BUDGET = 20_000_000  # characters HTMLParser.close() may re-scan (see _html_to_text)
# Feedparser work per message, in units of ~0.1 us (see _Bounder._spend): ~0.6 s at most.
_LINE_BUDGET = 6_000_000
_LINE_WEIGHT = 6  # per line, plus one per open multipart
_NESTED_WEIGHT = 4  # per line inside any multipart
_SCAN_WINDOW = 64 * 1024
_FEED_CHUNK = 64 * 1024
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
# Charsets and text cleanup (the stdlib has no "declared charset, else what it really is")

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


# --------------------------------------------------------------------------------------------
# Header values. The parser keeps them raw: str with 8-bit bytes as surrogate escapes.


def _raw_bytes(value: object) -> bytes:
    return str(value).encode("utf-8", "surrogateescape")


def _header_text(value: object) -> str:
    """A raw header value as text: folding removed, 8-bit bytes read as UTF-8 (else cp1252)."""
    text = str(value)
    if not text.isascii():
        text = _decode_bytes(_raw_bytes(text), None)
    return text.replace("\r", "").replace("\n", "")


def _decode_words(text: str) -> str:
    """RFC 2047 encoded words decoded with `email.header.decode_header`; broken ones stay literal.

    decode_header's regex rescans the rest of the value from every "=?", so values with many of
    them and no "?=" would take quadratic time: those are left as they are.
    """
    if "=?" not in text or text.count("=?") * len(text) > _RFC2047_WORK:
        return text
    try:
        chunks = decode_header(text)
    except Exception:  # HeaderParseError on undecodable base64 words
        return text
    out: list[str] = []
    for chunk, charset in chunks:
        if isinstance(chunk, str):
            out.append(chunk)
        elif charset is None:  # unencoded text, which decode_header turned into raw-unicode-escape
            try:
                out.append(chunk.decode("raw-unicode-escape"))
            except UnicodeDecodeError:
                out.append(chunk.decode("latin-1"))
        else:
            out.append(_decode_bytes(chunk, charset))
    return "".join(out)


def _unstructured(value: object) -> str:
    """Value of a free-text header (Subject, List-Id, a filename, ...) as display text."""
    return _clean_line(_decode_words(_header_text(value)))


# --------------------------------------------------------------------------------------------
# Addresses

# No control characters (NUL above all: PostgreSQL refuses it in text columns).
_EMAIL = re.compile(r'(?:"[^"\x00-\x1f\x7f]*"|[^\s"<>(),;:@\\\x00-\x1f\x7f]+)@[^\s"<>(),;:@\\\x00-\x1f\x7f]+')
# Python 3.11.10+/3.12.6+ default to strict=True, which drops a whole header for one bad entry.
_LENIENT = {"strict": False} if "strict" in inspect.signature(getaddresses).parameters else {}


def _usable_email(candidate: str) -> str | None:
    candidate = candidate.strip().strip("<>").strip()
    if candidate.startswith("@") and ":" in candidate:  # obsolete source route "@a,@b:user@host"
        candidate = candidate.rsplit(":", 1)[1]
    if candidate[:7].lower() == "mailto:":
        candidate = candidate[7:]
    if len(candidate) > _MAX_ID_CHARS or not _EMAIL.fullmatch(candidate):
        return None
    return candidate.lower()


def _address(name: str, addr: str) -> Address | None:
    email = _usable_email(addr)
    if email is None:
        # getaddresses keeps "John Doe john@example.com" as one addr-spec; take the word with the @
        words = addr.split()
        with_at = [w for w in words if "@" in w]
        if len(words) < 2 or len(with_at) != 1 or (email := _usable_email(with_at[0])) is None:
            return None
        name = name or " ".join(w for w in words if w is not with_at[0])
    return Address(email=email, name=" ".join(_clean_line(_decode_words(name)).split()))


class _AddressReader:
    """Address headers through `getaddresses`, which costs microseconds per address (and per
    stray "@"): at most `_ADDRESS_CHARS` characters of them per message, thousands of addresses.
    Unusable entries are skipped: one broken recipient must not hide the others."""

    def __init__(self, errors: _Errors) -> None:
        self.errors = errors
        self.remaining = _ADDRESS_CHARS

    def read(self, values: list[str], label: str, *, report: bool = True) -> tuple[Address, ...]:
        found: list[Address] = []
        for value in values:
            text = _header_text(value)
            if len(text) > self.remaining:
                text = text[: max(0, text.rfind(",", 0, self.remaining))]
                self.errors.add(
                    f"address headers longer than {_ADDRESS_CHARS} characters; the rest was ignored"
                )
            self.remaining -= len(text)
            try:
                pairs = getaddresses([text], **_LENIENT)
            except Exception:  # RecursionError on thousands of nested comments or groups
                pairs = []
            addresses = [a for a in (_address(name, addr) for name, addr in pairs) if a is not None]
            # an empty group ("undisclosed-recipients:;") is a valid way of naming nobody
            if report and not addresses and text.strip() and ":" not in text:
                self.errors.add(f"no usable address in {label} header")
            found.extend(addresses)
        return tuple(found)


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
# Bounding the stdlib parser


_T = TypeVar("_T")


def _safely(get: Callable[[], _T], default: _T) -> _T:
    """A stdlib accessor that raises on some broken input (RFC 2231 parameters mixing numbered
    and unnumbered sections, a body-less part declaring base64, 8-bit charset names)."""
    try:
        return get()
    except Exception:
        return default


class _Policy(Compat32):
    """compat32, except that header values are handed out raw (never as `Header` objects) and
    parameter headers are cut at `_MAX_PARAMS` parameters, since `get_param` (which the
    feedparser calls for every multipart) rescans the value for every ";" inside quotes.
    When re-emitting an attached message to measure it, headers are written as they came."""

    def header_fetch_parse(self, name: str, value: str) -> str:  # type: ignore[override]
        if name.lower() in ("content-type", "content-disposition") and value.count(";") > _MAX_PARAMS:
            value = ";".join(value.split(";", _MAX_PARAMS + 1)[: _MAX_PARAMS + 1])
        return value

    def fold_binary(self, name: str, value: str) -> bytes:  # type: ignore[override]
        return _raw_bytes(f"{name}: {value}{self.linesep}")


_POLICY = _Policy()


class _TooManyParts(Exception):
    pass


_EOL = re.compile(rb"\r\n|\r|\n")
# The feedparser cracks lines with StringIO(newline="").readlines(): "\r\n", "\r" and "\n" end them.
_AT_LINE_START = rb"(?<![^\n\r])(?!(?<=\r)\n)"  # (not inside a CRLF)
# Where a header block ends: the first line that email.feedparser.headerRE does not accept.
_NOT_A_HEADER_LINE = re.compile(_AT_LINE_START + rb"(?!From |[\x21-\x39\x3b-\x7e]*:|[\t ])")


def _after_blank_line(buf: bytes, start: int) -> int:
    """End of the first empty line from the line start `start` on (or the end of `buf`)."""
    start = max(0, start - 1)
    ends = [i + n for i, n in ((buf.find(b"\n\n", start), 2), (buf.find(b"\n\r\n", start), 3)) if i >= 0]
    return min(ends, default=len(buf))


def _count_lines(buf: bytes, start: int, end: int) -> int:
    return buf.count(b"\n", start, end) + buf.count(b"\r", start, end) - buf.count(b"\r\n", start, end) + 1


_DASH_LINE = re.compile(rb"--(?<![^\n\r]--)")  # a line starting with "--"
_MAX_REJECTED = 1000  # "--" that were no delimiter line, checked in Python before compiling
# What may follow the boundary on a delimiter line (the feedparser's `boundaryre`, after "--B").
_DELIMITER_TAIL = re.compile(rb"(--)?[ \t]*(?:\r\n|\r|\n|\Z)")


@functools.lru_cache(maxsize=64)
def _delimiter_lines(boundaries: frozenset[bytes]) -> re.Pattern[bytes]:
    """Only the delimiter lines of `boundaries`, at C speed: for mail full of "--" lines."""
    alternatives = b"|".join(re.escape(b) for b in sorted(boundaries))
    return re.compile(_DASH_LINE.pattern + rb"(?:" + alternatives + rb")" + _DELIMITER_TAIL.pattern)


@dataclass(frozen=True, slots=True)
class _Delimiter:
    start: int
    end: int  # after the line end
    closing: bool
    level: int  # index into the open levels


def _read_headers(block: bytes, default_type: str = "text/plain") -> tuple[Message, int]:
    """A header block read by the stdlib: (headers, length of what it left as body)."""
    headers = BytesHeaderParser(policy=_POLICY).parsebytes(block)
    headers.set_default_type(default_type)
    rest = _safely(headers.get_payload, "")  # only a final "From ..." line is ever left over
    return headers, len(rest) if isinstance(rest, str) and rest.isascii() else 0


@dataclass(slots=True)
class _Level:
    """An open container: a multipart (with its boundary) or an attached message (None)."""

    boundary: bytes | None
    digest: bool = False


class _Bounder:
    """Pre-scan of the raw bytes that bounds what the feedparser will see (see module docstring).

    It mirrors the feedparser: a delimiter line of any open multipart ends the current part
    (and all parts nested in the multipart it belongs to), delimiter lines right after one are
    swallowed, a header block ends at the first line that is not a header, and part headers
    are read by the stdlib itself. The scan moves forward in windows, so each byte is searched
    about once.
    """

    def __init__(self, raw: bytes, limits: ParseLimits) -> None:
        self.raw = raw
        self.limits = limits
        self.stack: list[_Level] = []
        self.edits: list[tuple[int, int, bytes]] = []  # (start, end, replacement), in order
        self.errors: list[str] = []
        self.header_error: str | None = None
        self.body_start = 0  # of the top-level message, in `raw`
        self.parts = 1
        self.header_budget = max(0, limits.max_header_bytes)
        self.line_budget = _LINE_BUDGET
        self.rejected = 0  # lines starting with "--" that were no delimiter

    def run(self) -> bytes:
        resume = self._top()
        if resume is not None:
            self._scan(resume)
        if not self.edits:
            return self.raw
        pieces, pos = [], 0
        for start, end, replacement in self.edits:
            pieces += [self.raw[pos:start], replacement]
            pos = end
        pieces.append(self.raw[pos:])
        return b"".join(pieces)

    def _top(self) -> int | None:
        raw, limit = self.raw, max(0, self.limits.max_header_bytes)
        block = self._header_block(0, limit)
        if block is not None:
            kept = self.body_start = block
        else:  # keep the fields that fit, then go on after the blank line that ends the block
            kept = raw.rfind(b"\n", 0, limit) + 1
            self.body_start = _after_blank_line(raw, kept)
            self.header_error = f"header block larger than {limit} bytes; truncated"
            eol = b"\r\n" if raw[kept - 2 : kept] == b"\r\n" else b"\n"
            self.edits.append((kept, self.body_start, eol))
        headers, rest = _read_headers(raw[:kept])
        if block is not None:
            self.body_start -= rest  # never expected: the parser ended the headers earlier
        if not self._spend(0, kept):
            return None
        return self._open(headers, self.body_start, self.body_start)

    def _header_block(self, start: int, budget: int) -> int | None:
        """Where the body of the header block at `start` begins; None when the block is longer
        than `budget` bytes. Like the feedparser, a blank line, a non-header line or a delimiter
        line of an open multipart ends the block; only a blank line is skipped."""
        raw = self.raw
        limit = min(len(raw), start + budget)
        end = _NOT_A_HEADER_LINE.search(raw, start, limit)
        if end is None or (end.start() == limit and not _NOT_A_HEADER_LINE.match(raw, limit)):
            if limit < len(raw):
                return None
            block_end = len(raw)
        else:
            block_end = end.start()
        delimiter = self._find(start, block_end)
        if delimiter is not None:
            return delimiter.start
        blank = _EOL.match(raw, block_end)
        return blank.end() if blank else block_end

    def _find(self, pos: int, end: int, *, at: bool = False) -> _Delimiter | None:
        """The next delimiter line of an open multipart in raw[pos:end] (only at `pos` if `at`).

        The line belongs to the outermost multipart whose boundary it matches: the innermost
        one's matcher ends the current part, but each multipart then re-reads the line with
        only its ancestors' matchers active, so it travels up to the outermost match.

        "--" is found at C speed and checked here; after `_MAX_REJECTED` hits that were no
        delimiter line, a compiled pattern for the open boundaries takes over.
        """
        order = [i for i, level in enumerate(self.stack) if level.boundary is not None]
        raw = self.raw
        while order:
            if self.rejected < _MAX_REJECTED:
                start = raw.find(b"--", pos, end)
                if start < 0 or (at and start != pos):
                    return None
                if start > 0 and raw[start - 1] not in b"\r\n":
                    self.rejected += 1
                    pos = start + 1
                    continue
            else:
                pattern = _delimiter_lines(frozenset(self.stack[i].boundary or b"" for i in order))
                found = pattern.match(raw, pos, end) if at else pattern.search(raw, pos, end)
                if found is None:
                    return None
                start = found.start()
            for index in order:  # who gets the line
                boundary = self.stack[index].boundary or b""
                tail_start = start + 2 + len(boundary)
                if tail_start <= end and raw.startswith(boundary, start + 2):
                    tail = _DELIMITER_TAIL.match(raw, tail_start, end)
                    if tail is not None:
                        return _Delimiter(start, tail.end(), tail.group(1) is not None, index)
            if at:
                return None
            self.rejected += 1
            pos = start + 2
        return None

    def _scan(self, pos: int) -> None:
        raw = self.raw
        while True:
            newline = raw.find(b"\n", pos + _SCAN_WINDOW)
            window = len(raw) if newline < 0 else newline + 1
            found = self._find(pos, window)
            if not self._spend(pos, found.start if found else window):
                return
            if found is None:
                if window >= len(raw):
                    return
                pos = window
                continue
            del self.stack[found.level + 1 :]
            level = self.stack[found.level]
            if found.closing:  # what follows is the parent's text
                self.stack.pop()
                pos = found.end
                continue
            start = found.end
            while (again := self._find(start, len(raw), at=True)) and again.level == found.level:
                start = again.end  # the parser swallows repeated delimiter lines
            default_type = "message/rfc822" if level.digest else "text/plain"
            resume = self._part(start, found.start, default_type)
            if resume is None:
                return
            pos = resume

    def _part(self, start: int, cut_at: int, default_type: str) -> int | None:
        """The header block of a new part at `start`; returns where scanning resumes."""
        self.parts += 1
        if self.parts > self.limits.max_parts:
            return self._truncate(
                cut_at, f"more than {self.limits.max_parts} MIME parts; the rest was ignored"
            )
        body_start = self._header_block(start, self.header_budget)
        if body_start is None:
            message = "MIME part headers exceed the header size limit; the rest was ignored"
            return self._truncate(cut_at, message)
        headers, rest = _read_headers(self.raw[start:body_start], default_type)
        body_start -= rest
        self.header_budget -= body_start - start
        if not self._spend(start, body_start):
            return None
        return self._open(headers, body_start, cut_at)

    def _open(self, headers: Message, body_start: int, cut_at: int) -> int | None:
        """Enter the container a header block declares, if any, as the feedparser will."""
        content_type = headers.get_content_type()
        if content_type.startswith("multipart/"):
            boundary = _safely(headers.get_boundary, None)  # the parser fails where this does
            try:
                level = _Level(boundary.encode("ascii", "surrogateescape"))  # type: ignore[union-attr]
            except (AttributeError, UnicodeError):  # no boundary, or one that can never match
                return body_start
            level.digest = content_type == "multipart/digest"
        elif content_type.startswith("message/") and content_type != "message/delivery-status":
            level = _Level(None)
        else:
            return body_start
        if len(self.stack) >= self.limits.max_mime_depth:
            self.errors.append(
                f"MIME nesting deeper than {self.limits.max_mime_depth} levels; inner parts ignored"
            )
            found = self._find(body_start, len(self.raw))
            resume = found.start if found else len(self.raw)
            if resume > body_start:
                self.edits.append((body_start, resume, b""))
            return resume
        self.stack.append(level)
        if level.boundary is None:  # an attached message: its header block follows at once
            return self._part(body_start, cut_at, "text/plain")
        return body_start

    def _spend(self, start: int, end: int) -> bool:
        """Charge the parser's work on raw[start:end] (at most a scan window or a header block)
        to the line budget, or truncate at `start`. A line costs more inside multiparts, since
        the feedparser tests it against every open boundary, and a line starting with "--" more
        again: the boundaries are compared further, by the parser and by this scan."""
        raw = self.raw
        boundaries = [level.boundary for level in self.stack if level.boundary is not None]
        cost = _count_lines(raw, start, end) * (
            _LINE_WEIGHT + (_NESTED_WEIGHT if boundaries else 0) + len(boundaries)
        )
        if boundaries:
            dashes = raw.count(b"\n--", start, end) + raw.count(b"\r--", start, end)
            cost += dashes * 2 * (len(boundaries) + sum(map(len, boundaries)) // 64)
        if end > start and cost > self.line_budget:
            self._truncate(
                start, "message too long or too deeply nested to parse in full; the rest was ignored"
            )
            return False
        self.line_budget -= cost
        return True

    def _truncate(self, at: int, message: str) -> None:
        """Drop raw[at:] and close the open multiparts, so the parser sees no damage of ours."""
        self.errors.append(message)
        self.edits = [edit for edit in self.edits if edit[0] < at]
        tail = b"".join(b"--" + lvl.boundary + b"--\r\n" for lvl in reversed(self.stack) if lvl.boundary)
        if tail and at > 0 and self.raw[at - 1 : at] not in (b"\n", b"\r"):
            tail = b"\r\n" + tail
        self.edits.append((at, len(self.raw), tail))
        self.stack.clear()


def _feed(data: bytes, limits: ParseLimits) -> tuple[Message, str | None]:
    """The stdlib's parse of the bounded bytes: (root message, error that stopped it early).

    Its message factory counts parts as a backstop: the pre-scan cuts at the same count, but
    does not count the blocks of message/delivery-status parts."""
    made: list[Message] = []

    def factory(policy: Compat32) -> Message:
        if len(made) >= max(1, limits.max_parts):
            raise _TooManyParts
        made.append(Message(policy=policy))
        return made[-1]

    parser = BytesFeedParser(policy=_POLICY.clone(message_factory=factory))
    try:
        for start in range(0, len(data), _FEED_CHUNK):
            parser.feed(data[start : start + _FEED_CHUNK])
        return parser.close(), None
    except _TooManyParts:
        error = f"more than {limits.max_parts} MIME parts; the rest was ignored"
    except Exception as exc:  # defensive: keep whatever was parsed before the failure
        error = f"MIME structure could not be parsed ({type(exc).__name__})"
    if not made:
        raise ValueError("no message was parsed")
    return made[0], error


# --------------------------------------------------------------------------------------------
# From the stdlib's message tree to ParsedMessage

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


def _payload(part: Message, content_type: str, errors: _Errors) -> bytes:
    """Part content with its Content-Transfer-Encoding undone by `get_payload(decode=True)`."""
    known = len(part.defects)
    data = _safely(lambda: part.get_payload(decode=True), None)
    if not isinstance(data, bytes):
        return b""
    damage = [d for d in part.defects[known:] if isinstance(d, _BASE64_DAMAGE)]
    if not damage:
        return data
    compact = _raw_bytes(_safely(part.get_payload, "")).translate(None, b" \t\r\n\x0b\x0c")
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


def _leaf(content: _Content, part: Message) -> None:
    content_type = part.get_content_type()
    attached = part.get_content_disposition() == "attachment" or _safely(part.get_filename, None) is not None
    if content_type in ("text/plain", "text/html") and not attached:
        if content_type == "text/plain" and content.text_body is None:
            data = _payload(part, content_type, content.errors)
            content.text_body = _body_text(content, part, data, content_type)
        elif content_type == "text/html" and content.html_body is None:
            data = _payload(part, content_type, content.errors)
            content.html_body = _body_text(content, part, data, content_type)
        return  # later inline alternatives of the body are neither body nor attachment
    content.attachments.append(
        _attachment(part, content_type, len(_payload(part, content_type, content.errors)))
    )


def _message_size(messages: list[Message]) -> int:
    try:
        out = BytesIO()
        for message in messages:
            BytesGenerator(out, mangle_from_=False).flatten(message)
        return len(out.getvalue())
    except Exception:
        return 0


def _attached_message(content: _Content, part: Message) -> None:
    """A message/* part: an attachment, plus the sender of a forwarded message. Not walked into."""
    content_type = part.get_content_type()
    inner = [m for m in part.get_payload() if isinstance(m, Message)]
    content.attachments.append(_attachment(part, content_type, _message_size(inner)))
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


# --------------------------------------------------------------------------------------------
# Whole message


def _content_hash(fields: list[tuple[str, str]], body: bytes) -> str:
    """sha256 over the identifying headers and the body, independent of per-copy server headers.

    Raw header bytes with collapsed whitespace survive refolding; the body is compared with
    LF line ends and without trailing newlines, which servers add or strip per copy.
    """
    digest = hashlib.sha256()
    for name in _HASHED_HEADERS:
        values = [_raw_bytes(value) for key, value in fields if key == name]
        digest.update(name.encode() + b":" + b"\x1f".join(b" ".join(v.split()) for v in values) + b"\n")
    digest.update(b"\n")
    digest.update(body.replace(b"\r\n", b"\n").rstrip(b"\n"))
    return digest.hexdigest()


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


def _parse(raw: bytes, internal_date: datetime | None, limits: ParseLimits) -> ParsedMessage:
    errors = _Errors()
    bounder = _Bounder(raw, limits)
    data = bounder.run()
    root, feed_error = _feed(data, limits)
    fields = [(str(name).strip().lower(), value) for name, value in root.raw_items()]

    def all_of(name: str) -> list[str]:
        return [value for key, value in fields if key == name]

    def first(name: str) -> str | None:
        values = all_of(name)
        return values[0] if values else None

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

    content_hash = _content_hash(fields, raw[bounder.body_start :])
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

    for message in [*bounder.errors, feed_error]:
        if message:
            errors.add(message)
    content = _Content(limits=limits, errors=errors, addresses=addresses)
    try:
        _walk(content, root)
    except Exception as exc:
        errors.add(f"MIME structure could not be parsed ({type(exc).__name__})")
    html_body = content.html_body or ""
    text_body = content.text_body
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
        attachments=tuple(content.attachments),
        size=len(raw),
        recipient_count=count_recipients(to, cc, bcc),
        headers=headers,
        attached_message_senders=tuple(content.senders),
        parse_errors=errors.result(),
    )
