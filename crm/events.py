"""Live events for one user: new mail, assignments, status changes, notes, mentions, presence.

Events are read from what is already stored (new `message` rows, the `activity` log, the
`presence` table), past a cursor, through the visibility rule: nothing is published to a
channel a caller could listen to without permission, and a sync running in another process is
seen as soon as its batch commits. The stream polls in short transactions (never a session held
while waiting); the cursor is the SSE `Last-Event-ID`, so a reconnecting browser resumes where it
stopped instead of missing or replaying events.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func
from sqlalchemy.orm import load_only
from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import InvalidInput
from core.types import ActivityKind, utcnow
from crm import access
from crm.models import Activity, Message, Presence, Thread, User

# PostgreSQL: the channel the triggers of migration 0026 notify (payload: the tenant id) when a
# transaction stores mail, activity or presence; the server's streams listen (inbox_api.live).
EVENTS_CHANNEL = "crm_inbox_events"
PRESENCE_TTL = timedelta(seconds=30)
PRESENCE_STATES = ("viewing", "replying")
MAX_EVENTS = 200  # per poll; the rest comes with the next one


@dataclass(frozen=True, slots=True)
class Cursor:
    message_id: int = 0
    activity_id: int = 0

    def encode(self) -> str:
        return f"m{self.message_id}-a{self.activity_id}"

    @classmethod
    def decode(cls, value: str | None) -> Cursor | None:
        match = re.fullmatch(r"m(\d{1,18})-a(\d{1,18})", (value or "").strip())
        return cls(int(match.group(1)), int(match.group(2))) if match else None


@dataclass(frozen=True, slots=True)
class Event:
    type: str  # message.new | conversation.assigned | conversation.status | note.new | mention | presence
    thread_id: int | None
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Batch:
    events: tuple[Event, ...]
    cursor: Cursor


@dataclass(frozen=True, slots=True)
class PresenceView:
    user_id: int
    name: str
    state: str
    since: datetime


def start(*, session: Session) -> Cursor:
    """A cursor at "now": a new stream starts with what happens next, not with history."""
    last_message = session.exec(select(func.max(col(Message.id)))).one() or 0
    last_activity = session.exec(select(func.max(col(Activity.id)))).one() or 0
    return Cursor(int(last_message), int(last_activity))


_ACTIVITY_EVENTS = {
    ActivityKind.ASSIGNED: "conversation.assigned",
    ActivityKind.UNASSIGNED: "conversation.assigned",
    ActivityKind.STATUS: "conversation.status",
    ActivityKind.NOTE: "note.new",
    ActivityKind.MENTION: "mention",
}


_EVENT_COLUMNS: tuple[Any, ...] = (
    Message.id,
    Message.thread_id,
    Message.subject,
    Message.from_email,
    Message.direction,
)


def poll(*, session: Session, caller: Caller, cursor: Cursor) -> Batch:
    """Events after `cursor` that the caller may see, and the cursor to continue from."""
    events: list[Event] = []
    # Ids are scanned in full past the cursor (bounded), then filtered by visibility: the
    # cursor moves past what the caller may not see too, so it is never read again.
    new_ids = session.exec(
        select(Message.id)
        .where(col(Message.id) > cursor.message_id, Message.tenant_id == caller.tenant_id)
        .order_by(col(Message.id))
        .limit(MAX_EVENTS)
    ).all()
    message_cursor = max([cursor.message_id, *(int(i or 0) for i in new_ids)])
    if new_ids:
        visible = session.exec(
            select(Message)
            .options(load_only(*_EVENT_COLUMNS))  # never the bodies or raw bytes of a batch
            .where(col(Message.id).in_(new_ids), access.message_visible(caller))
            .order_by(col(Message.id))
        ).all()
        for m in visible:
            data = {
                "message": m.id,
                "subject": m.subject,
                "from": m.from_email,
                "direction": m.direction.value,
            }
            events.append(Event("message.new", m.thread_id, data))
    activity = session.exec(
        select(Activity)
        .where(col(Activity.id) > cursor.activity_id, Activity.tenant_id == caller.tenant_id)
        .order_by(col(Activity.id))
        .limit(MAX_EVENTS)
    ).all()
    activity_cursor = max([cursor.activity_id, *(a.id or 0 for a in activity)])
    thread_ids = {a.thread_id for a in activity if a.thread_id is not None}
    visible_threads = set(
        session.exec(
            select(Thread.id).where(col(Thread.id).in_(thread_ids), access.thread_visible(caller))
        ).all()
        if thread_ids
        else []
    )
    for row in activity:
        kind = _ACTIVITY_EVENTS.get(row.kind)
        if kind is None or row.thread_id not in visible_threads:
            continue
        if row.kind is ActivityKind.MENTION and row.data.get("user_id") != caller.user_id:
            continue  # a mention is for the mentioned user
        events.append(Event(kind, row.thread_id, {"actor": row.actor_user_id, **row.data}))
    return Batch(tuple(events), Cursor(message_cursor, activity_cursor))


# ---------------------------------------------------------------------------------------------
# Presence


def heartbeat(*, session: Session, caller: Caller, thread_id: int, state: str) -> tuple[PresenceView, ...]:
    """The caller is viewing (or replying to) a conversation; repeat within 30 s to stay.
    Returns who else is there, so a reply is not written twice."""
    if state not in (*PRESENCE_STATES, "left"):
        raise InvalidInput(
            "invalid_presence",
            "Presence is viewing, replying or left.",
            field="state",
            allowed=PRESENCE_STATES,
        )
    access.get_thread(session, caller, thread_id)
    if caller.user_id is not None:
        row = session.exec(
            select(Presence).where(Presence.user_id == caller.user_id, Presence.thread_id == thread_id)
        ).first()
        now = utcnow()
        if state == "left":
            if row is not None:  # expire now rather than delete: the streams see it go
                row.expires_at = now
                session.add(row)
        else:
            if row is None:
                row = Presence(
                    tenant_id=caller.tenant_id, user_id=caller.user_id, thread_id=thread_id, state=state
                )
            if row.state != state:
                row.updated_at = now
            row.state, row.expires_at = state, now + PRESENCE_TTL
            session.add(row)
        session.flush()
    return present(session=session, caller=caller, thread_id=thread_id)


def present(*, session: Session, caller: Caller, thread_id: int) -> tuple[PresenceView, ...]:
    """Everyone (but the caller) viewing or replying to a conversation now."""
    access.get_thread(session, caller, thread_id)
    rows = session.exec(
        select(Presence, User)
        .join(User, col(User.id) == col(Presence.user_id))
        .where(
            Presence.thread_id == thread_id, col(Presence.expires_at) > utcnow(), col(User.active).is_(True)
        )
        .order_by(col(Presence.updated_at))
    ).all()
    return tuple(
        PresenceView(
            user_id=user.id or 0,
            name=f"{user.first_name} {user.last_name}".strip() or user.email,
            state=presence.state,
            since=presence.updated_at,
        )
        for presence, user in rows
        if user.id != caller.user_id
    )


def presence_changes(
    *, session: Session, caller: Caller, since: datetime, now: datetime
) -> tuple[Event, ...]:
    """One "presence" event per visible conversation where someone arrived, changed from viewing
    to replying, or left (or timed out) between `since` and `now`."""
    changed = session.exec(
        select(Presence.thread_id)
        .where(
            Presence.tenant_id == caller.tenant_id,
            (col(Presence.updated_at) > since)
            | ((col(Presence.expires_at) > since) & (col(Presence.expires_at) <= now)),
        )
        .distinct()
    ).all()
    if not changed:
        return ()
    visible = session.exec(
        select(Thread.id)
        .where(col(Thread.id).in_(changed), access.thread_visible(caller))
        .order_by(col(Thread.id))
    ).all()
    events = []
    for thread_id in visible:
        people = present(session=session, caller=caller, thread_id=thread_id or 0)
        events.append(
            Event(
                "presence",
                thread_id,
                {"people": [{"user_id": p.user_id, "name": p.name, "state": p.state} for p in people]},
            )
        )
    return tuple(events)
