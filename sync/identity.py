"""Is this the message we already hold under its Message-ID? (pure)

A Message-ID is meant to be unique, and the sync stores each message once by it: the same mail in
INBOX and Sent, in two accounts, or seen again after a UIDVALIDITY change is one message with
several locations. Buggy mailers reuse Message-IDs for different mail, though (a customer's
reply carrying our colleague's ID), so a known Message-ID is the same message only when the
sender, subject and date agree too. These come from the few header fields fetched before any
body, so recognising a copy never costs a download. Another message reusing the ID is stored as
its own message under a key derived from its content (stable across passes and UIDVALIDITY
changes, so re-keying still finds it) and flagged.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from crm.mailstore import KnownIdentity
from sync.types import ParsedMessage

REUSED_FLAG = "Message-ID {message_id} is also used by a different message; stored as a message of its own"


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def same_message(head: ParsedMessage, known: KnownIdentity, *, header_date: datetime | None) -> bool:
    """`head` (parsed from its headers) is the stored `known` message. `header_date` is the Date
    header's value (None when missing or unusable: a stored copy may then carry its INTERNALDATE,
    which differs per copy, so the date is not compared)."""
    sender = head.from_.email if head.from_ else ""
    if sender.lower() != known.from_email.lower():
        return False
    if head.subject.strip() != known.subject.strip():
        return False
    mine, theirs = _utc(header_date), _utc(known.date)
    return mine is None or theirs is None or mine.replace(microsecond=0) == theirs.replace(microsecond=0)


def reused_key(message_id: str, content_hash: str) -> str:
    """The key of a message whose Message-ID another message already holds."""
    return f"<{content_hash[:32]}.reused@crm-inbox.invalid>"


def as_reused(parsed: ParsedMessage) -> ParsedMessage:
    """`parsed` stored under its own key, flagged (the original ID stays in its headers/raw)."""
    return replace(
        parsed,
        message_id=reused_key(parsed.message_id, parsed.content_hash),
        parse_errors=(*parsed.parse_errors, REUSED_FLAG.format(message_id=parsed.message_id)),
    )
