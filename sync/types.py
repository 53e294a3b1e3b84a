"""Plain values that cross layers.

Everything here is a frozen dataclass with no behaviour tied to a library: `imap.py` produces
`RawMessage` and `FolderStatus`, `sync.parse` turns bytes into `ParsedMessage`, and the folder pass
converts a `ParsedMessage` into what `crm.mailstore` takes, so `crm` never sees IMAP types.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from core.types import FolderRole

__all__ = [
    "Address",
    "Attachment",
    "FolderInfo",
    "FolderRole",
    "FolderStatus",
    "MessageMeta",
    "ParsedMessage",
    "RawMessage",
]


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox from an address header. `email` is lower-cased for matching."""

    email: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str | None
    content_type: str
    size: int
    inline: bool = False
    content_id: str | None = None


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """What the parser makes of one message's raw bytes. Built by `sync.parse.parse_message`.

    `parse_errors` is non-empty when the message was malformed: the message is still stored
    (with a flag), never dropped.
    """

    message_id: str  # always "<...>"; synthetic when the header was missing or unusable
    message_id_synthetic: bool
    content_hash: str  # sha256 hex of the content that identifies a copy of this message
    subject: str
    normalized_subject: str  # Re:/Fwd:/AW:/TR:... prefixes and list tags stripped, lower-cased
    date: datetime | None  # timezone-aware UTC; None when missing and no INTERNALDATE was given
    from_: Address | None
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    reply_to: tuple[Address, ...] = ()
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    text_body: str = ""
    html_body: str = ""
    attachments: tuple[Attachment, ...] = ()
    size: int = 0
    recipient_count: int = 0  # distinct addresses over To + Cc + Bcc
    # A few headers that linking rules need (lower-cased names): auto-submitted, list-id,
    # precedence, x-autoreply, x-auto-response-suppress, return-path.
    headers: tuple[tuple[str, str], ...] = ()
    # From addresses of attached message/rfc822 parts (forwarded-as-attachment mail).
    attached_message_senders: tuple[Address, ...] = ()
    parse_errors: tuple[str, ...] = ()

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass(frozen=True, slots=True)
class FolderStatus:
    """What the server says about a folder (STATUS or SELECT). Values may be None or 0 when a
    server omits or mangles them; `plan.py` decides what to trust."""

    name: str
    uidvalidity: int | None
    uidnext: int | None
    messages: int | None
    highestmodseq: int | None = None


@dataclass(frozen=True, slots=True)
class MessageMeta:
    """Cheap per-UID facts fetched before any body: decides what to download."""

    uid: int
    size: int
    flags: tuple[str, ...]
    internal_date: datetime | None
    header_bytes: bytes = b""  # a few header fields (Message-ID, From, To, Cc, Bcc, ...)


@dataclass(frozen=True, slots=True)
class RawMessage:
    uid: int
    body: bytes
    flags: tuple[str, ...] = ()
    internal_date: datetime | None = None
    size: int = 0
    headers_only: bool = False  # True when the body was not downloaded (oversized mail)


@dataclass(frozen=True, slots=True)
class FolderInfo:
    """One entry of a LIST response."""

    name: str
    delimiter: str | None
    flags: tuple[str, ...] = field(default_factory=tuple)
