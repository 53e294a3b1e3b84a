"""The sidebar's counts come from tallies kept by triggers (0022): after any mix of writes (the
team's actions, new mail in one or two accounts, merges, splits, snoozes waking by time, deals
changing stage) every count equals what the matching conversation list holds. Unread and the
deal stages come from appended tallies (0026), checked here against their definitions too."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from itertools import count
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from core.caller import Caller
from core.db import session_scope
from core.errors import DomainError
from core.types import ConversationStatus, Direction, UidState
from crm import access, conversations, inbox_counts, inbox_views, record_lists, thread_edits
from crm.inbox_views import Assignee, ThreadFilter
from crm.models import (
    AssignmentRule,
    Deal,
    FolderState,
    ImapUid,
    Message,
    MessageLink,
    Thread,
    ThreadAccount,
    ThreadDeal,
    ThreadRead,
    ThreadReadTally,
    ThreadStage,
    ThreadStageTally,
    ThreadTally,
)
from crm.rules.linking import LinkReason, RecordKind
from tests.crm.world import World, build_world

STAGES = ("qualified", "proposal", "won")
OPEN = ConversationStatus.OPEN


@pytest.fixture
def world(db: Engine) -> World:
    return build_world(db)


def _listed(session: Session, caller: Caller, **filters: Any) -> int:
    page = inbox_views.list_threads(
        session=session, caller=caller, filters=ThreadFilter(**filters), limit=inbox_views.MAX_PAGE
    )
    assert page.next_cursor is None
    return len(page.items)


def _linked_open(session: Session, caller: Caller, stage: str) -> set[int]:
    """The definition, from the messages themselves: open conversations with a message the caller
    sees linked to a deal in `stage` (independent of the `thread_deal` pairs the service reads)."""
    rows = session.exec(
        select(Thread.id)
        .join(Message, col(Message.thread_id) == col(Thread.id))
        .join(MessageLink, col(MessageLink.message_pk) == col(Message.id))
        .join(Deal, col(Deal.id) == col(MessageLink.record_id))
        .where(
            col(MessageLink.record_kind) == RecordKind.DEAL,
            col(Deal.stage) == stage,
            access.message_visible(caller),
            inbox_views.status_clause(OPEN),
        )
    ).all()
    return {t or 0 for t in rows}


def _check(
    db: Engine, world: World, names: tuple[str, ...] = ("admin", "alice", "bob", "nobody", "other_admin")
) -> None:
    with Session(db) as s:
        # The tallies are the thread table grouped: nothing drifts, nothing goes negative.
        grouped = {
            (tenant, key, str(status), assignee or 0, direction == Direction.OUTBOUND): n
            for tenant, key, status, assignee, direction, n in s.execute(
                sa.select(
                    col(Thread.tenant_id),
                    col(Thread.account_key),
                    col(Thread.status),
                    col(Thread.assignee_user_id),
                    col(Thread.last_direction),
                    func.count(),
                ).group_by(
                    col(Thread.tenant_id),
                    col(Thread.account_key),
                    col(Thread.status),
                    col(Thread.assignee_user_id),
                    col(Thread.last_direction),
                )
            ).all()
        }
        tallied = {
            (t.tenant_id, t.account_key, str(t.status), t.assignee_user_id, t.ours_last): t.n
            for t in s.exec(select(ThreadTally)).all()
        }
        assert min(tallied.values(), default=0) >= 0
        # Each conversation's key names the accounts of thread_account, in order.
        held: dict[int, list[int]] = {}
        for thread_id, account_id in s.exec(
            select(ThreadAccount.thread_id, ThreadAccount.account_id).order_by(col(ThreadAccount.account_id))
        ).all():
            held.setdefault(thread_id, []).append(account_id)
        for pk, key in s.exec(select(Thread.id, Thread.account_key)).all():
            accounts = held.get(pk or 0, [])
            assert key == ("," + ",".join(map(str, accounts)) + "," if accounts else ""), pk
        assert {k: n for k, n in tallied.items() if n} == grouped
        _check_appended_tallies(s)
        for name in names:
            caller = world.caller(name)
            got = inbox_counts.view_counts(session=s, caller=caller)
            expected = inbox_counts.ViewCounts(
                mine=_listed(s, caller, status=OPEN, assignee=Assignee.ME),
                unassigned=_listed(s, caller, status=OPEN, assignee=Assignee.UNASSIGNED),
                open=_listed(s, caller, status=OPEN),
                pending=_listed(s, caller, status=ConversationStatus.PENDING),
                snoozed=_listed(s, caller, status=ConversationStatus.SNOOZED),
                closed=_listed(s, caller, status=ConversationStatus.CLOSED),
                unread=_listed(s, caller, status=OPEN, unread=True),
                waiting=_listed(s, caller, waiting=True),
                per_account={a: _listed(s, caller, account_id=a, status=OPEN) for a in got.per_account},
                per_deal_stage={stage: len(_linked_open(s, caller, stage)) for stage in got.per_deal_stage},
            )
            assert got == expected, name
            for stage in got.per_deal_stage:  # the view lists exactly those conversations
                page = inbox_views.list_threads(
                    session=s, caller=caller, filters=ThreadFilter(deal_stage=stage, status=OPEN), limit=200
                )
                assert {t.id for t in page.items} == _linked_open(s, caller, stage), (name, stage)
            if name == "admin":
                assert set(got.per_account) == set(world.accounts.values()) - {world.accounts["X"]}
                assert set(got.per_deal_stage) <= set(STAGES)


def _summed(rows: Any) -> dict[tuple[Any, ...], int]:
    sums: dict[tuple[Any, ...], int] = {}
    for *key, n in rows:
        sums[tuple(str(k) for k in key)] = sums.get(tuple(str(k) for k in key), 0) + n
    return {k: n for k, n in sums.items() if n}


def _check_appended_tallies(s: Session) -> None:
    """The appended tallies (0026) sum to what they stand for, recomputed from scratch: the read
    marks still fresh per (user, accounts, status); the conversations per (deal stage, accounts
    of the mail linked to deals in it, status)."""
    fresh = s.exec(
        select(ThreadRead.user_id, Thread.account_key, Thread.status)
        .join(Thread, col(Thread.id) == col(ThreadRead.thread_id))
        .where(col(ThreadRead.read_at) >= col(Thread.last_date))
    ).all()
    assert _summed(
        s.exec(
            select(
                ThreadReadTally.user_id,
                ThreadReadTally.account_key,
                ThreadReadTally.status,
                ThreadReadTally.n,
            )
        ).all()
    ) == _summed((*row, 1) for row in fresh)
    accounts: dict[tuple[int, str], set[str]] = {}
    for thread_id, stage, key in s.exec(
        select(ThreadDeal.thread_id, Deal.stage, ThreadDeal.link_key).join(
            Deal, col(Deal.id) == col(ThreadDeal.deal_id)
        )
    ).all():
        accounts.setdefault((thread_id, stage), set()).update(a for a in key.split(",") if a)
    expected = {}
    for (thread_id, stage), held in accounts.items():
        thread = s.get_one(Thread, thread_id)
        key = "," + ",".join(sorted(held, key=int)) + "," if held else ""
        expected[(thread_id, stage)] = (thread.tenant_id, key, thread.status)
    stored = {
        (r.thread_id, r.stage): (r.tenant_id, r.stage_key, r.status)
        for r in s.exec(select(ThreadStage)).all()
    }
    assert stored == expected
    stage_rows = s.execute(
        sa.select(
            col(ThreadStageTally.tenant_id),
            col(ThreadStageTally.stage),
            col(ThreadStageTally.stage_key),
            col(ThreadStageTally.status),
            col(ThreadStageTally.n),
        )
    ).all()
    assert _summed(stage_rows) == _summed(
        (tenant, stage, key, status, 1) for (_, stage), (tenant, key, status) in stored.items()
    )


def test_counts_stay_exact_through_random_writes(
    db: Engine, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fold the appended tallies often, so that folding between writes is checked too.
    monkeypatch.setattr(inbox_counts, "FOLD_ROWS", 8)
    rng = random.Random(8)
    now = datetime.now(UTC)
    uids = count(1000)
    admin = world.caller("admin")
    acme_accounts = ["A", "B", "C"]
    with session_scope(db) as s:
        # Two follow-up delays among the accounts: "waiting" takes the per-account path.
        s.add(AssignmentRule(account_id=world.accounts["B"], tenant_id=world.tenant, follow_up_days=1))
        folders = {
            key: s.exec(select(FolderState.id).where(FolderState.account_id == ident)).one() or 0
            for key, ident in world.accounts.items()
        }
        deals = []
        for i, stage in enumerate(STAGES * 2):
            deal = Deal(tenant_id=world.tenant, title=f"Deal {i}", stage=stage)
            s.add(deal)
            s.flush()
            deals.append(deal.id or 0)

    def thread_ids(s: Session) -> list[int]:
        return [t or 0 for t in s.exec(select(Thread.id).where(Thread.tenant_id == world.tenant)).all()]

    def new_message(s: Session, thread_id: int | None) -> None:
        """Mail arriving as the store writes it: the message, its locations, the thread's last
        activity and direction."""
        if thread_id is None:
            thread = Thread(tenant_id=world.tenant, subject="New", normalized_subject="new")
            s.add(thread)
            s.flush()
            thread_id = thread.id or 0
        n = next(uids)
        direction = rng.choice([Direction.INBOUND, Direction.OUTBOUND])
        when = now - timedelta(hours=rng.randint(1, 120))
        message = Message(
            tenant_id=world.tenant,
            message_id=f"<r{n}@mail.test>",
            content_hash=f"r{n}",
            subject="New",
            date=when,
            from_email="x@globex.test",
            direction=direction,
            thread_id=thread_id,
        )
        s.add(message)
        s.flush()
        for key in rng.sample(acme_accounts, rng.choice([1, 1, 2])):
            s.add(
                ImapUid(
                    account_id=world.accounts[key],
                    folder_id=folders[key],
                    uidvalidity=1,
                    uid=n,
                    state=UidState.STORED,
                    message_pk=message.id,
                )
            )
        row = s.get(Thread, thread_id)
        assert row is not None
        row.message_count += 1
        if row.last_date is None or when >= row.last_date:
            row.last_date, row.last_direction = when, direction
        s.add(row)
        s.flush()

    def step(s: Session) -> None:
        ids = thread_ids(s)
        target = rng.choice(ids)
        action = rng.randrange(10)
        if action == 0:
            who = rng.choice([None, "admin", "alice", "bob"])
            conversations.assign(
                session=s, caller=admin, thread_id=target, assignee_user_id=world.users[who] if who else None
            )
        elif action == 1:
            status = rng.choice(list(ConversationStatus))
            until = now + timedelta(hours=2) if status is ConversationStatus.SNOOZED else None
            conversations.set_status(
                session=s, caller=admin, thread_id=target, status=status, snoozed_until=until
            )
        elif action == 2:  # a snooze's time comes: nothing is written but the clock
            for thread in s.exec(select(Thread).where(Thread.status == ConversationStatus.SNOOZED)).all():
                if rng.random() < 0.5:
                    thread.snoozed_until = now - timedelta(minutes=1)
                    s.add(thread)
        elif action == 3:
            new_message(s, rng.choice([None, target]))
        elif action == 4 and len(ids) > 2:
            thread_edits.merge(session=s, caller=admin, target_id=target, source_id=rng.choice(ids))
        elif action == 5:
            pks = s.exec(select(Message.id).where(Message.thread_id == target)).all()
            thread_edits.split(session=s, caller=admin, message_pk=rng.choice(pks) or 0)
        elif action == 6:
            pk = rng.choice(s.exec(select(Message.id).where(Message.tenant_id == world.tenant)).all()) or 0
            deal = rng.choice(deals)
            if (
                s.exec(
                    select(MessageLink).where(MessageLink.message_pk == pk, MessageLink.record_id == deal)
                ).first()
                is None
            ):
                s.add(
                    MessageLink(
                        tenant_id=world.tenant,
                        message_pk=pk,
                        record_kind=RecordKind.DEAL,
                        record_id=deal,
                        reason=LinkReason.MANUAL,
                    )
                )
        elif action == 7 and rng.random() < 0.15:  # a deal deleted (its links go), a new one made
            gone = rng.choice(deals)
            record_lists.delete_record(session=s, caller=admin, kind=RecordKind.DEAL, record_id=gone)
            fresh = Deal(tenant_id=world.tenant, title="Fresh", stage=rng.choice(STAGES))
            s.add(fresh)
            s.flush()
            deals[deals.index(gone)] = fresh.id or 0
        elif action == 7:
            deal_row = s.get(Deal, rng.choice(deals))
            assert deal_row is not None
            deal_row.stage = rng.choice(STAGES)
            s.add(deal_row)
        elif action == 8:  # an existing message found in one more account (a copy, a label)
            pk = rng.choice(s.exec(select(Message.id).where(Message.tenant_id == world.tenant)).all()) or 0
            key = rng.choice(acme_accounts)
            s.add(
                ImapUid(
                    account_id=world.accounts[key],
                    folder_id=folders[key],
                    uidvalidity=1,
                    uid=next(uids),
                    state=UidState.STORED,
                    message_pk=pk,
                )
            )
        else:
            reader = world.caller(rng.choice(["alice", "bob"]))
            visible = [t.id for t in inbox_views.list_threads(session=s, caller=reader, limit=200).items]
            if visible:
                conversations.mark_read(
                    session=s, caller=reader, thread_id=rng.choice(visible), read=rng.random() < 0.8
                )
        s.flush()

    _check(db, world)
    for i in range(60):
        try:
            with session_scope(db) as s:
                step(s)
        except DomainError:
            pass  # a refused action (nothing to split, an assignee who cannot see it) writes nothing
        if i % 6 == 5:
            _check(db, world, ("admin", "bob"))
    _check(db, world)


def test_deal_stage_views(db: Engine, world: World) -> None:
    """Each stage of the tenant's deals is a view: open conversations with mail the caller sees
    linked to a deal in that stage; a stage change moves them."""
    with session_scope(db) as s:
        deal = Deal(tenant_id=world.tenant, title="Big order", stage="proposal")
        idle = Deal(tenant_id=world.tenant, title="Quiet", stage="lost")
        s.add_all([deal, idle])
        s.flush()
        for key in ("beta1", "shared2"):  # both only in account B
            s.add(
                MessageLink(
                    tenant_id=world.tenant,
                    message_pk=world.messages[key],
                    record_kind=RecordKind.DEAL,
                    record_id=deal.id or 0,
                    reason=LinkReason.MANUAL,
                )
            )
        deal_id = deal.id
    with Session(db) as s:
        for name, stages, subjects in (
            ("admin", {"lost": 0, "proposal": 2}, ["Shared", "Beta"]),
            ("bob", {"lost": 0, "proposal": 2}, ["Shared", "Beta"]),
            # alice sees Shared, but not the linked message of it (it reached B only).
            ("alice", {"lost": 0, "proposal": 0}, []),
            ("other_admin", {}, []),
        ):
            caller = world.caller(name)
            assert inbox_counts.view_counts(session=s, caller=caller).per_deal_stage == stages, name
            page = inbox_views.list_threads(
                session=s, caller=caller, filters=ThreadFilter(deal_stage="proposal")
            )
            assert [t.subject for t in page.items] == subjects, name
    with session_scope(db) as s:
        row = s.get(Deal, deal_id)
        assert row is not None
        row.stage = "won"
        s.add(row)
    with Session(db) as s:
        counts = inbox_counts.view_counts(session=s, caller=world.caller("bob"))
        assert counts.per_deal_stage == {"lost": 0, "won": 2}
        thread = s.get(Thread, world.threads["Beta"])
        assert thread is not None
        thread.status = ConversationStatus.CLOSED
        s.add(thread)
        s.commit()
        assert inbox_counts.view_counts(session=s, caller=world.caller("bob")).per_deal_stage == {
            "lost": 0,
            "won": 1,
        }


def test_location_of_a_message_in_a_second_account_updates_the_key(db: Engine, world: World) -> None:
    """A conversation that reaches another account is re-keyed (the member of that account now
    counts it), and counted once by an admin."""
    with session_scope(db) as s:
        folder = (
            s.exec(select(FolderState.id).where(FolderState.account_id == world.accounts["B"])).one() or 0
        )
        s.add(
            ImapUid(
                account_id=world.accounts["B"],
                folder_id=folder,
                uidvalidity=1,
                uid=9999,
                state=UidState.STORED,
                message_pk=world.messages["alpha1"],
            )
        )
    with Session(db) as s:
        alpha = s.get(Thread, world.threads["Alpha"])
        assert alpha is not None
        a, b = sorted((world.accounts["A"], world.accounts["B"]))
        assert alpha.account_key == f",{a},{b},"
        assert inbox_counts.view_counts(session=s, caller=world.caller("bob")).open == 3
        assert inbox_counts.view_counts(session=s, caller=world.caller("admin")).open == 4
    _check(db, world)
