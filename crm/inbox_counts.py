"""The sidebar's counts: how many conversations each view of the shared inbox holds for a caller.

Four grouped queries whatever the number of views: status x assignee in one pass (covering index),
unread from the caller's own read marks, waiting for reply, and open conversations per account
through `thread_account`. A member's conversations are reached from the accounts they see rather
than by testing every conversation of the tenant (bench/RESULTS.md, 1,000,000 messages).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, String, and_, case, cast, func, literal, or_
from sqlmodel import Session, col, select

from core.caller import Caller
from core.types import ConversationStatus, utcnow
from crm import access
from crm.inbox_views import status_clause, waiting_clause
from crm.models import Thread, ThreadAccount, ThreadRead


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


def _read_open(session: Session, caller: Caller, is_open: ColumnElement[bool]) -> int:
    """Open conversations the caller has read since their last mail: unread = open minus these
    (starting from the caller's few read marks, not from every conversation)."""
    query = (
        select(func.count(col(Thread.id)))
        .select_from(ThreadRead)
        .join(Thread, col(Thread.id) == col(ThreadRead.thread_id))
        .where(
            col(ThreadRead.user_id) == caller.user_id,
            col(ThreadRead.read_at) >= col(Thread.last_date),
            access.thread_visible(caller),
            is_open,
        )
    )
    return int(session.exec(query).one())


def _thread_count(caller: Caller) -> Any:
    # A member's conversations come through thread_account, where one may appear per account.
    return func.count(col(Thread.id)) if caller.is_admin else func.count(func.distinct(col(Thread.id)))


def _counted(caller: Caller, query: Any) -> Any:
    """Count over the caller's conversations: an admin's are the tenant's threads (scanned by the
    status index); a member's are reached from the accounts they see (a few of the tenant's
    accounts), instead of testing every thread of the tenant for visibility."""
    if caller.is_admin:
        return query.where(col(Thread.tenant_id) == caller.tenant_id)
    return (
        query.select_from(ThreadAccount)
        .join(Thread, col(Thread.id) == col(ThreadAccount.thread_id))
        .where(
            col(ThreadAccount.account_id).in_(access.visible_account_ids(caller)),
            col(Thread.tenant_id) == caller.tenant_id,
        )
    )


def view_counts(*, session: Session, caller: Caller) -> ViewCounts:
    """All the sidebar's counts in four grouped queries (status x assignee in one pass, unread,
    waiting, and open conversations per account through `thread_account`)."""
    now = utcnow()
    awake = or_(col(Thread.snoozed_until).is_(None), col(Thread.snoozed_until) <= now)
    effective = case(
        (
            and_(col(Thread.status) == ConversationStatus.SNOOZED, awake),
            literal(ConversationStatus.OPEN.value),
        ),
        else_=cast(col(Thread.status), String),
    ).label("effective")
    nobody = col(Thread.assignee_user_id).is_(None).label("nobody")
    mine_flag = (col(Thread.assignee_user_id) == (caller.user_id or -1)).label("mine")
    tally = {"mine": 0, "unassigned": 0, "open": 0, "pending": 0, "snoozed": 0, "closed": 0}
    for status, is_nobody, is_mine, n in session.execute(
        _counted(caller, select(effective, nobody, mine_flag, _thread_count(caller))).group_by(
            effective, nobody, mine_flag
        )
    ).all():
        status = str(status)
        if status in tally:
            tally[status] += n
        if status == ConversationStatus.OPEN.value:
            tally["unassigned"] += n if is_nobody else 0
            tally["mine"] += n if is_mine else 0
    is_open = status_clause(ConversationStatus.OPEN)

    def count(*clauses: ColumnElement[bool]) -> int:
        return int(session.exec(_counted(caller, select(_thread_count(caller))).where(*clauses)).one())

    per_account = {int(a or 0): 0 for a in session.exec(access.visible_account_ids(caller)).all()}
    for account_id, n in session.execute(
        select(ThreadAccount.account_id, func.count(col(Thread.id)))
        .join(Thread, col(Thread.id) == col(ThreadAccount.thread_id))
        .where(
            col(ThreadAccount.account_id).in_(list(per_account)),
            col(Thread.tenant_id) == caller.tenant_id,
            is_open,
        )
        .group_by(col(ThreadAccount.account_id))
    ).all():
        per_account[int(account_id)] = int(n)
    return ViewCounts(
        mine=tally["mine"] if caller.user_id else 0,
        unassigned=tally["unassigned"],
        open=tally["open"],
        pending=tally["pending"],
        snoozed=tally["snoozed"],
        closed=tally["closed"],
        unread=max(0, tally["open"] - _read_open(session, caller, is_open)) if caller.user_id else 0,
        waiting=count(waiting_clause(session, caller)),
        per_account=per_account,
    )
