"""The one place that writes synced mail: idempotent, keyed on (folder, UIDVALIDITY, UID) and on
Message-ID.

The sync engine hands over a batch of plain values (`NewMail`, `KnownMail`, `SkippedMail`) plus
the folder cursor to save; `apply_batch` writes all of it in the caller's transaction, so a crash
leaves either the whole batch with its cursor, or neither. Running the same batch twice changes
nothing: a location that exists is left alone, a Message-ID that exists gets a new location only.
Locations (`ImapUid`) are IMAP bookkeeping apart from the CRM rows: quarantine, expunge and flag
updates touch them only, never a message, thread or link.

`crm` never sees IMAP types: the engine converts its parsed messages into `MessageData`. The
state *around* the mail (leases, cursors, runs, account health) is `crm.sync_state`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import insert, update
from sqlmodel import Session, col, select

from core import stages
from core.types import Direction, FolderRole, SkipReason, UidState, utcnow
from crm import assignment
from crm.bulk import insert_many, prepared_executemany
from crm.link_service import address_rows, inline_forwarded, link_messages
from crm.locks import lock_tenant
from crm.models import (
    FetchFailure,
    FolderState,
    ImapUid,
    MailAccount,
    Message,
    MessageAddress,
    SkippedMessage,
    User,
)
from crm.stored_mail import (
    KnownRow,
    StoredMessage,
    insert_rows,
    message_row,
    skipped_row,
)
from crm.threads import refresh as refresh_threads, thread_new_mail

# Tables written with Core `executemany` (see `crm.stored_mail` for why not ORM objects).
_MESSAGE = Message.__table__  # type: ignore[attr-defined]
_ADDRESS = MessageAddress.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Location:
    uid: int
    flags: tuple[str, ...] = ()
    internal_date: datetime | None = None


@dataclass(frozen=True, slots=True)
class MessageData:
    """A parsed message as `crm` stores it (no IMAP notion in here)."""

    message_id: str
    content_hash: str
    message_id_synthetic: bool = False
    subject: str = ""
    normalized_subject: str = ""
    date: datetime | None = None
    from_email: str = ""
    from_name: str = ""
    to: tuple[tuple[str, str], ...] = ()  # (email, name)
    cc: tuple[tuple[str, str], ...] = ()
    bcc: tuple[tuple[str, str], ...] = ()
    reply_to: tuple[tuple[str, str], ...] = ()
    in_reply_to: str | None = None
    references: tuple[str, ...] = ()
    text_body: str = ""
    html_body: str = ""
    attachments: tuple[dict[str, Any], ...] = ()
    headers: tuple[tuple[str, str], ...] = ()
    attached_message_senders: tuple[tuple[str, str], ...] = ()
    size: int = 0
    recipient_count: int = 0
    parse_errors: tuple[str, ...] = ()
    raw: bytes | None = None  # kept for malformed mail so nothing is lost
    headers_only: bool = False

    @property
    def participants(self) -> set[str]:
        emails = {self.from_email} | {e for e, _ in self.to} | {e for e, _ in self.cc}
        return {e for e in emails if e}


@dataclass(frozen=True, slots=True)
class NewMail:
    location: Location
    data: MessageData


@dataclass(frozen=True, slots=True)
class KnownMail:
    """A message whose Message-ID is already stored (or skipped): only a new location."""

    location: Location
    message_id: str


@dataclass(frozen=True, slots=True)
class SkippedMail:
    location: Location
    message_id: str
    reason: SkipReason
    detail: str
    subject: str = ""
    from_email: str = ""
    date: datetime | None = None
    recipient_count: int = 0


Incoming = NewMail | KnownMail | SkippedMail


@dataclass(frozen=True, slots=True)
class CursorUpdate:
    highest_uid: int


@dataclass(slots=True)
class BatchResult:
    new_messages: int = 0
    new_locations: int = 0
    skipped: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)
    malformed: int = 0
    stored_message_pks: list[int] = field(default_factory=list)


def tenant_identities(*, session: Session, tenant_id: int) -> frozenset[str]:
    """Addresses that belong to the tenant itself: its accounts and its users."""
    accounts = session.exec(select(MailAccount.email).where(MailAccount.tenant_id == tenant_id)).all()
    users = session.exec(select(User.email).where(User.tenant_id == tenant_id)).all()
    return frozenset(e.lower() for e in [*accounts, *users])


# ---------------------------------------------------------------------------------------------
# Batches


def seen_uids(*, session: Session, folder_id: int, uidvalidity: int, uids: Sequence[int]) -> set[int]:
    if not uids:
        return set()
    rows = session.exec(
        select(ImapUid.uid).where(
            ImapUid.folder_id == folder_id,
            ImapUid.uidvalidity == uidvalidity,
            col(ImapUid.uid) >= min(uids),
            col(ImapUid.uid) <= max(uids),
        )
    ).all()
    return set(rows)


@dataclass(frozen=True, slots=True)
class KnownIdentity:
    """What tells a stored message from another one carrying the same Message-ID (buggy mailers
    reuse them): its sender, subject and date."""

    from_email: str
    subject: str
    date: datetime | None


def known_messages(
    *, session: Session, tenant_id: int, message_ids: Iterable[str]
) -> dict[str, KnownIdentity]:
    """Message-IDs already stored or skipped in this tenant, with what identifies each."""
    ids = list({m for m in message_ids if m})
    found: dict[str, KnownIdentity] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        for model in (Message, SkippedMessage):
            rows = session.exec(
                select(model.message_id, model.from_email, model.subject, model.date).where(
                    model.tenant_id == tenant_id, col(model.message_id).in_(chunk)
                )
            ).all()
            for message_id, from_email, subject, date in rows:
                found.setdefault(message_id, KnownIdentity(from_email, subject, date))
    return found


def known_message_ids(*, session: Session, tenant_id: int, message_ids: Iterable[str]) -> set[str]:
    """Message-IDs already stored or skipped in this tenant."""
    return set(known_messages(session=session, tenant_id=tenant_id, message_ids=message_ids))


def apply_batch(
    *,
    session: Session,
    tenant_id: int,
    account_id: int,
    folder_id: int,
    folder_role: FolderRole,
    uidvalidity: int,
    items: Sequence[Incoming],
    identities: frozenset[str],
    cursor: CursorUpdate | None,
) -> BatchResult:
    """Write one batch and (optionally) advance the folder cursor, in the caller's transaction.

    A fixed number of statements per batch, whatever its size: one lookup of known Message-IDs,
    threading (which needs no ids: it runs before the insert, so each row is written once with
    its thread), one `executemany` for the new messages (Core, not ORM objects: see
    `crm.stored_mail`), bulk inserts for locations, references and addresses, then linking and
    assignment for the batch as a whole."""
    result = BatchResult()
    if items:
        lock_tenant(session=session, tenant_id=tenant_id)
    with session.no_autoflush:
        existing = seen_uids(
            session=session,
            folder_id=folder_id,
            uidvalidity=uidvalidity,
            uids=[i.location.uid for i in items],
        )
        todo = sorted((i for i in items if i.location.uid not in existing), key=lambda i: i.location.uid)
        wanted = {i.message_id if not isinstance(i, NewMail) else i.data.message_id for i in todo}
        messages = _messages_by_id(session, tenant_id, wanted)
        skipped = _skipped_by_id(session, tenant_id, wanted)
        new_rows: list[dict[str, Any]] = []
        new_messages: list[StoredMessage] = []
        new_skipped: dict[str, SkippedMessage] = {}
        refs: dict[str, list[str]] = {}
        located: list[tuple[Location, UidState, str]] = []
        to_outbound: set[int] = set()
        for item in todo:
            if isinstance(item, SkippedMail):
                if item.message_id not in skipped and item.message_id not in new_skipped:
                    new_skipped[item.message_id] = skipped_row(tenant_id, account_id, item)
                    result.skipped += 1
                    reason = item.reason.value
                    result.skipped_reasons[reason] = result.skipped_reasons.get(reason, 0) + 1
                located.append((item.location, UidState.SKIPPED, item.message_id))
                continue
            message_id = item.data.message_id if isinstance(item, NewMail) else item.message_id
            if message_id in messages:
                known = messages[message_id]
                if folder_role is FolderRole.SENT and known.direction is Direction.INBOUND and known.id:
                    # Seen first in INBOX (e.g. a copy to oneself), now in Sent: we sent it.
                    to_outbound.add(known.id)
            elif message_id in skipped or message_id in new_skipped:
                located.append((item.location, UidState.SKIPPED, message_id))
                result.new_locations += 1
                continue
            elif isinstance(item, KnownMail):
                # Known a moment ago, gone now (deleted meanwhile): the engine stores one by one.
                raise LookupError(f"message {message_id} vanished during the batch")
            else:
                with stages.stage("store.rows"):
                    row, stored = message_row(tenant_id, item.data, folder_role, identities)
                messages[message_id] = stored
                new_rows.append(row)
                new_messages.append(stored)
                refs[message_id] = [
                    r
                    for r in dict.fromkeys(
                        [*item.data.references, *([item.data.in_reply_to] if item.data.in_reply_to else [])]
                    )
                    if r and r != message_id
                ]
                result.new_messages += 1
                result.malformed += int(row["malformed"])
            located.append((item.location, UidState.STORED, message_id))
            result.new_locations += 1
        if new_skipped:
            session.add_all(new_skipped.values())
            session.flush()
            skipped.update({k: v.id or 0 for k, v in new_skipped.items()})
        touched: list[int] = []
        if new_messages:
            with stages.stage("store.threading"):
                touched = thread_new_mail(
                    session=session,
                    tenant_id=tenant_id,
                    messages=new_messages,
                    refs=[refs[m.message_id] for m in new_messages],
                )
            for row, stored in zip(new_rows, new_messages, strict=True):
                row["thread_id"] = stored.thread_id
            # Ids are matched by Message-ID (unique per tenant, and within the batch): asking
            # SQLAlchemy for RETURNING in parameter order makes it insert row by row on SQLite.
            # On PostgreSQL one prepared INSERT over the rows (`crm.bulk`), then one indexed
            # lookup of the ids: RETURNING would make it one giant statement again.
            connection = session.connection()
            if prepared_executemany(connection):
                insert_many(connection, _MESSAGE, new_rows)
                ids = _ids_by_message_id(session, tenant_id, [m.message_id for m in new_messages])
            else:
                returned = connection.execute(
                    insert(_MESSAGE).returning(_MESSAGE.c.id, _MESSAGE.c.message_id), new_rows
                )
                ids = {mid: pk for pk, mid in returned}
            for stored in new_messages:
                stored.id = ids[stored.message_id]
        insert_rows(session, tenant_id, account_id, folder_id, uidvalidity, located, messages, skipped, refs)
        if to_outbound:
            session.execute(
                update(Message)
                .where(col(Message.id).in_(sorted(to_outbound)))
                .values(direction=Direction.OUTBOUND)
            )
        if new_messages:
            with stages.stage("store.threading"):
                refresh_threads(session, touched)
            with stages.stage("store.linking"):
                _link(session, tenant_id, account_id, new_messages, result)
        if located:
            session.execute(
                update(MailAccount)
                .where(col(MailAccount.id) == account_id, col(MailAccount.processed_any).is_(False))
                .values(processed_any=True)
            )
        if cursor is not None:
            session.execute(
                update(FolderState)
                .where(col(FolderState.id) == folder_id, col(FolderState.highest_uid) < cursor.highest_uid)
                .values(highest_uid=cursor.highest_uid)
            )
    session.flush()
    return result


def _link(
    session: Session, tenant_id: int, account_id: int, new_messages: list[StoredMessage], result: BatchResult
) -> None:
    """The address index, links and the team's side of the batch's new messages."""
    forwarded = {m.id or 0: inline_forwarded(m) for m in new_messages}
    addresses = [row for m in new_messages for row in address_rows(m, forwarded[m.id or 0])]
    if addresses:
        insert_many(session.connection(), _ADDRESS, addresses)
    result.stored_message_pks = [m.id or 0 for m in new_messages]
    # Links are written in the batch's transaction: no message is ever stored unlinked.
    link_messages(
        session=session,
        tenant_id=tenant_id,
        message_pks=result.stored_message_pks,
        account_id=account_id,
        preloaded=new_messages,
        create_leads=True,
        forwarded=forwarded,
    )
    # The team's side, in the same transaction: new conversations get an owner by the
    # account's rule, and a customer writing again reopens a closed or snoozed one.
    assignment.on_new_mail(session=session, tenant_id=tenant_id, account_id=account_id, messages=new_messages)


def _ids_by_message_id(session: Session, tenant_id: int, message_ids: Sequence[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    for start in range(0, len(message_ids), 500):
        rows = session.connection().execute(
            select(_MESSAGE.c.message_id, _MESSAGE.c.id).where(
                _MESSAGE.c.tenant_id == tenant_id,
                _MESSAGE.c.message_id.in_(message_ids[start : start + 500]),
            )
        )
        found.update((message_id, pk) for message_id, pk in rows)
    return found


def _messages_by_id(
    session: Session, tenant_id: int, ids: Iterable[str]
) -> dict[str, KnownRow | StoredMessage]:
    found: dict[str, KnownRow | StoredMessage] = {}
    wanted = sorted(ids)
    for start in range(0, len(wanted), 500):
        for message_id, pk, direction in session.exec(
            select(Message.message_id, Message.id, Message.direction).where(
                Message.tenant_id == tenant_id, col(Message.message_id).in_(wanted[start : start + 500])
            )
        ).all():
            found[message_id] = KnownRow(pk, Direction(direction))
    return found


def _skipped_by_id(session: Session, tenant_id: int, ids: Iterable[str]) -> dict[str, int]:
    found: dict[str, int] = {}
    wanted = sorted(ids)
    for start in range(0, len(wanted), 500):
        for message_id, pk in session.exec(
            select(SkippedMessage.message_id, SkippedMessage.id).where(
                SkippedMessage.tenant_id == tenant_id,
                col(SkippedMessage.message_id).in_(wanted[start : start + 500]),
            )
        ).all():
            found[message_id] = pk or 0
    return found


def _add_location(
    session: Session,
    account_id: int,
    folder_id: int,
    uidvalidity: int,
    location: Location,
    state: UidState,
    message_pk: int | None,
    skipped_pk: int | None,
) -> None:
    session.add(
        ImapUid(
            account_id=account_id,
            folder_id=folder_id,
            uidvalidity=uidvalidity,
            uid=location.uid,
            state=state,
            message_pk=message_pk,
            skipped_pk=skipped_pk,
            flags=list(location.flags),
            internal_date=location.internal_date,
        )
    )


# ---------------------------------------------------------------------------------------------
# Failures, expunges, flags


def record_failure(
    *,
    session: Session,
    account_id: int,
    folder_id: int,
    uidvalidity: int,
    uid: int,
    error: str,
    max_attempts: int,
) -> bool:
    """Count one failed attempt at a message. Returns True when it is now quarantined: an
    `ImapUid` in state QUARANTINED lets the cursor move past it so one bad message never
    blocks a folder."""
    failure = session.exec(
        select(FetchFailure).where(
            FetchFailure.folder_id == folder_id,
            FetchFailure.uidvalidity == uidvalidity,
            FetchFailure.uid == uid,
        )
    ).first()
    if failure is None:
        failure = FetchFailure(account_id=account_id, folder_id=folder_id, uidvalidity=uidvalidity, uid=uid)
    failure.attempts += 1
    failure.last_error = error[:2000]
    failure.last_failed_at = utcnow()
    if failure.attempts >= max_attempts and not failure.quarantined:
        failure.quarantined = True
        if not seen_uids(session=session, folder_id=folder_id, uidvalidity=uidvalidity, uids=[uid]):
            _add_location(
                session,
                account_id,
                folder_id,
                uidvalidity,
                Location(uid=uid),
                UidState.QUARANTINED,
                None,
                None,
            )
    session.add(failure)
    session.flush()
    return failure.quarantined


def live_uids(*, session: Session, folder_id: int, uidvalidity: int) -> set[int]:
    return set(
        session.exec(
            select(ImapUid.uid).where(
                ImapUid.folder_id == folder_id,
                ImapUid.uidvalidity == uidvalidity,
                col(ImapUid.expunged_at).is_(None),
            )
        ).all()
    )


def mark_expunged(*, session: Session, folder_id: int, uidvalidity: int, uids: Iterable[int]) -> int:
    """Messages removed on the server: the location is marked, the message itself is kept (the
    CRM keeps a record of the conversation even when a mailbox is cleaned up)."""
    uid_list = sorted(uids)
    now = utcnow()
    for start in range(0, len(uid_list), 500):
        session.execute(
            update(ImapUid)
            .where(
                col(ImapUid.folder_id) == folder_id,
                col(ImapUid.uidvalidity) == uidvalidity,
                col(ImapUid.uid).in_(uid_list[start : start + 500]),
            )
            .values(expunged_at=now)
        )
    return len(uid_list)


def update_flags(
    *, session: Session, folder_id: int, uidvalidity: int, flags: dict[int, tuple[str, ...]]
) -> None:
    for uid, values in flags.items():
        session.execute(
            update(ImapUid)
            .where(
                col(ImapUid.folder_id) == folder_id,
                col(ImapUid.uidvalidity) == uidvalidity,
                col(ImapUid.uid) == uid,
            )
            .values(flags=list(values))
        )
