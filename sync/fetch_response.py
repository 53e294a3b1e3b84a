"""Pure: the usual answer to our UID FETCH commands, read without imapclient's general parser.

imapclient reads a FETCH response with a tokenizer written in Python that looks at every byte of
every response line: for the header pre-fetch (UID, RFC822.SIZE, INTERNALDATE, FLAGS and a
header literal) that costs more CPU than reading the bytes off the TLS socket, in the process
that also stores (measured ~85 us per message under load, against ~20 for a body alone).

`read_quick` takes the response lines as imaplib hands them out and reads them only when every
line has the shape servers send for our commands (`N (ITEM VALUE ... [BODY[...] {n}]`, then the
literal, then `)`), each item one of the few we ask for, written in its simplest form. It gives
exactly what `imapclient.response_parser.parse_fetch_response(lines, normalise_times=False,
uid_is_key=True)` gives for such lines (tests/sync/test_fetch_response.py compares them), and
None for anything else, which imapclient's parser then reads as before: unsolicited or split
responses, other items, quoted or escaped forms, NIL, numbers with leading zeros.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

_NUMBER = rb"(?:0|[1-9][0-9]{0,18})"
# One line with a literal last: imaplib splits it into (line up to "{n}", literal) and ")".
_LITERAL_LINE = re.compile(rb"(" + _NUMBER + rb") \((?:(.*) )?(BODY\[[^\]\r\n]*\]) \{([0-9]{1,12})\}", re.S)
_PLAIN_LINE = re.compile(rb"(" + _NUMBER + rb") \((.*)\)", re.S)
_ITEM = re.compile(
    rb"(UID|RFC822\.SIZE) (" + _NUMBER + rb")"
    rb'|(INTERNALDATE) "([^"\\\r\n]*)"'
    rb"|(FLAGS) \(((?:\\?[A-Za-z$][A-Za-z0-9_.$-]*(?: \\?[A-Za-z$][A-Za-z0-9_.$-]*)*)?)\)"
)


def _items(text: bytes, convert_date: Callable[[bytes], datetime | None]) -> dict[bytes, Any] | None:
    """The items of one response, or None unless each is a known one, written simply, once."""
    out: dict[bytes, Any] = {}
    pos, end = 0, len(text)
    while pos < end:
        match = _ITEM.match(text, pos)
        if match is None:
            return None
        number_name, number, date_name, date, flags_name, flags = match.groups()
        value: Any
        if number_name is not None:
            name, value = number_name, int(number)
        elif date_name is not None:
            name, value = date_name, convert_date(date)
        else:
            atoms = flags.split(b" ") if flags else []
            if any(atom.upper() == b"NIL" for atom in atoms):  # imapclient reads NIL as None
                return None
            name, value = flags_name, tuple(atoms)
        if name in out:
            return None
        out[name] = value
        pos = match.end()
        if pos < end:
            if text[pos : pos + 1] != b" ":
                return None
            pos += 1
            if pos == end:
                return None
    return out


def read_quick(
    lines: Sequence[Any], convert_date: Callable[[bytes], datetime | None]
) -> dict[int, dict[bytes, Any]] | None:
    """{UID: {ITEM: value, b"SEQ": sequence number}} as imapclient's parser reads `lines`, or
    None when they are not all of the usual shape. `convert_date`: INTERNALDATE as imapclient
    converts it (None when unreadable)."""
    out: dict[int, dict[bytes, Any]] = {}
    index, count = 0, len(lines)
    while index < count:
        line = lines[index]
        literal: bytes | None = None
        if isinstance(line, tuple):
            if len(line) != 2 or index + 1 >= count or lines[index + 1] != b")":
                return None
            head, literal = line
            if not isinstance(head, bytes) or not isinstance(literal, bytes):
                return None
            match = _LITERAL_LINE.fullmatch(head)
            index += 2
        elif isinstance(line, bytes):
            match = _PLAIN_LINE.fullmatch(line)
            index += 1
        else:
            return None
        if match is None:
            return None
        items = _items(match.group(2) or b"", convert_date)
        if items is None or b"UID" not in items:
            return None
        uid = items.pop(b"UID")
        if uid in out:  # one message in two responses: imapclient merges them
            return None
        if literal is not None:
            key = match.group(3).upper()
            if key in items or len(literal) != int(match.group(4)):
                return None
            items[key] = literal
        items[b"SEQ"] = int(match.group(1))
        out[uid] = items
    return out
