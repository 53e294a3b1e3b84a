"""Keyset pagination and search helpers shared by the list services (inbox, timelines, records).

A cursor is the (timestamp, id) of the last row of a page, opaque to clients: the next page starts
strictly after it, so a row arriving meanwhile never shifts a page and page 500 costs page 1.
"""

from __future__ import annotations

import base64
import binascii
from datetime import UTC, datetime

from core.errors import InvalidInput

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # where a row without a date sorts


def encode_cursor(when: datetime | None, ident: int) -> str:
    stamp = (when or EPOCH).astimezone(UTC).isoformat()
    return base64.urlsafe_b64encode(f"{stamp}|{ident}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        stamp, ident = raw.split("|", 1)
        when = datetime.fromisoformat(stamp)
        if when.tzinfo is None:
            raise ValueError("naive")
        return when, int(ident)
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise InvalidInput(
            "invalid_cursor", "The page cursor is not valid: start again from the first page.", field="cursor"
        ) from exc


def like_pattern(text: str) -> str:
    """`%text%` for LIKE with the wildcards in `text` escaped (use with escape="\\")."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
