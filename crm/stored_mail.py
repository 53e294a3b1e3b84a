"""The message rows a sync batch writes, as threading, linking and assignment read them.

A plain slotted object instead of the `Message` SQLModel: building and flushing 200 ORM
instances per batch cost about a millisecond per message (pydantic validation, attribute
instrumentation, the unit of work), more than parsing. The rows are written with one Core
`executemany`; these objects carry what the rest of the batch needs to read back.

The row builders for that `executemany` (and the other bulk inserts of a batch) live here too;
`crm.mailstore.apply_batch` decides what to write, this module how each row looks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlmodel import Session

from core.types import Direction, FolderRole, UidState, utcnow
from crm.bulk import insert_many
from crm.models import ImapUid, Message, MessageRef, SkippedMessage

if TYPE_CHECKING:  # the batch's value types; crm.mailstore imports this module
    from crm.mailstore import Location, MessageData, SkippedMail

_IMAP_UID = ImapUid.__table__  # type: ignore[attr-defined]
_MESSAGE_REF = MessageRef.__table__  # type: ignore[attr-defined]


@dataclass(slots=True)
class StoredMessage:
    tenant_id: int
    message_id: str
    date: datetime | None
    normalized_subject: str
    participants_key: str
    direction: Direction
    from_email: str
    from_name: str
    to_addrs: list[dict[str, str]]
    cc_addrs: list[dict[str, str]]
    bcc_addrs: list[dict[str, str]]
    headers: dict[str, str]
    text_body: str
    attached_message_senders: list[dict[str, str]]
    id: int | None = None
    thread_id: int | None = None
    attributed_user_id: int | None = None


# What linking and assignment accept: rows of this batch, or messages loaded through the ORM.
MailRow = Message | StoredMessage


@dataclass(frozen=True, slots=True)
class KnownRow:
    """A stored message as the batch needs it: its key and direction (not the whole row)."""

    id: int | None
    direction: Direction


def participants_key(emails: Iterable[str]) -> str:
    joined = "\n".join(sorted({e.lower() for e in emails if e}))
    return hashlib.sha1(joined.encode("utf-8")).hexdigest()


def addr_list(pairs: Sequence[tuple[str, str]]) -> list[dict[str, str]]:
    return [{"email": email, "name": name} for email, name in pairs]


def insert_rows(
    session: Session,
    tenant_id: int,
    account_id: int,
    folder_id: int,
    uidvalidity: int,
    located: list[tuple[Location, UidState, str]],
    messages: dict[str, KnownRow | StoredMessage],
    skipped: dict[str, int],
    refs: dict[str, list[str]],
) -> None:
    """Bulk INSERTs (executemany) for the rows that need no ORM identity."""
    now = utcnow()
    if located:
        insert_many(
            session.connection(),
            _IMAP_UID,
            [
                {
                    "account_id": account_id,
                    "folder_id": folder_id,
                    "uidvalidity": uidvalidity,
                    "uid": location.uid,
                    "state": state,
                    "message_pk": messages[mid].id if state is UidState.STORED else None,
                    "skipped_pk": skipped.get(mid) if state is UidState.SKIPPED else None,
                    "flags": list(location.flags),
                    "internal_date": location.internal_date,
                    "created_at": now,
                }
                for location, state, mid in located
            ],
        )
    ref_rows = [
        {"tenant_id": tenant_id, "message_pk": messages[mid].id, "ref_message_id": ref}
        for mid, targets in refs.items()
        for ref in targets
    ]
    if ref_rows:
        insert_many(session.connection(), _MESSAGE_REF, ref_rows)


def skipped_row(tenant_id: int, account_id: int, item: SkippedMail) -> SkippedMessage:
    return SkippedMessage(
        tenant_id=tenant_id,
        account_id=account_id,
        message_id=item.message_id,
        subject=item.subject,
        from_email=item.from_email if len(item.from_email) <= MAX_ADDRESS else "",
        date=item.date,
        recipient_count=item.recipient_count,
        reason=item.reason,
        detail=item.detail,
    )


# Column width of stored addresses. RFC 5321 allows 254 characters; a longer From is damage,
# kept in the raw bytes and flagged rather than failing the insert (PostgreSQL enforces it).
MAX_ADDRESS = 320


def message_row(
    tenant_id: int, data: MessageData, role: FolderRole, identities: frozenset[str]
) -> tuple[dict[str, Any], StoredMessage]:
    """The `message` row to insert (every column given: Core applies no model defaults) and the
    object the rest of the batch reads it through."""
    if len(data.from_email) > MAX_ADDRESS:
        data = replace(
            data,
            from_email="",
            parse_errors=(
                *data.parse_errors,
                f"From address longer than {MAX_ADDRESS} characters was not kept",
            ),
        )
    outbound = role is FolderRole.SENT or data.from_email.lower() in identities
    stored = StoredMessage(
        tenant_id=tenant_id,
        message_id=data.message_id,
        date=data.date,
        normalized_subject=data.normalized_subject,
        participants_key=participants_key(data.participants),
        direction=Direction.OUTBOUND if outbound else Direction.INBOUND,
        from_email=data.from_email,
        from_name=data.from_name,
        to_addrs=addr_list(data.to),
        cc_addrs=addr_list(data.cc),
        bcc_addrs=addr_list(data.bcc),
        headers=dict(data.headers),
        text_body=data.text_body,
        attached_message_senders=addr_list(data.attached_message_senders),
    )
    row: dict[str, Any] = {
        "tenant_id": tenant_id,
        "message_id": data.message_id,
        "message_id_synthetic": data.message_id_synthetic,
        "content_hash": data.content_hash,
        "subject": data.subject,
        "normalized_subject": data.normalized_subject,
        "participants_key": stored.participants_key,
        "date": data.date,
        "from_email": data.from_email,
        "from_name": data.from_name,
        "to_addrs": stored.to_addrs,
        "cc_addrs": stored.cc_addrs,
        "bcc_addrs": stored.bcc_addrs,
        "reply_to": addr_list(data.reply_to),
        "in_reply_to": data.in_reply_to,
        "references": list(data.references),
        "text_body": data.text_body,
        "html_body": data.html_body,
        "attachments": list(data.attachments),
        "headers": stored.headers,
        "attached_message_senders": stored.attached_message_senders,
        "size": data.size,
        "recipient_count": data.recipient_count,
        "direction": stored.direction,
        "thread_id": None,
        "malformed": bool(data.parse_errors),
        "parse_errors": list(data.parse_errors),
        "raw": data.raw if data.parse_errors else None,
        "headers_only": data.headers_only,
        "attributed_user_id": None,
        "created_at": utcnow(),
    }
    return row, stored
