"""Working a conversation: assignment, status and snooze, read marks, internal notes, history.

Every action is checked against `crm.access` (a conversation the caller cannot see is not found)
and lands in the `activity` table, which is both the conversation's history and, for admins, the
tenant's audit log. Read marks are ours alone: the server's \\Seen flag is never touched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import exists
from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import InvalidInput
from core.types import ActivityKind, ConversationStatus, utcnow
from crm import access, ticket_events
from crm.models import Activity, Note, Presence, Thread, ThreadRead, ThreadSplit, User
from crm.outbound import notifications

MAX_NOTE_LENGTH = 20_000
# "@alice@acme.example" (a full address) or "@alice" (a local part unique in the tenant).
_MENTION = re.compile(r"(?<![\w.@])@([\w.+-]+(?:@[\w-]+(?:\.[\w-]+)+)?)")


@dataclass(frozen=True, slots=True)
class ConversationState:
    thread_id: int
    status: ConversationStatus  # effective: a snooze whose time has come reads as open
    snoozed_until: datetime | None
    assignee_user_id: int | None


@dataclass(frozen=True, slots=True)
class NoteView:
    id: int
    thread_id: int
    author_user_id: int
    body: str
    mentions: tuple[int, ...]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ActivityView:
    id: int
    thread_id: int | None
    actor_user_id: int | None
    kind: ActivityKind
    data: dict[str, Any]
    created_at: datetime


def effective_status(thread: Thread, now: datetime | None = None) -> ConversationStatus:
    snooze_over = thread.snoozed_until is None or thread.snoozed_until <= (now or utcnow())
    if thread.status is ConversationStatus.SNOOZED and snooze_over:
        return ConversationStatus.OPEN
    return thread.status


def _state(thread: Thread) -> ConversationState:
    status = effective_status(thread)
    return ConversationState(
        thread_id=thread.id or 0,
        status=status,
        snoozed_until=thread.snoozed_until if status is ConversationStatus.SNOOZED else None,
        assignee_user_id=thread.assignee_user_id,
    )


def _record(session: Session, caller: Caller, thread_id: int | None, kind: ActivityKind, **data: Any) -> None:
    session.add(
        Activity(
            tenant_id=caller.tenant_id,
            thread_id=thread_id,
            actor_user_id=caller.user_id,
            kind=kind,
            data=data,
        )
    )


def get_state(*, session: Session, caller: Caller, thread_id: int) -> ConversationState:
    return _state(access.get_thread(session, caller, thread_id))


def assign(
    *, session: Session, caller: Caller, thread_id: int, assignee_user_id: int | None
) -> ConversationState:
    """Give a conversation to a colleague (None: unassign). The assignee must be an active user
    who can see the conversation: assigning mail to someone who cannot read it helps nobody."""
    thread = access.get_thread(session, caller, thread_id)
    if assignee_user_id is not None:
        assignee = access.get_user(session, caller, assignee_user_id)
        if not assignee.active:
            raise InvalidInput(
                "assignee_inactive", f"{assignee.email} is deactivated.", field="assignee_user_id"
            )
        if not access.user_sees_thread(session, assignee, thread_id):
            raise InvalidInput(
                "assignee_cannot_see",
                f"{assignee.email} has no access to the mailbox of this conversation.",
                field="assignee_user_id",
                user_id=assignee_user_id,
            )
    if thread.assignee_user_id != assignee_user_id:
        previous = thread.assignee_user_id
        thread.assignee_user_id = assignee_user_id
        session.add(thread)
        if assignee_user_id is None:
            _record(session, caller, thread_id, ActivityKind.UNASSIGNED, previous=previous)
        else:
            _record(
                session,
                caller,
                thread_id,
                ActivityKind.ASSIGNED,
                assignee=assignee_user_id,
                previous=previous,
            )
            notifications.on_assigned(
                session=session,
                tenant_id=caller.tenant_id,
                thread_id=thread_id,
                subject=thread.subject,
                assignee=assignee_user_id,
                actor=caller.user_id,
            )
        session.flush()
    return _state(thread)


def set_status(
    *,
    session: Session,
    caller: Caller,
    thread_id: int,
    status: ConversationStatus,
    snoozed_until: datetime | None = None,
) -> ConversationState:
    thread = access.get_thread(session, caller, thread_id)
    if status is ConversationStatus.SNOOZED:
        if snoozed_until is None or snoozed_until.tzinfo is None:
            raise InvalidInput(
                "snooze_time_required",
                "Say until when to snooze, with a time zone.",
                field="snoozed_until",
            )
        if snoozed_until <= utcnow():
            raise InvalidInput("snooze_in_past", "A snooze must end in the future.", field="snoozed_until")
    elif snoozed_until is not None:
        raise InvalidInput(
            "snooze_time_unexpected", "Only a snooze takes an end time.", field="snoozed_until"
        )
    before = effective_status(thread)
    thread.status = status
    thread.snoozed_until = snoozed_until
    session.add(thread)
    _record(
        session,
        caller,
        thread_id,
        ActivityKind.STATUS,
        status=status.value,
        previous=before.value,
        snoozed_until=snoozed_until.isoformat() if snoozed_until else None,
    )
    ticket_events.follow_conversations(  # its ticket follows, if it has one
        session,
        [thread_id],
        status,
        actor_user_id=caller.user_id,
        reason=ticket_events.CONVERSATION_CLOSED
        if status is ConversationStatus.CLOSED
        else ticket_events.CONVERSATION_REOPENED,
    )
    session.flush()
    return _state(thread)


def mark_read(*, session: Session, caller: Caller, thread_id: int, read: bool = True) -> None:
    """Read or unread for the caller only (never the server's \\Seen flag)."""
    access.get_thread(session, caller, thread_id)
    if caller.user_id is None:
        return
    row = session.exec(
        select(ThreadRead).where(ThreadRead.user_id == caller.user_id, ThreadRead.thread_id == thread_id)
    ).first()
    if not read:
        if row is not None:
            session.delete(row)
            session.flush()
        return
    if row is None:
        row = ThreadRead(user_id=caller.user_id, thread_id=thread_id)
    row.read_at = utcnow()
    session.add(row)
    session.flush()


def _mentioned(session: Session, caller: Caller, body: str) -> tuple[int, ...]:
    handles = {m.group(1).lower().rstrip(".") for m in _MENTION.finditer(body)}
    if not handles:
        return ()
    users = session.exec(
        select(User).where(User.tenant_id == caller.tenant_id, col(User.active).is_(True))
    ).all()
    found: set[int] = set()
    for handle in handles:
        if "@" in handle:
            found.update(u.id or 0 for u in users if u.email == handle)
        else:
            matches = [u for u in users if u.email.split("@", 1)[0] == handle]
            if len(matches) == 1:  # an ambiguous local part mentions nobody rather than the wrong person
                found.add(matches[0].id or 0)
    return tuple(sorted(found))


def add_note(*, session: Session, caller: Caller, thread_id: int, body: str) -> NoteView:
    """An internal note; colleagues @mentioned in it get a mention in their activity."""
    access.get_thread(session, caller, thread_id)
    text = body.strip()
    if not text:
        raise InvalidInput("note_empty", "A note needs some text.", field="body")
    if len(text) > MAX_NOTE_LENGTH:
        raise InvalidInput(
            "note_too_long",
            f"A note has at most {MAX_NOTE_LENGTH} characters.",
            field="body",
            maximum=MAX_NOTE_LENGTH,
        )
    if caller.user_id is None:
        raise InvalidInput("note_needs_user", "Notes are written by a user.", field="caller")
    mentions = _mentioned(session, caller, text)
    note = Note(
        tenant_id=caller.tenant_id,
        thread_id=thread_id,
        author_user_id=caller.user_id,
        body=text,
        mentions=list(mentions),
    )
    session.add(note)
    session.flush()
    _record(session, caller, thread_id, ActivityKind.NOTE, note_id=note.id)
    subject = session.get_one(Thread, thread_id).subject
    for user_id in mentions:
        _record(session, caller, thread_id, ActivityKind.MENTION, note_id=note.id, user_id=user_id)
        notifications.on_mentioned(
            session=session,
            tenant_id=caller.tenant_id,
            thread_id=thread_id,
            subject=subject,
            mentioned=user_id,
            actor=caller.user_id,
            note=text,
        )
    session.flush()
    return _note_view(note)


def _note_view(note: Note) -> NoteView:
    return NoteView(
        id=note.id or 0,
        thread_id=note.thread_id,
        author_user_id=note.author_user_id,
        body=note.body,
        mentions=tuple(note.mentions),
        created_at=note.created_at,
    )


def list_notes(*, session: Session, caller: Caller, thread_id: int) -> tuple[NoteView, ...]:
    access.get_thread(session, caller, thread_id)
    rows = session.exec(select(Note).where(Note.thread_id == thread_id).order_by(col(Note.id))).all()
    return tuple(_note_view(n) for n in rows)


def _activity_view(row: Activity) -> ActivityView:
    return ActivityView(
        id=row.id or 0,
        thread_id=row.thread_id,
        actor_user_id=row.actor_user_id,
        kind=row.kind,
        data=dict(row.data),
        created_at=row.created_at,
    )


def history(*, session: Session, caller: Caller, thread_id: int) -> tuple[ActivityView, ...]:
    access.get_thread(session, caller, thread_id)
    rows = session.exec(
        select(Activity).where(Activity.thread_id == thread_id).order_by(col(Activity.id))
    ).all()
    return tuple(_activity_view(r) for r in rows)


def audit_log(
    *, session: Session, caller: Caller, before_id: int | None = None, limit: int = 100
) -> tuple[ActivityView, ...]:
    """The tenant's activity, newest first (admins only); page with the last id seen."""
    access.require_admin(caller, "read the audit log")
    if not 1 <= limit <= 500:
        raise InvalidInput("invalid_page_size", "A page holds 1 to 500 entries.", field="limit", maximum=500)
    query = select(Activity).where(Activity.tenant_id == caller.tenant_id)
    if before_id is not None:
        query = query.where(col(Activity.id) < before_id)
    rows = session.exec(query.order_by(col(Activity.id).desc()).limit(limit)).all()
    return tuple(_activity_view(r) for r in rows)


def mentions_of(*, session: Session, caller: Caller, limit: int = 50) -> tuple[ActivityView, ...]:
    """Where the caller was mentioned, newest first, in conversations they can still see."""
    if caller.user_id is None:
        return ()
    rows = session.exec(
        select(Activity)
        .join(Thread, col(Thread.id) == col(Activity.thread_id))
        .where(
            Activity.tenant_id == caller.tenant_id,
            Activity.kind == ActivityKind.MENTION,
            access.thread_visible(caller),
        )
        .order_by(col(Activity.id).desc())
        .limit(max(1, min(limit, 200)))
    ).all()
    return tuple(_activity_view(r) for r in rows if r.data.get("user_id") == caller.user_id)


def unread_clause(caller: Caller) -> Any:
    """A WHERE clause on Thread: newer mail than the caller's last read (or never read)."""
    read_after_last = exists().where(
        col(ThreadRead.thread_id) == col(Thread.id),
        col(ThreadRead.user_id) == caller.user_id,
        col(ThreadRead.read_at) >= col(Thread.last_date),
    )
    return ~read_after_last


# The order in which a merged conversation keeps the more active of two states.
_ACTIVITY_ORDER = (
    ConversationStatus.OPEN,
    ConversationStatus.PENDING,
    ConversationStatus.SNOOZED,
    ConversationStatus.CLOSED,
)


def absorb(
    session: Session, *, source: int, target: int, by_user: bool = False, actor_user_id: int | None = None
) -> None:
    """The threading found that conversation `source` is part of `target` (a reply joined them):
    everything the team did on `source` moves to `target` before `source` is deleted. The team's
    state keeps the more active one (open over closed) and an assignee over none."""
    src, dst = session.get(Thread, source), session.get(Thread, target)
    if src is None or dst is None:
        return
    ticket_events.absorb(session, source=source, target=target, actor_user_id=actor_user_id)
    for note in session.exec(select(Note).where(Note.thread_id == source)).all():
        note.thread_id = target
        session.add(note)
    for entry in session.exec(select(Activity).where(Activity.thread_id == source)).all():
        entry.thread_id = target
        session.add(entry)
    readers = set(session.exec(select(ThreadRead.user_id).where(ThreadRead.thread_id == target)).all())
    for read in session.exec(select(ThreadRead).where(ThreadRead.thread_id == source)).all():
        if read.user_id in readers:
            session.delete(read)
        else:
            read.thread_id = target
            session.add(read)
    present = set(session.exec(select(Presence.user_id).where(Presence.thread_id == target)).all())
    for here in session.exec(select(Presence).where(Presence.thread_id == source)).all():
        if here.user_id in present:
            session.delete(here)
        else:
            here.thread_id = target
            session.add(here)
    for pair in session.exec(
        select(ThreadSplit).where(
            (col(ThreadSplit.thread_a) == source) | (col(ThreadSplit.thread_b) == source)
        )
    ).all():
        other = pair.thread_b if pair.thread_a == source else pair.thread_a
        if other == target:
            session.delete(pair)  # merged by hand after a split: the barrier goes
        else:
            pair.thread_a, pair.thread_b = min(other, target), max(other, target)
            session.add(pair)
    if dst.assignee_user_id is None and src.assignee_user_id is not None:
        dst.assignee_user_id = src.assignee_user_id
    if _ACTIVITY_ORDER.index(effective_status(src)) < _ACTIVITY_ORDER.index(effective_status(dst)):
        dst.status, dst.snoozed_until = src.status, src.snoozed_until
    session.add(dst)
    session.add(
        Activity(
            tenant_id=dst.tenant_id,
            thread_id=target,
            actor_user_id=actor_user_id,
            kind=ActivityKind.MERGED,
            data={"from": source, "by_user": by_user},
        )
    )
    session.flush()


def record_link_change(
    *, session: Session, caller: Caller, message_pk: int, kind: ActivityKind, record_kind: str, record_id: int
) -> None:
    """A user linked or unlinked a record: it shows in the conversation's history."""
    message = access.get_message(session, caller, message_pk)
    _record(
        session,
        caller,
        message.thread_id,
        kind,
        message_pk=message_pk,
        record_kind=record_kind,
        record_id=record_id,
    )
    session.flush()
