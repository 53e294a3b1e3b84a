"""The sidebar's counts: how many conversations each view of the shared inbox holds for a caller.

Read from tallies rather than from the conversations (0022): `thread_tally` counts conversations
per (accounts holding their mail, status, assignee, newest message ours), kept exact by triggers
on every write. A caller's counts are the tally rows whose accounts meet the ones the caller sees:
a few hundred rows whatever the size of the tenant, and a conversation in two of a member's
accounts is one row, counted once. What changes with time alone is read apart, from small index
ranges: snoozes whose time has come (open again), and the recent end of "waiting for reply".

Unread for me and the per-deal-stage counts come from tallies too (0026): `thread_read_tally`
(per user: conversations read since their last mail, per accounts and status) and
`thread_stage_tally` (per stage, accounts of the linked mail and status). Both are appended to
(+1/-1 rows, never a counter row updated in place: the migration says why) and summed here; when
a user's or a tenant's rows pile up they are folded into one row per key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy import delete, func, insert, or_
from sqlmodel import Session, col, select

from core.caller import Caller
from core.types import ConversationStatus, Direction, utcnow
from crm import access
from crm.models import (
    AssignmentRule,
    Deal,
    Thread,
    ThreadRead,
    ThreadReadTally,
    ThreadStage,
    ThreadStageTally,
    ThreadTally,
)

DEFAULT_FOLLOW_UP_DAYS = 3
# Appended tally rows of one user (unread) or one tenant (stages) beyond which a count folds
# them: summing a few hundred rows costs well under a millisecond, a fold a few.
FOLD_ROWS = 200


@dataclass(frozen=True, slots=True)
class ViewCounts:
    mine: int  # open and assigned to the caller
    unassigned: int  # open and nobody's
    open: int
    pending: int
    snoozed: int
    closed: int
    unread: int  # open and unread by the caller
    waiting: int  # waiting for the customer's reply past the follow-up days
    per_account: dict[int, int]  # open conversations per account the caller sees
    # Open conversations linked to a deal in each stage (mail the caller sees), every stage of the
    # tenant's deals listed: the list's `deal_stage` filter shows them.
    per_deal_stage: dict[str, int] = field(default_factory=dict)


def _accounts_of(key: str) -> frozenset[int]:
    return frozenset(int(a) for a in key.strip(",").split(",") if a)


@dataclass(slots=True)
class _Tally:
    by_status: dict[str, int]
    mine: int = 0
    unassigned: int = 0
    ours_last_not_closed: int = 0
    per_account: dict[int, int] = field(default_factory=dict)

    def add(self, *, status: str, accounts: frozenset[int], n: int, nobody: int, mine: int) -> None:
        """`n` conversations, `nobody` of them unassigned and `mine` the caller's."""
        self.by_status[status] = self.by_status.get(status, 0) + n
        if status == ConversationStatus.OPEN.value:
            self.unassigned += nobody
            self.mine += mine
            for account_id in accounts:
                if account_id in self.per_account:
                    self.per_account[account_id] += n


def _visible(accounts: frozenset[int], visible: set[int], admin: bool) -> bool:
    # An admin sees the tenant, including a conversation no account holds (yet).
    return admin or not accounts.isdisjoint(visible)


def view_counts(*, session: Session, caller: Caller) -> ViewCounts:
    """All the sidebar's counts: the tally rows of the tenant grouped by (accounts, status,
    assignee), then the time-dependent corrections, unread and the deal stages."""
    now = utcnow()
    admin = caller.is_admin
    me = caller.user_id or 0
    visible = {int(a or 0) for a in session.exec(access.visible_account_ids(caller)).all()}
    tally = _Tally(by_status={}, per_account=dict.fromkeys(sorted(visible), 0))
    # Summed per (accounts, status, ours last) in SQL: a few hundred rows whatever the number of
    # users (status read as text: converting thousands of rows to enums cost more than the query).
    n = col(ThreadTally.n)
    status_text = sa.cast(col(ThreadTally.status), sa.String)
    rows = session.execute(
        sa.select(
            col(ThreadTally.account_key),
            status_text,
            col(ThreadTally.ours_last),
            func.sum(n),
            func.sum(sa.case((col(ThreadTally.assignee_user_id) == 0, n), else_=0)),
            func.sum(sa.case((col(ThreadTally.assignee_user_id) == me, n), else_=0)),
        )
        .where(col(ThreadTally.tenant_id) == caller.tenant_id, n != 0)
        .group_by(col(ThreadTally.account_key), status_text, col(ThreadTally.ours_last))
    ).all()
    for key, status, ours_last, total, nobody, mine in rows:
        accounts = _accounts_of(key)
        if not _visible(accounts, visible, admin):
            continue
        tally.add(
            status=str(status),
            accounts=accounts,
            n=int(total),
            nobody=int(nobody),
            mine=int(mine) if me else 0,
        )
        if ours_last and status != ConversationStatus.CLOSED.value:
            tally.ours_last_not_closed += int(total)
    # Snoozes whose time has come are open (no job wakes them): move them across.
    woken: list[int] = []
    for thread_id, key, assignee in session.exec(
        select(Thread.id, Thread.account_key, Thread.assignee_user_id).where(
            col(Thread.tenant_id) == caller.tenant_id,
            col(Thread.status) == ConversationStatus.SNOOZED,
            or_(col(Thread.snoozed_until).is_(None), col(Thread.snoozed_until) <= now),
        )
    ).all():
        accounts = _accounts_of(key)
        if not _visible(accounts, visible, admin):
            continue
        woken.append(thread_id or 0)
        tally.add(status=ConversationStatus.SNOOZED.value, accounts=accounts, n=-1, nobody=0, mine=0)
        tally.add(
            status=ConversationStatus.OPEN.value,
            accounts=accounts,
            n=1,
            nobody=int(assignee is None),
            mine=int(bool(me) and assignee == me),
        )
    by_status = tally.by_status
    opened = by_status.get(ConversationStatus.OPEN.value, 0)
    return ViewCounts(
        mine=tally.mine,
        unassigned=tally.unassigned,
        open=opened,
        pending=by_status.get(ConversationStatus.PENDING.value, 0),
        snoozed=by_status.get(ConversationStatus.SNOOZED.value, 0),
        closed=by_status.get(ConversationStatus.CLOSED.value, 0),
        unread=max(0, opened - _read_open(session, me, visible, admin, woken)) if me else 0,
        waiting=tally.ours_last_not_closed - _not_yet_waiting(session, caller, visible, now),
        per_account=tally.per_account,
        per_deal_stage=_stage_counts(session, caller, visible, woken),
    )


def _summed(
    session: Session, table: type[ThreadReadTally] | type[ThreadStageTally], scope: Any
) -> list[tuple[Any, ...]]:
    """The appended rows of one scope summed per key: (key columns..., sum), the status as text
    (turning thousands of rows into enums costs more than the query). Folds the rows when they
    outnumber the keys by far, seen from the same read."""
    columns = [c for c in sa.inspect(table).columns if c.name not in ("id", "n")]
    keys = [sa.cast(c, sa.String) if c.name == "status" else c for c in columns]
    found = session.execute(
        sa.select(*keys, func.sum(col(table.n)), func.count()).where(scope).group_by(*keys)
    ).all()
    if sum(int(row[-1]) for row in found) > 2 * len(found) + FOLD_ROWS:
        _fold(session, table, scope, columns)
    return [tuple(row[:-1]) for row in found]


def _fold(
    session: Session, table: type[ThreadReadTally] | type[ThreadStageTally], scope: Any, columns: list[Any]
) -> None:
    """Replace the appended rows of one scope by one row per key. In a short transaction of its
    own, committed whatever the caller's session does (a read is rolled back), and skipped when
    SQLite's writer is busy (the next count folds). Safe with writers appending meanwhile: the
    delete returns exactly the rows it removed, and their sum is written back; rows appended
    after it started are left as they are."""
    bind = session.get_bind()
    engine = bind if isinstance(bind, sa.Engine) else bind.engine
    with engine.connect() as conn:
        busy = None
        if engine.dialect.name == "sqlite":  # a count must not wait for a sync's batch: fold later
            busy = conn.exec_driver_sql("PRAGMA busy_timeout").scalar()
            conn.exec_driver_sql("PRAGMA busy_timeout=50")
            conn.commit()
        try:
            sums: dict[tuple[Any, ...], int] = {}
            for *key, n in conn.execute(delete(table).where(scope).returning(*columns, col(table.n))).all():
                sums[tuple(key)] = sums.get(tuple(key), 0) + int(n)
            folded = [
                dict(zip([c.name for c in columns], key, strict=True), n=n) for key, n in sums.items() if n
            ]
            if folded:
                conn.execute(insert(table), folded)
            conn.commit()
        except sa.exc.OperationalError:
            conn.rollback()  # SQLite busy: nothing folded, nothing lost
        finally:
            if busy is not None:
                conn.exec_driver_sql(f"PRAGMA busy_timeout={int(busy)}")
                conn.commit()


def _read_open(session: Session, me: int, visible: set[int], admin: bool, woken: list[int]) -> int:
    """Open conversations the caller sees and has read since their last mail (unread = open minus
    these): the caller's read tally, plus those among the woken snoozes."""
    open_ = ConversationStatus.OPEN.value
    read = sum(
        int(total)
        for _, key, status, total in _summed(session, ThreadReadTally, col(ThreadReadTally.user_id) == me)
        if status == open_ and _visible(_accounts_of(key), visible, admin)
    )
    if woken:  # already known visible
        read += int(
            session.exec(
                select(func.count(col(ThreadRead.id)))
                .join(Thread, col(Thread.id) == col(ThreadRead.thread_id))
                .where(
                    col(ThreadRead.user_id) == me,
                    col(ThreadRead.thread_id).in_(woken),
                    col(ThreadRead.read_at) >= col(Thread.last_date),
                )
            ).one()
        )
    return read


def _not_yet_waiting(session: Session, caller: Caller, visible: set[int], now: datetime) -> int:
    """Conversations tallied as "ours last, not closed" that are not waiting yet: their last
    message is more recent than the follow-up days of every account of theirs the caller sees
    (the same rule as `inbox_views.waiting_clause`). Only the last few days are read."""
    days_of = dict(
        session.exec(
            select(AssignmentRule.account_id, AssignmentRule.follow_up_days).where(
                AssignmentRule.tenant_id == caller.tenant_id
            )
        ).all()
    )
    delays = {a: days_of.get(a, DEFAULT_FOLLOW_UP_DAYS) for a in visible}
    if not delays:
        return 0
    one_delay = len(set(delays.values())) == 1
    longest = max(delays.values())
    rows = session.exec(
        select(Thread.account_key, Thread.last_date).where(
            col(Thread.tenant_id) == caller.tenant_id,
            col(Thread.last_direction) == Direction.OUTBOUND,
            or_(col(Thread.last_date).is_(None), col(Thread.last_date) > now - timedelta(days=longest)),
            col(Thread.status) != ConversationStatus.CLOSED,
        )
    ).all()
    not_yet = 0
    for key, last in rows:
        accounts = _accounts_of(key)
        if not _visible(accounts, visible, caller.is_admin):
            continue
        if last is None:
            not_yet += 1
        elif one_delay:
            not_yet += last > now - timedelta(days=longest)
        else:
            not_yet += all(last > now - timedelta(days=delays[a]) for a in accounts & visible)
    return not_yet


def _stage_counts(session: Session, caller: Caller, visible: set[int], woken: list[int]) -> dict[str, int]:
    """Open conversations holding a message the caller sees that is linked to a deal, per stage of
    the deal (a conversation about deals in two stages counts in both), every stage of the
    tenant's deals listed: the stage tally, plus the woken snoozes' stages."""
    stages = dict.fromkeys(
        sorted(
            session.exec(select(Deal.stage).where(col(Deal.tenant_id) == caller.tenant_id).distinct()).all()
        ),
        0,
    )
    if not stages:
        return {}
    open_ = ConversationStatus.OPEN.value
    rows: list[tuple[str, str, int]] = [
        (stage, key, int(total))
        for _, stage, key, status, total in _summed(
            session, ThreadStageTally, col(ThreadStageTally.tenant_id) == caller.tenant_id
        )
        if status == open_
    ]
    if woken:
        rows += [
            (stage, key, 1)
            for stage, key in session.exec(
                select(ThreadStage.stage, ThreadStage.stage_key).where(col(ThreadStage.thread_id).in_(woken))
            ).all()
        ]
    for stage, key, total in rows:
        if stage in stages and _visible(_accounts_of(key), visible, caller.is_admin):
            stages[stage] += int(total)
    return stages
