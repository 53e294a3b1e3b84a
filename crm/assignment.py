"""Who gets a new conversation, and what new mail does to existing ones.

`on_new_mail` runs inside the sync's batch transaction (under the tenant lock the mail store
already holds), right after threading and linking, so a conversation is never stored without the
owner its account's rule gives it, and two workers never hand out the same rota position twice.

Rules per account: none (the team triages), round-robin over a chosen rota with an optional cap
of open conversations per user, or the owner of the sender's contact (falling back to the rota).
Only active users who can see the account are ever chosen.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select as sa_select
from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import InvalidInput
from core.types import ActivityKind, ConversationStatus, Direction, utcnow
from crm import access, ticket_events
from crm.bulk import select_rows
from crm.models import (
    AccountAccess,
    Activity,
    AssignmentRule,
    Contact,
    MailAccount,
    Message,
    MessageLink,
    Thread,
    User,
)
from crm.outbound import notifications
from crm.stored_mail import MailRow

_THREAD = Thread.__table__  # type: ignore[attr-defined]


class AssignMode(enum.StrEnum):
    NONE = "none"
    ROUND_ROBIN = "round_robin"
    CONTACT_OWNER = "contact_owner"


@dataclass(frozen=True, slots=True)
class RuleView:
    account_id: int
    mode: AssignMode
    user_ids: tuple[int, ...]
    max_open: int | None
    follow_up_days: int


# ---------------------------------------------------------------------------------------------
# The pure rule


def next_in_rota(
    rota: Sequence[int],
    eligible: frozenset[int],
    open_counts: Mapping[int, int],
    max_open: int | None,
    last: int | None,
) -> int | None:
    """The next eligible user after `last` in the rota, skipping anyone at the cap; None when
    nobody can take it (the conversation stays unassigned for the team to triage)."""
    if not rota:
        return None
    start = rota.index(last) + 1 if last in rota else 0
    for step in range(len(rota)):
        user = rota[(start + step) % len(rota)]
        if user in eligible and (max_open is None or open_counts.get(user, 0) < max_open):
            return user
    return None


def choose(
    mode: AssignMode,
    *,
    rota: Sequence[int],
    eligible: frozenset[int],
    open_counts: Mapping[int, int],
    max_open: int | None,
    last: int | None,
    contact_owner: int | None,
) -> int | None:
    if mode is AssignMode.NONE:
        return None
    if mode is AssignMode.CONTACT_OWNER and contact_owner is not None and contact_owner in eligible:
        return contact_owner
    return next_in_rota(rota, eligible, open_counts, max_open, last)


# ---------------------------------------------------------------------------------------------
# Settings (admins)


def _view(account_id: int, rule: AssignmentRule | None) -> RuleView:
    if rule is None:
        return RuleView(
            account_id=account_id, mode=AssignMode.NONE, user_ids=(), max_open=None, follow_up_days=3
        )
    return RuleView(
        account_id=account_id,
        mode=AssignMode(rule.mode),
        user_ids=tuple(rule.user_ids),
        max_open=rule.max_open,
        follow_up_days=rule.follow_up_days,
    )


def get_rule(*, session: Session, caller: Caller, account_id: int) -> RuleView:
    account = access.get_account(session, caller, account_id)
    return _view(account.id or 0, session.get(AssignmentRule, account.id))


def set_rule(
    *,
    session: Session,
    caller: Caller,
    account_id: int,
    mode: AssignMode,
    user_ids: Sequence[int] = (),
    max_open: int | None = None,
    follow_up_days: int = 3,
) -> RuleView:
    account = access.get_account(session, caller, account_id)  # first: invisible is not found
    access.require_admin(caller, "change an account's assignment rule")
    rota = list(dict.fromkeys(user_ids))
    for user_id in rota:
        access.get_user(session, caller, user_id)
    if mode is AssignMode.ROUND_ROBIN and not rota:
        raise InvalidInput("rota_empty", "Round-robin needs at least one user.", field="user_ids")
    if max_open is not None and max_open < 1:
        raise InvalidInput("invalid_cap", "The cap is at least 1 open conversation.", field="max_open")
    if not 1 <= follow_up_days <= 365:
        raise InvalidInput("invalid_follow_up", "Follow up after 1 to 365 days.", field="follow_up_days")
    rule = session.get(AssignmentRule, account.id) or AssignmentRule(
        account_id=account.id or 0, tenant_id=caller.tenant_id
    )
    rule.mode, rule.user_ids, rule.max_open = mode.value, rota, max_open
    rule.follow_up_days, rule.updated_at = follow_up_days, utcnow()
    if rule.last_user_id not in rota:
        rule.last_user_id = None
    session.add(rule)
    session.flush()
    return _view(account.id or 0, rule)


# ---------------------------------------------------------------------------------------------
# New mail (called by the mail store inside the batch transaction)


def _eligible(session: Session, account_id: int) -> frozenset[int]:
    rows = session.exec(
        select(User.id)
        .join(AccountAccess, col(AccountAccess.user_id) == col(User.id))
        .join(MailAccount, col(MailAccount.id) == col(AccountAccess.account_id))
        .where(
            AccountAccess.account_id == account_id,
            col(User.active).is_(True),
            col(MailAccount.active).is_(True),
        )
    ).all()
    return frozenset(int(r or 0) for r in rows)


def _open_counts(session: Session, tenant_id: int, users: Sequence[int]) -> dict[int, int]:
    if not users:
        return {}
    rows = session.exec(
        select(Thread.assignee_user_id, func.count(col(Thread.id)))
        .where(
            Thread.tenant_id == tenant_id,
            col(Thread.assignee_user_id).in_(users),
            col(Thread.status) != ConversationStatus.CLOSED,
        )
        .group_by(col(Thread.assignee_user_id))
    ).all()
    return {int(user or 0): int(count) for user, count in rows}


def _contact_owner(session: Session, thread_id: int) -> int | None:
    owner = session.exec(
        select(Contact.owner_user_id)
        .join(
            MessageLink,
            (col(MessageLink.record_id) == col(Contact.id)) & (col(MessageLink.record_kind) == "contact"),
        )
        .join(Message, col(Message.id) == col(MessageLink.message_pk))
        .where(Message.thread_id == thread_id, col(Contact.owner_user_id).is_not(None))
        .order_by(col(Message.date), col(Message.id))
    ).first()
    return int(owner) if owner is not None else None


@dataclass(slots=True)
class _ThreadView:
    """A thread `on_new_mail` only reads."""

    id: int
    status: ConversationStatus
    message_count: int
    assignee_user_id: int | None
    subject: str


def on_new_mail(
    *, session: Session, tenant_id: int, account_id: int, messages: Sequence[MailRow]
) -> list[int]:
    """Reopen conversations a customer wrote to again; give new conversations an owner by the
    account's rule. Returns the ids of the conversations assigned."""
    by_thread: dict[int, list[MailRow]] = {}
    for message in messages:
        if message.thread_id is not None:
            by_thread.setdefault(message.thread_id, []).append(message)
    if not by_thread:
        return []
    rule = session.get(AssignmentRule, account_id)
    mode = AssignMode(rule.mode) if rule is not None else AssignMode.NONE
    # The threads read as columns; only those this may change (reopen, assign) as ORM objects,
    # in one query: a first sync touches hundreds of threads per batch and changes few.
    views = select_rows(
        session,
        sa_select(
            _THREAD.c.id,
            _THREAD.c.status,
            _THREAD.c.message_count,
            _THREAD.c.assignee_user_id,
            _THREAD.c.subject,
        ).where(_THREAD.c.id.in_(sorted(by_thread))),
    )
    changing: list[int] = []
    for thread_id, status, count, assignee, _ in views:
        new_here = by_thread[thread_id]
        inbound = any(m.direction is Direction.INBOUND for m in new_here)
        reopens = inbound and status is not ConversationStatus.OPEN and count > len(new_here)
        assigns = inbound and count == len(new_here) and assignee is None and mode is not AssignMode.NONE
        if reopens or assigns:
            changing.append(thread_id)
    held = (
        {t.id: t for t in session.exec(select(Thread).where(col(Thread.id).in_(changing))).all()}
        if changing
        else {}
    )
    threads: list[Thread | _ThreadView] = [
        held.get(thread_id) or _ThreadView(thread_id, status, count, assignee, subject)
        for thread_id, status, count, assignee, subject in views
    ]
    eligible = _eligible(session, account_id) if mode is not AssignMode.NONE else frozenset()
    rota = list(rule.user_ids) if rule is not None else []
    counts = _open_counts(session, tenant_id, sorted(eligible)) if rule and rule.max_open else {}
    assigned: list[int] = []
    reopened: list[int] = []
    watchers: notifications.InboxWatchers | None = None  # looked up at the first new conversation
    for thread in sorted(threads, key=lambda t: t.id or 0):
        new_here = by_thread[thread.id or 0]
        inbound = any(m.direction is Direction.INBOUND for m in new_here)
        if inbound and thread.status is not ConversationStatus.OPEN and thread.message_count > len(new_here):
            assert isinstance(thread, Thread)  # loaded above as one that changes
            before = thread.status
            thread.status, thread.snoozed_until = ConversationStatus.OPEN, None
            session.add(thread)
            session.add(
                Activity(
                    tenant_id=tenant_id,
                    thread_id=thread.id,
                    kind=ActivityKind.STATUS,
                    data={"status": "open", "previous": before.value, "reason": "new_mail"},
                )
            )
            reopened.append(thread.id or 0)
        is_new = thread.message_count == len(new_here)
        if is_new and inbound:
            first = next(m for m in new_here if m.direction is Direction.INBOUND)
            if watchers is None:
                watchers = notifications.inbox_watchers(
                    session=session, tenant_id=tenant_id, account_id=account_id
                )
            notifications.on_new_conversation(
                session=session,
                tenant_id=tenant_id,
                account_id=account_id,
                thread_id=thread.id or 0,
                subject=thread.subject,
                from_address=first.from_email,
                watchers=watchers,
            )
        if not is_new or thread.assignee_user_id is not None or mode is AssignMode.NONE or not inbound:
            continue
        choice = choose(
            mode,
            rota=rota,
            eligible=eligible,
            open_counts=counts,
            max_open=rule.max_open if rule else None,
            last=rule.last_user_id if rule else None,
            contact_owner=_contact_owner(session, thread.id or 0)
            if mode is AssignMode.CONTACT_OWNER
            else None,
        )
        if choice is None:
            continue
        assert isinstance(thread, Thread)  # loaded above as one that changes
        thread.assignee_user_id = choice
        session.add(thread)
        counts[choice] = counts.get(choice, 0) + 1
        if rule is not None and choice in rota:
            rule.last_user_id = choice
            session.add(rule)
        session.add(
            Activity(
                tenant_id=tenant_id,
                thread_id=thread.id,
                kind=ActivityKind.ASSIGNED,
                data={"assignee": choice, "previous": None, "rule": mode.value},
            )
        )
        notifications.on_assigned(
            session=session,
            tenant_id=tenant_id,
            thread_id=thread.id or 0,
            subject=thread.subject,
            assignee=choice,
            actor=None,
        )
        assigned.append(thread.id or 0)
    # The reopened conversations' tickets reopen with them (the customer wrote again).
    ticket_events.follow_conversations(
        session, reopened, ConversationStatus.OPEN, actor_user_id=None, reason=ticket_events.NEW_MAIL
    )
    session.flush()
    return assigned
