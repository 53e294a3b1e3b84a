"""Links of mail to CRM records, as the acting user sees and changes them.

Every operation starts from a message the caller may see (`crm.access.get_message`: missing and
not visible are the same `message_not_found`), and a "whole thread" operation touches only the
thread's messages the caller may see. The sticky unlink is a fact about the thread (rules never
put the record back on it), which is why it is written even when some of the thread's messages
are in accounts the caller does not see.

The linking engine the mail store calls inside its batch transaction is `crm.link_service`; this
module only adds the caller's view on top of it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, func
from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import not_found
from core.types import ActivityKind
from crm import access, conversations
from crm.models import Company, Contact, Deal, LinkSuppression, Message, MessageLink
from crm.rules.linking import LinkReason, RecordKind

__all__ = [
    "LinkExplanation",
    "find_message_pk",
    "link_manually",
    "linked_count",
    "unlink",
    "why",
]

MANUAL_DETAIL = "linked by a user"

_RECORD_MODELS: dict[RecordKind, type[Contact] | type[Company] | type[Deal]] = {
    RecordKind.CONTACT: Contact,
    RecordKind.COMPANY: Company,
    RecordKind.DEAL: Deal,
}


@dataclass(frozen=True, slots=True)
class LinkExplanation:
    """Why one record is on a message: the rule (`reason`) and the address, domain or thread
    behind it (`detail`)."""

    record_kind: RecordKind
    record_id: int
    reason: LinkReason
    detail: str


def _require_record(session: Session, caller: Caller, kind: RecordKind, record_id: int) -> None:
    """Records are the tenant's shared address book: any user of the tenant may link them; a
    record of another tenant is never linkable (and not distinguishable from a missing one)."""
    row = session.get(_RECORD_MODELS[kind], record_id)
    if row is None or getattr(row, "tenant_id", None) != caller.tenant_id:
        raise not_found(kind.value, record_id)


def _target_pks(session: Session, caller: Caller, message: Message, whole_thread: bool) -> list[int]:
    if not whole_thread or message.thread_id is None:
        return [message.id or 0]
    return [
        pk
        for pk in session.exec(
            select(Message.id)
            .where(Message.thread_id == message.thread_id, access.message_visible(caller))
            .order_by(col(Message.id))
        ).all()
        if pk is not None
    ]


def link_manually(
    *,
    session: Session,
    caller: Caller,
    message_pk: int,
    kind: RecordKind,
    record_id: int,
    whole_thread: bool = False,
) -> int:
    """Link a message (or the thread's messages the caller sees) to a record by hand; lifts a
    sticky unlink of that record on the thread. Returns how many messages carry the link now."""
    message = access.get_message(session, caller, message_pk)
    _require_record(session, caller, kind, record_id)
    pks = _target_pks(session, caller, message, whole_thread)
    if message.thread_id is not None:
        session.execute(
            delete(LinkSuppression).where(
                col(LinkSuppression.thread_id) == message.thread_id,
                col(LinkSuppression.record_kind) == kind,
                col(LinkSuppression.record_id) == record_id,
            )
        )
    existing = {
        row.message_pk: row
        for row in session.exec(
            select(MessageLink).where(
                col(MessageLink.message_pk).in_(pks),
                MessageLink.record_kind == kind,
                MessageLink.record_id == record_id,
            )
        ).all()
    }
    for pk in pks:
        row = existing.get(pk) or MessageLink(
            tenant_id=caller.tenant_id,
            message_pk=pk,
            record_kind=kind,
            record_id=record_id,
            reason=LinkReason.MANUAL,
        )
        row.reason, row.detail, row.created_by_user_id = LinkReason.MANUAL, MANUAL_DETAIL, caller.user_id
        session.add(row)
    session.flush()
    conversations.record_link_change(
        session=session,
        caller=caller,
        message_pk=message_pk,
        kind=ActivityKind.LINKED,
        record_kind=kind.value,
        record_id=record_id,
    )
    return len(pks)


def unlink(
    *,
    session: Session,
    caller: Caller,
    message_pk: int,
    kind: RecordKind,
    record_id: int,
    whole_thread: bool = False,
) -> int:
    """Remove a record from a message (or from the thread's messages the caller sees). Sticky:
    the thread is marked so that no rule links that record to it again (new replies, re-syncs,
    backfills). Returns how many links were removed."""
    message = access.get_message(session, caller, message_pk)
    pks = _target_pks(session, caller, message, whole_thread)
    result = session.execute(
        delete(MessageLink).where(
            col(MessageLink.message_pk).in_(pks),
            col(MessageLink.record_kind) == kind,
            col(MessageLink.record_id) == record_id,
        )
    )
    if message.thread_id is not None:
        already = session.exec(
            select(LinkSuppression).where(
                LinkSuppression.thread_id == message.thread_id,
                LinkSuppression.record_kind == kind,
                LinkSuppression.record_id == record_id,
            )
        ).first()
        if already is None:
            session.add(
                LinkSuppression(
                    tenant_id=caller.tenant_id,
                    thread_id=message.thread_id,
                    record_kind=kind,
                    record_id=record_id,
                    created_by_user_id=caller.user_id,
                )
            )
    session.flush()
    conversations.record_link_change(
        session=session,
        caller=caller,
        message_pk=message_pk,
        kind=ActivityKind.UNLINKED,
        record_kind=kind.value,
        record_id=record_id,
    )
    return int(getattr(result, "rowcount", 0) or 0)


def why(*, session: Session, caller: Caller, message_pk: int) -> tuple[LinkExplanation, ...]:
    """Why each record is on this message."""
    access.get_message(session, caller, message_pk)
    rows = session.exec(
        select(MessageLink)
        .where(MessageLink.message_pk == message_pk)
        .order_by(col(MessageLink.record_kind), col(MessageLink.record_id))
    ).all()
    return tuple(LinkExplanation(r.record_kind, r.record_id, r.reason, r.detail) for r in rows)


def linked_count(*, session: Session, caller: Caller, kind: RecordKind, record_id: int) -> int:
    """How many messages the caller sees on a record (a record of another tenant: not found)."""
    _require_record(session, caller, kind, record_id)
    return session.exec(
        select(func.count(col(MessageLink.id)))
        .join(Message, col(Message.id) == col(MessageLink.message_pk))
        .where(
            MessageLink.tenant_id == caller.tenant_id,
            MessageLink.record_kind == kind,
            MessageLink.record_id == record_id,
            access.message_visible(caller),
        )
    ).one()


def find_message_pk(*, session: Session, caller: Caller, message_id: str) -> int:
    """A visible message by its Message-ID header, with or without the angle brackets."""
    wanted = message_id.strip()
    candidates = [wanted] if wanted.startswith("<") else [f"<{wanted}>", wanted]
    found = session.exec(
        select(Message.id)
        .where(col(Message.message_id).in_(candidates), access.message_visible(caller))
        .order_by(col(Message.id))
    ).first()
    if found is None:
        raise not_found("message", wanted)
    return found
