"""A user's corrections to the threading: merge two conversations, split a message out, and
"why is this message in this conversation" (the threading evidence, like `links why`).

Both corrections are remembered: a merge moves the messages (later replies to any of them land
in the merged conversation by their references), and a split records the two conversations as
apart, so a later message referring to both is not allowed to join them again (crm.threads).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import Conflict, InvalidInput
from core.types import ActivityKind
from crm import access, threads
from crm.models import Activity, Message, MessageRef, Thread, ThreadSplit


class Evidence(enum.StrEnum):
    REPLIES_TO = "replies_to"  # this message's In-Reply-To/References name the other one
    REPLIED_BY = "replied_by"  # the other message names this one
    SUBJECT = "subject"  # no reference: same subject among the same people within days
    MERGED_BY_USER = "merged_by_user"
    SPLIT_BY_USER = "split_by_user"
    STARTS = "starts"  # the first message of the conversation


@dataclass(frozen=True, slots=True)
class EvidenceItem:
    kind: Evidence
    other_message_pk: int | None
    other_message_id: str | None


@dataclass(frozen=True, slots=True)
class ThreadingWhy:
    message_pk: int
    thread_id: int
    evidence: tuple[EvidenceItem, ...]


@dataclass(frozen=True, slots=True)
class ThreadChange:
    thread_id: int  # the conversation the caller should look at now
    other_thread_id: int | None  # the one merged away, or the one split from


def merge(*, session: Session, caller: Caller, target_id: int, source_id: int) -> ThreadChange:
    """Join conversation `source` into `target` (its messages, notes, history and state)."""
    target = access.get_thread(session, caller, target_id)
    source = access.get_thread(session, caller, source_id)
    if target_id == source_id:
        raise InvalidInput("same_conversation", "Choose two different conversations.", field="source_id")
    _require_whole(session, caller, source)
    threads.merge_into(session, source=source.id or 0, target=target.id or 0, actor_user_id=caller.user_id)
    session.flush()
    return ThreadChange(thread_id=target_id, other_thread_id=source_id)


def _require_whole(session: Session, caller: Caller, thread: Thread) -> None:
    """Only what the caller sees entirely may be moved: a member must not move mail of another
    team's mailbox that happens to share the conversation."""
    if caller.is_admin:
        return
    total = len(session.exec(select(Message.id).where(Message.thread_id == thread.id)).all())
    seen = len(
        session.exec(
            select(Message.id).where(Message.thread_id == thread.id, access.message_visible(caller))
        ).all()
    )
    if seen != total:
        raise Conflict(
            "conversation_shared",
            "This conversation also holds mail of mailboxes you cannot see; ask an administrator.",
            thread_id=thread.id,
        )


def split(*, session: Session, caller: Caller, message_pk: int) -> ThreadChange:
    """Move one message out into a conversation of its own, kept apart from the old one."""
    message = access.get_message(session, caller, message_pk)
    old = session.get(Thread, message.thread_id) if message.thread_id is not None else None
    if old is None or old.message_count < 2:
        raise Conflict(
            "nothing_to_split", "The message is alone in its conversation already.", message_pk=message_pk
        )
    fresh = Thread(
        tenant_id=caller.tenant_id, subject=message.subject, normalized_subject=message.normalized_subject
    )
    session.add(fresh)
    session.flush()
    message.thread_id = fresh.id
    session.add(message)
    a, b = sorted((old.id or 0, fresh.id or 0))
    session.add(ThreadSplit(tenant_id=caller.tenant_id, thread_a=a, thread_b=b))
    for thread_id, other in ((old.id, fresh.id), (fresh.id, old.id)):
        session.add(
            Activity(
                tenant_id=caller.tenant_id,
                thread_id=thread_id,
                actor_user_id=caller.user_id,
                kind=ActivityKind.SPLIT,
                data={"message_pk": message_pk, "other_thread": other},
            )
        )
    session.flush()
    threads.refresh(session, [old.id or 0, fresh.id or 0])
    threads.rebuild_thread_accounts(session, [old.id or 0, fresh.id or 0])
    session.flush()
    return ThreadChange(thread_id=fresh.id or 0, other_thread_id=old.id)


def why(*, session: Session, caller: Caller, message_pk: int) -> ThreadingWhy:
    """The evidence that put a message in its conversation, among the messages the caller sees."""
    message = access.get_message(session, caller, message_pk)
    thread_id = message.thread_id or 0
    mates = {
        m.message_id: m
        for m in session.exec(
            select(Message).where(
                Message.thread_id == thread_id, Message.id != message.id, access.message_visible(caller)
            )
        ).all()
    }
    items: list[EvidenceItem] = []
    own_refs = session.exec(
        select(MessageRef.ref_message_id).where(MessageRef.message_pk == message.id)
    ).all()
    for ref in own_refs:
        if ref in mates:
            items.append(EvidenceItem(Evidence.REPLIES_TO, mates[ref].id, ref))
    if mates:
        by_pk = {m.id: m for m in mates.values()}
        for pk in session.exec(
            select(MessageRef.message_pk).where(
                MessageRef.ref_message_id == message.message_id, col(MessageRef.message_pk).in_(list(by_pk))
            )
        ).all():
            items.append(EvidenceItem(Evidence.REPLIED_BY, pk, by_pk[pk].message_id))
    if not items and mates:
        same = [
            m
            for m in mates.values()
            if m.normalized_subject == message.normalized_subject
            and m.participants_key == message.participants_key
        ]
        items += [EvidenceItem(Evidence.SUBJECT, m.id, m.message_id) for m in same[:3]]
    for entry in session.exec(
        select(Activity).where(
            Activity.thread_id == thread_id, col(Activity.kind).in_([ActivityKind.MERGED, ActivityKind.SPLIT])
        )
    ).all():
        if entry.kind is ActivityKind.SPLIT and entry.data.get("message_pk") == message.id:
            items.append(EvidenceItem(Evidence.SPLIT_BY_USER, None, None))
        elif entry.kind is ActivityKind.MERGED and entry.data.get("by_user"):
            items.append(EvidenceItem(Evidence.MERGED_BY_USER, None, None))
    if not items:
        items.append(EvidenceItem(Evidence.STARTS, None, None))
    return ThreadingWhy(message_pk=message.id or 0, thread_id=thread_id, evidence=tuple(items))
