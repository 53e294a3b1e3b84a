"""Header fields: subjects, addresses, message ids, dates, and the content hash that
identifies copies of one message.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
import unicodedata
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from email.utils import getaddresses, parsedate_to_datetime

from dateutil import parser as dateutil_parser

from sync.parse.bounds import _Errors
from sync.parse.charsets import _clean_line, _decode_words, _header_text, _raw_bytes
from sync.types import Address

# Headers that linking rules look at; everything else is dropped to keep the record small.
_KEPT_HEADERS = frozenset({
    "auto-submitted", "list-id", "list-unsubscribe", "precedence", "x-autoreply",
    "x-auto-response-suppress", "return-path", "x-forwarded-for", "x-forwarded-to",
})  # fmt: skip
# Headers whose values identify a copy of a message; servers add others (Received, X-*) per copy.
_HASHED_HEADERS = ("from", "to", "cc", "date", "subject", "message-id")
_HASHED_NAMES = frozenset(_HASHED_HEADERS)
_MAX_REFERENCES = 100
_MAX_ID_CHARS = 998  # RFC 5322 line length; longer "ids" are garbage
_MAX_DATE_CHARS = 256
_ADDRESS_CHARS = 64 * 1024  # of address headers per message handed to getaddresses
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


def _read_addresses(text: str) -> tuple[Address, ...]:
    try:
        pairs = getaddresses([text], **_LENIENT)
    except Exception:  # RecursionError on thousands of nested comments or groups
        pairs = []
    return tuple(a for a in (_address(name, addr) for name, addr in pairs) if a is not None)


# The same address headers come back message after message (a shared inbox's own address, the
# regular correspondents), and in process each message's are read twice (header pre-fetch, then
# the full parse): short values are remembered. A pure function of the text; `Address` is frozen.
_CACHED_CHARS = 1024  # at most ~8 MiB of remembered values and addresses
_addresses_in = functools.lru_cache(maxsize=2048)(_read_addresses)


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
            addresses = _addresses_in(text) if len(text) <= _CACHED_CHARS else _read_addresses(text)
            # an empty group ("undisclosed-recipients:;") is a valid way of naming nobody
            if report and not addresses and text.strip() and ":" not in text:
                self.errors.add(f"no usable address in {label} header")
            found.extend(addresses)
        return tuple(found)


# --------------------------------------------------------------------------------------------
# Message ids and dates

_ANGLE_ID = re.compile(r"<\s*([^<>\s]+)\s*>")
_COMMENTS = re.compile(r"\([^()]*\)")


# Whitespace (str.isspace's set: re's \s in str patterns), angle brackets, control characters.
_BAD_ID_CHAR = re.compile(r"[\s<>\x00-\x1f\x7f]")


def _usable_id(ident: str) -> str | None:
    ident = ident.strip().strip("<>")
    if not ident or len(ident) > _MAX_ID_CHARS or _BAD_ID_CHAR.search(ident):
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


def _content_hash(fields: list[tuple[str, str]], body: bytes) -> str:
    """sha256 over the identifying headers and the body, independent of per-copy server headers.

    Raw header bytes with collapsed whitespace survive refolding; the body is compared with
    LF line ends and without trailing newlines, which servers add or strip per copy.
    """
    hashed: dict[str, list[bytes]] = {}
    for key, value in fields:  # one pass over the fields, whatever their number
        if key in _HASHED_NAMES:
            hashed.setdefault(key, []).append(b" ".join(_raw_bytes(value).split()))
    lines = [name.encode() + b":" + b"\x1f".join(hashed.get(name, ())) + b"\n" for name in _HASHED_HEADERS]
    digest = hashlib.sha256(b"".join(lines) + b"\n")
    digest.update(body.replace(b"\r\n", b"\n").rstrip(b"\n"))
    return digest.hexdigest()
