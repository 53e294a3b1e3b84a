"""Waking snoozed conversations when their time comes (issue 10, item 8: "a snoozed conversation
woke up").

Lists and counts already read a snooze whose time has come as open (`crm.conversations.
effective_status`), so nothing waits on this scan to *show* the conversation; what it adds is the
explicit wake: the row back to `open`, a history entry (which the event stream publishes as
`conversation.status`, reason `snooze_ended`) and the notification mail to the assignee.

Exactly once, with no "last scan" marker to keep: the row's own state is the marker. Each wake is
one transaction that starts with a compare-and-set, `UPDATE thread SET status='open' WHERE id=?
AND status='snoozed' AND snoozed_until <= now`, and only the transaction whose update changed the
row writes the history entry and queues the mail (the send queue is a table of the same database,
so the mail is queued in that very commit). Two scanners (two scheduler processes sharing
PostgreSQL, or two on one SQLite file): the second one's update finds the row already open and
changes nothing. A crash before the commit rolls all three back, and the next scan wakes the
conversation again; a crash after it leaves nothing to redo. The update is the transaction's first
statement on purpose: SQLite refuses to upgrade a read snapshot that another writer has moved past.
"""

from __future__ import annotations

import logging
from datetime import datetime

from sqlalchemy import Engine, update
from sqlmodel import Session, col, select

from core.db import session_scope
from core.types import ActivityKind, ConversationStatus, utcnow
from crm.models import Activity, Thread
from crm.outbound import notifications

log = logging.getLogger(__name__)

BATCH = 500  # candidates read at a time
MAX_BATCHES = 100  # per scan: a backlog past 50,000 waits for the next scan (a minute later)


def due_ids(*, session: Session, now: datetime | None = None, limit: int = BATCH) -> list[int]:
    """Snoozed conversations whose time has come, oldest snooze end first (all tenants)."""
    now = now or utcnow()
    rows = session.exec(
        select(Thread.id)
        .where(Thread.status == ConversationStatus.SNOOZED, col(Thread.snoozed_until) <= now)
        .order_by(col(Thread.snoozed_until), col(Thread.id))
        .limit(limit)
    ).all()
    return [int(r) for r in rows if r is not None]


def wake_one(*, session: Session, thread_id: int, now: datetime | None = None) -> bool:
    """Wake one conversation if it is still snoozed past its time; False when another scanner, a
    user or a customer's new mail was first. Call it in a transaction of its own."""
    now = now or utcnow()
    result = session.execute(
        update(Thread)
        .where(
            col(Thread.id) == thread_id,
            col(Thread.status) == ConversationStatus.SNOOZED,
            col(Thread.snoozed_until) <= now,
        )
        .values(status=ConversationStatus.OPEN, snoozed_until=None)
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        return False
    thread = session.get_one(Thread, thread_id, populate_existing=True)
    session.add(
        Activity(
            tenant_id=thread.tenant_id,
            thread_id=thread_id,
            actor_user_id=None,
            kind=ActivityKind.STATUS,
            data={"status": ConversationStatus.OPEN.value, "previous": "snoozed", "reason": "snooze_ended"},
        )
    )
    if thread.assignee_user_id is not None:
        # `notify` honours the tenant's off switch and the user's preference (and skips a
        # deactivated user); what it queues commits with the wake or not at all.
        notifications.notify(
            session=session,
            tenant_id=thread.tenant_id,
            user_id=thread.assignee_user_id,
            event=notifications.Event.SNOOZE_WOKE,
            values={
                "conversation_subject": thread.subject or "(no subject)",
                "conversation_url": notifications.conversation_url(thread_id),
            },
        )
    session.flush()
    return True


def wake_due(*, engine: Engine | None = None, now: datetime | None = None) -> int:
    """One scan: wake every due snooze, each in its own short transaction. Returns how many this
    scan woke (not counting those another scanner took)."""
    now = now or utcnow()
    woken = 0
    for _ in range(MAX_BATCHES):
        with session_scope(engine) as session:
            ids = due_ids(session=session, now=now)
        for thread_id in ids:
            with session_scope(engine) as session:
                woken += wake_one(session=session, thread_id=thread_id, now=now)
        # A woken row (by us or anyone) is no longer due, so the next read moves on.
        if len(ids) < BATCH:
            break
    if woken:
        log.info("woke %s snoozed conversations", woken)
    return woken
