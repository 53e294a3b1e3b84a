"""Enums shared by the tables and the layers, and `utcnow`. The column types (`UTCDateTime`,
`StrEnumType`) live in `core.column_types` and are still importable from here, loaded on first
use: this module must not import SQLAlchemy (the parse workers import it for `FolderRole`)."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from core.column_types import StrEnumType, UTCDateTime  # noqa: F401  (re-exported below)


def __getattr__(name: str) -> Any:
    """`from core.types import UTCDateTime` (models, migrations) without importing SQLAlchemy
    for every user of an enum."""
    if name in ("UTCDateTime", "StrEnumType"):
        from core import column_types

        return getattr(column_types, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def utcnow() -> datetime:
    return datetime.now(UTC)


class Security(enum.StrEnum):
    """How a connection is protected. PLAIN only when an admin asks for it explicitly."""

    TLS = "tls"  # implicit TLS (IMAPS 993, SMTPS 465)
    STARTTLS = "starttls"  # upgrade required; never a silent fallback to plaintext
    PLAIN = "plain"


class AccountStatus(enum.StrEnum):
    NEW = "new"
    OK = "ok"
    AUTH_FAILED = "auth_failed"
    NEEDS_CREDENTIALS = "needs_credentials"  # stopped retrying until the password changes
    NEEDS_RECONNECT = "needs_reconnect"  # OAuth: the provider refused the refresh token
    KEY_MISMATCH = "key_mismatch"  # a stored password does not decrypt with the current key
    TLS_ERROR = "tls_error"
    HOST_NOT_FOUND = "host_not_found"
    CONNECTION_FAILED = "connection_failed"
    FOLDER_MISSING = "folder_missing"
    ERROR = "error"


class FolderRole(enum.StrEnum):
    INBOX = "inbox"
    SENT = "sent"


class FolderSyncStatus(enum.StrEnum):
    OK = "ok"
    # UIDVALIDITY changed too often: resyncing again could loop forever, an admin must look.
    UIDVALIDITY_UNSTABLE = "uidvalidity_unstable"


class UidState(enum.StrEnum):
    STORED = "stored"
    SKIPPED = "skipped"
    QUARANTINED = "quarantined"


class SkipReason(enum.StrEnum):
    TOO_MANY_RECIPIENTS = "too_many_recipients"
    # Mail arriving through a forwarding address that must never start a conversation (0020).
    AUTOMATED = "automated"  # Auto-Submitted, auto-replies
    BOUNCE = "bounce"  # null sender, delivery status notifications
    OWN_MAIL = "own_mail"  # our own outgoing mail coming back, or mail from the channel itself


class AccountKind(enum.StrEnum):
    """Where an account's mail comes from (0020). A forwarding account has no IMAP server: mail
    reaches it over SMTP/LMTP at its hosted address (sync/inbound.py) and is stored in one
    virtual folder, so quota, access, signatures, sending and the inbox views treat it as any
    other account."""

    IMAP = "imap"
    FORWARDING = "forwarding"


class DeliveryOutcome(enum.StrEnum):
    """What became of one message handed to a forwarding address."""

    STORED = "stored"  # a new message, or a known one seen again through this address
    SKIPPED = "skipped"  # recorded but never a conversation (automated, bounce, own mail, >100 rcpt)
    CONFIRMATION = "confirmation"  # a provider's forwarding confirmation, shown to the admin
    TEST = "test"  # our own "send a test" message came back through the forward


class TicketStage(enum.StrEnum):
    NEW = "new"
    WAITING = "waiting"
    IN_PROGRESS = "in_progress"
    CLOSED = "closed"


class TicketPriority(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"


class TicketChange(enum.StrEnum):
    """What one entry of a ticket's history records."""

    OPENED = "opened"
    STAGE = "stage"
    PRIORITY = "priority"
    OWNER = "owner"
    MERGED = "merged"  # another ticket's conversation was merged into this one's


class Direction(enum.StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"


class RunStatus(enum.StrEnum):
    RUNNING = "running"
    OK = "ok"
    PARTIAL = "partial"  # some folder or message failed, the rest synced
    FAILED = "failed"
    INTERRUPTED = "interrupted"


class ConversationStatus(enum.StrEnum):
    """Where a team stands with a conversation. A snoozed one counts as open again once its
    time has come (or when a customer writes), without a job having to wake it."""

    OPEN = "open"
    PENDING = "pending"  # waiting on someone outside the team
    SNOOZED = "snoozed"
    CLOSED = "closed"


class ActivityKind(enum.StrEnum):
    """What happened, in a conversation's history and the tenant's audit log."""

    ASSIGNED = "assigned"
    UNASSIGNED = "unassigned"
    STATUS = "status"
    NOTE = "note"
    MENTION = "mention"
    LINKED = "linked"
    UNLINKED = "unlinked"
    MERGED = "merged"  # another conversation joined this one (by the threading or a user)
    SPLIT = "split"  # a message moved out into a conversation of its own
    SIGNED_IN = "signed_in"


class SharingLevel(enum.StrEnum):
    """What a record's timeline shows of an account's mail to users who cannot see that account."""

    FULL = "full"  # the message as its readers see it
    SUBJECT = "subject"  # who, when and the subject
    METADATA = "metadata"  # who and when only
    HIDDEN = "hidden"  # not on the timeline at all
