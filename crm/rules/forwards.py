"""Find the original sender of mail that a user forwarded inline.

Why this exists: when a salesperson forwards a customer's email into a connected mailbox, the
message's From header is the salesperson, who is never a CRM contact. The record the message
belongs to is the customer's, and the only place the customer's address survives is the
forwarded header block that the mail client pasted into the body. This module recognises those
blocks in the formats real clients produce (Gmail, Outlook, Apple Mail, Thunderbird; English,
French, German, Spanish and a few more) and returns the senders they name.

Bodies are untrusted and can be huge, so the work is bounded: only the first `MAX_SCAN_CHARS`
characters are looked at, the scan is line by line (each line is examined a constant number of
times), and the only regular expressions run on header values capped at `_MAX_VALUE_CHARS`.
"""

from __future__ import annotations

import enum
import re
import unicodedata

from crm.rules.addresses import checked_address

__all__ = ["MAX_SCAN_CHARS", "find_forwarded_senders", "parse_mailbox"]

MAX_SCAN_CHARS = 200_000
_MAX_VALUE_CHARS = 1_000
_MAX_MARKER_CHARS = 120
_MAX_KEY_CHARS = 32
_MAX_BLANKS_AFTER_MARKER = 3
_MAX_BLOCK_LINES = 16
_MAX_CONTINUATION_LINES = 3


class _Field(enum.Enum):
    FROM = enum.auto()
    DATE = enum.auto()
    TO = enum.auto()
    CC = enum.auto()
    SUBJECT = enum.auto()
    OTHER = enum.auto()


# Header labels as clients write them in forwarded blocks, folded (lower-case, no accents).
_KEYS: dict[str, _Field] = {
    **dict.fromkeys(("from", "de", "von", "da", "van", "fra", "od"), _Field.FROM),
    **dict.fromkeys(
        (
            "date",
            "sent",
            "envoye",
            "envoye le",
            "datum",
            "gesendet",
            "fecha",
            "enviado",
            "enviado el",
            "data",
            "inviato",
            "verzonden",
        ),
        _Field.DATE,
    ),
    **dict.fromkeys(("to", "a", "pour", "an", "para", "aan", "til"), _Field.TO),
    **dict.fromkeys(("cc", "cci", "bcc", "kopie", "copie a"), _Field.CC),
    **dict.fromkeys(
        ("subject", "objet", "sujet", "betreff", "asunto", "oggetto", "onderwerp", "assunto", "emne"),
        _Field.SUBJECT,
    ),
    **dict.fromkeys(
        ("reply-to", "repondre a", "antwort an", "responder a", "importance", "priority"), _Field.OTHER
    ),
}

# Lines like "---------- Forwarded message ---------" (text between the dashes, folded).
_SEPARATOR_PHRASES = frozenset(
    {
        "forwarded message",
        "original message",
        "message transfere",
        "message d'origine",
        "message original",
        "weitergeleitete nachricht",
        "ursprungliche nachricht",
        "original-nachricht",
        "mensaje reenviado",
        "mensaje original",
        "messaggio inoltrato",
        "messaggio originale",
        "doorgestuurd bericht",
        "oorspronkelijk bericht",
        "mensagem encaminhada",
        "mensagem original",
    }
)

# Lines like "Begin forwarded message:" (text before the colon, folded).
_INTRO_PHRASES = frozenset(
    {
        "begin forwarded message",
        "debut du message reexpedie",
        "debut du message transfere",
        "anfang der weitergeleiteten nachricht",
        "inicio del mensaje reenviado",
        "comienzo del mensaje reenviado",
        "inizio messaggio inoltrato",
        "begin doorgestuurd bericht",
        "inicio da mensagem reencaminhada",
    }
)

# Non-breaking and other exotic spaces become plain spaces; zero-width characters vanish.
_SPACE_TABLE = {
    **dict.fromkeys(map(ord, "\u00a0\u2007\u202f\u2002\u2003\u2009\t"), " "),
    **dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff"), None),
}

# Negated character classes only: each match attempt is linear in the (capped) value length.
_ADDR = r"[^\s<>\[\]()\"',;:]+@[^\s<>\[\]()\"',;:]+"
_MAILTO_RE = re.compile(r"mailto:\s*(" + _ADDR + ")", re.IGNORECASE)
_ANGLE_RE = re.compile(r"<\s*(" + _ADDR + r")\s*>")
_BARE_RE = re.compile(_ADDR)
_NAME_JUNK = " \t\"'*<>[]()"


def _fold(text: str) -> str:
    """Lower-case, strip accents, unify apostrophes and whitespace: for comparing labels."""
    decomposed = unicodedata.normalize("NFKD", text.replace("\u2019", "'"))
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(stripped.lower().split())


def _unquote(line: str) -> str:
    """Drop the "> " quoting that replies add in front of a forwarded block."""
    return line.lstrip(" >").strip()


def _is_marker(line: str) -> bool:
    """Does this (unquoted) line introduce a forwarded or original-message header block?"""
    if not line or len(line) > _MAX_MARKER_CHARS:
        return False
    if len(line) >= 10 and line.strip("_") == "":  # Outlook's "________________________________"
        return True
    if line.startswith("--"):
        return _fold(line.strip("-—– ")) in _SEPARATOR_PHRASES
    if line.endswith(":"):
        return _fold(line[:-1]) in _INTRO_PHRASES
    return False


def _split_key(line: str) -> tuple[_Field, str] | None:
    """Split "From: value" (also "*De :* value", "Envoyé : ...") into a known field and value."""
    colon = line.find(":", 0, _MAX_KEY_CHARS)
    if colon <= 0:
        return None
    field = _KEYS.get(_fold(line[:colon].strip(" *_")))
    if field is None:
        return None
    return field, line[colon + 1 : colon + 1 + _MAX_VALUE_CHARS].strip(" *_")


def _incomplete_mailbox(value: str) -> bool:
    return "@" not in value or value.count("<") > value.count(">") or value.count("[") > value.count("]")


def _read_block(lines: list[str], start: int, *, after_marker: bool) -> tuple[dict[_Field, str], int]:
    """Read "Key: value" lines from `start`; return the fields found and the index after them."""
    n = len(lines)
    j = start
    if after_marker:
        blanks = 0
        while j < n and not _unquote(lines[j]) and blanks < _MAX_BLANKS_AFTER_MARKER:
            j += 1
            blanks += 1
    fields: dict[_Field, str] = {}
    last: _Field | None = None
    continuation = 0
    read = 0
    while j < n and read < _MAX_BLOCK_LINES:
        line = _unquote(lines[j])
        if not line or _is_marker(line):
            break
        keyed = _split_key(line)
        if keyed is not None:
            field, value = keyed
            if field in fields and field is _Field.FROM:
                break  # a second block follows without a blank line
            fields.setdefault(field, value)
            last, continuation = field, 0
        elif last in (_Field.FROM, _Field.TO, _Field.CC) and continuation < _MAX_CONTINUATION_LINES:
            # Wrapped header value ("From: Jane Doe" / "<jane@acme.test>", long To: lists).
            if last is _Field.FROM:
                if not _incomplete_mailbox(fields[last]):
                    break
                fields[last] = f"{fields[last]} {line[:_MAX_VALUE_CHARS]}"
            continuation += 1
        else:
            break
        j += 1
        read += 1
    return fields, j


def _clean_email(raw: str) -> str | None:
    return checked_address(raw)


def _clean_name(raw: str) -> str:
    name = " ".join(raw.split()).strip(_NAME_JUNK)
    if "@" in name:  # "jane@acme.test <jane@acme.test>" carries no name
        return ""
    return name


def parse_mailbox(value: str) -> tuple[str, str] | None:
    """Parse one From value into (email, name).

    Accepts "Name <email>", "Name [mailto:email]", "Name <email<mailto:email>>" (Outlook's
    rendering of links), '"Name" <email>', "email (Name)" and a bare email. The email is
    lower-cased; the name is "" when there is none. Returns None when no address is present
    (Exchange sometimes writes only a display name for internal senders).
    """
    value = value[:_MAX_VALUE_CHARS]
    for pattern in (_MAILTO_RE, _ANGLE_RE):
        match = pattern.search(value)
        if match is not None:
            email = _clean_email(match.group(1))
            if email is None:
                return None
            prefix = value[: match.start()].rstrip(" [<")
            if "<" in prefix:  # "Name <email<mailto:email>>": drop the "<email" part
                prefix = prefix[: prefix.find("<")]
            return email, _clean_name(prefix)
    match = _BARE_RE.search(value)
    if match is None:
        return None
    email = _clean_email(match.group(0))
    if email is None:
        return None
    return email, _clean_name(value[: match.start()] + " " + value[match.end() :])


def _prepare(text_body: str) -> list[str]:
    text = text_body[:MAX_SCAN_CHARS]
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_SPACE_TABLE)
    return unicodedata.normalize("NFC", text).split("\n")


def find_forwarded_senders(text_body: str) -> tuple[tuple[str, str], ...]:
    """Return (email, name) of the sender named in each inline-forwarded block, outermost first.

    A block counts when it follows a forward/original-message marker (Gmail, Outlook, Apple
    Mail, Thunderbird separators in several languages) and has a From line with an address, or,
    without a marker, when it is an Outlook-style header block: a From line followed by a
    date/sent line and a subject line. Each address is returned once (at its first position).
    """
    if text_body.find("@", 0, MAX_SCAN_CHARS) < 0:
        # Every sender found is an address in the scanned text (`parse_mailbox` needs its "@"),
        # and preparing the text never makes one: most mail is answered here.
        return ()
    lines = _prepare(text_body)
    found: list[tuple[str, str]] = []
    seen: set[str] = set()
    i = 0
    n = len(lines)
    while i < n:
        raw = lines[i]
        if ":" not in raw and "-" not in raw and "_" not in raw:
            # Neither a marker ("--...", "___...", "...:") nor a "Key: value" line: skipped
            # without the per-line work below (most lines of a body).
            i += 1
            continue
        line = _unquote(raw)
        fields: dict[_Field, str] | None = None
        nxt = i + 1
        if _is_marker(line):
            fields, nxt = _read_block(lines, i + 1, after_marker=True)
        else:
            keyed = _split_key(line)
            if keyed is not None and keyed[0] is _Field.FROM:
                fields, nxt = _read_block(lines, i, after_marker=False)
                if _Field.DATE not in fields or _Field.SUBJECT not in fields:
                    fields = None
        if fields is None:
            i += 1
            continue
        sender = parse_mailbox(fields[_Field.FROM]) if _Field.FROM in fields else None
        if sender is not None and sender[0] not in seen:
            seen.add(sender[0])
            found.append(sender)
        i = max(nxt, i + 1)
    return tuple(found)
