"""Assignment rules: the pure rota, and new mail handled inside the store's transaction
(round-robin order, cap, contact-owner fallback, deactivated users skipped, reopening)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from core.db import session_scope
from core.errors import DomainError
from core.types import ConversationStatus, Direction, FolderRole, UidState
from crm import assignment, inbox_counts, inbox_views, threads
from crm.assignment import AssignMode, choose, next_in_rota
from crm.inbox_views import ThreadFilter
from crm.models import (
    AccountAccess,
    Activity,
    Contact,
    FolderState,
    ImapUid,
    Message,
    MessageLink,
    Thread,
    User,
)
from crm.rules.linking import LinkReason, RecordKind
from tests.crm.world import World, build_world


def test_rota_order_cap_and_eligibility() -> None:
    everyone = frozenset({1, 2, 3})
    assert next_in_rota([1, 2, 3], everyone, {}, None, None) == 1
    assert next_in_rota([1, 2, 3], everyone, {}, None, 1) == 2
    assert next_in_rota([1, 2, 3], everyone, {}, None, 3) == 1  # wraps around
    assert next_in_rota([1, 2, 3], frozenset({1, 3}), {}, None, 1) == 3  # 2 left the team
    assert next_in_rota([1, 2, 3], everyone, {2: 5, 3: 1}, 5, 1) == 3  # 2 is at the cap
    assert next_in_rota([1, 2, 3], everyone, {1: 5, 2: 5, 3: 5}, 5, 1) is None  # everyone full
    assert next_in_rota([], everyone, {}, None, None) is None
    assert next_in_rota([1, 2], everyone, {}, None, 99) == 1  # a stale position starts over

    def pick(mode: AssignMode, owner: int) -> int | None:
        return choose(
            mode, rota=[1, 2], eligible=everyone, open_counts={}, max_open=None, last=1, contact_owner=owner
        )

    assert pick(AssignMode.CONTACT_OWNER, 3) == 3
    assert pick(AssignMode.CONTACT_OWNER, 9) == 2  # the owner is not eligible: the rota
    assert pick(AssignMode.NONE, 3) is None


@pytest.fixture
def world(db: Engine) -> World:
    w = build_world(db)
    with session_scope(db) as s:  # bob and a second member both work account B
        dave = User(tenant_id=w.tenant, email="dave@acme.test")
        s.add(dave)
        s.flush()
        w.users["dave"] = dave.id or 0
        s.add(AccountAccess(user_id=dave.id or 0, account_id=w.accounts["B"]))
    return w


def _new_conversation(db: Engine, world: World, key: str, *, direction: Direction = Direction.INBOUND) -> int:
    """A message in a thread of its own in account B, as the store leaves it, then the hook."""
    with session_scope(db) as s:
        thread = Thread(tenant_id=world.tenant, subject=key, message_count=1, last_date=datetime.now(UTC))
        s.add(thread)
        s.flush()
        message = Message(
            tenant_id=world.tenant,
            message_id=f"<{key}@mail.test>",
            content_hash=key,
            subject=key,
            date=datetime.now(UTC),
            from_email="ann@globex.test",
            direction=direction,
            thread_id=thread.id,
        )
        s.add(message)
        s.flush()
        folder = s.exec(select(FolderState).where(FolderState.account_id == world.accounts["B"])).one()
        s.add(
            ImapUid(
                account_id=world.accounts["B"],
                folder_id=folder.id or 0,
                uidvalidity=1,
                uid=5000 + (message.id or 0),
                state=UidState.STORED,
                message_pk=message.id,
            )
        )
        s.add(
            MessageLink(
                tenant_id=world.tenant,
                message_pk=message.id or 0,
                record_kind=RecordKind.CONTACT,
                record_id=world.contact_id,
                reason=LinkReason.ADDRESS,
            )
        )
        s.flush()
        assignment.on_new_mail(
            session=s, tenant_id=world.tenant, account_id=world.accounts["B"], messages=[message]
        )
        return thread.id or 0


def _assignee(db: Engine, thread_id: int) -> int | None:
    with Session(db) as s:
        thread = s.get(Thread, thread_id)
        assert thread is not None
        return thread.assignee_user_id


def test_round_robin_with_a_cap_skips_deactivated_users(db: Engine, world: World) -> None:
    with session_scope(db) as s:
        assignment.set_rule(
            session=s,
            caller=world.caller("admin"),
            account_id=world.accounts["B"],
            mode=AssignMode.ROUND_ROBIN,
            user_ids=[world.users["bob"], world.users["alice"], world.users["dave"]],
            max_open=2,
        )
    bob, dave = world.users["bob"], world.users["dave"]
    # alice has no access to B: never chosen.
    assert [_assignee(db, _new_conversation(db, world, f"n{i}")) for i in range(4)] == [bob, dave, bob, dave]
    assert _assignee(db, _new_conversation(db, world, "full")) is None  # both at the cap of 2
    with session_scope(db) as s:
        user = s.get(User, dave)
        assert user is not None
        user.active = False
        for thread in s.exec(select(Thread).where(Thread.assignee_user_id == bob)).all():
            thread.status = ConversationStatus.CLOSED  # closed ones do not count
    assert _assignee(db, _new_conversation(db, world, "after")) == bob
    assert _assignee(db, _new_conversation(db, world, "after2")) == bob  # dave is gone
    # Our own outbound mail starting a conversation is not assigned.
    assert _assignee(db, _new_conversation(db, world, "ours", direction=Direction.OUTBOUND)) is None
    with Session(db) as s:
        rules = [
            a.data.get("rule") for a in s.exec(select(Activity).where(Activity.kind == "assigned")).all()
        ]
    assert set(rules) == {"round_robin"}


def test_contact_owner_falls_back_to_the_rota(db: Engine, world: World) -> None:
    with session_scope(db) as s:
        s.add(
            Contact(
                id=world.contact_id,
                tenant_id=world.tenant,
                full_name="Ann",
                owner_user_id=world.users["dave"],
            )
        )
        assignment.set_rule(
            session=s,
            caller=world.caller("admin"),
            account_id=world.accounts["B"],
            mode=AssignMode.CONTACT_OWNER,
            user_ids=[world.users["bob"]],
        )
    assert _assignee(db, _new_conversation(db, world, "owned")) == world.users["dave"]
    with session_scope(db) as s:
        contact = s.get(Contact, world.contact_id)
        assert contact is not None
        contact.owner_user_id = world.users["alice"]  # cannot see account B
    assert _assignee(db, _new_conversation(db, world, "fallback")) == world.users["bob"]


def test_new_inbound_mail_reopens_and_rules_are_admin_only(db: Engine, world: World) -> None:
    beta = world.threads["Beta"]
    with session_scope(db) as s:
        thread = s.get(Thread, beta)
        assert thread is not None
        thread.status, thread.snoozed_until = (
            ConversationStatus.SNOOZED,
            datetime.now(UTC) + timedelta(days=3),
        )
        message = Message(
            tenant_id=world.tenant,
            message_id="<again@mail.test>",
            content_hash="again",
            date=datetime.now(UTC),
            from_email="ben@initech.test",
            thread_id=beta,
        )
        s.add(message)
        thread.message_count += 1
        s.flush()
        assignment.on_new_mail(
            session=s, tenant_id=world.tenant, account_id=world.accounts["B"], messages=[message]
        )
    with Session(db) as s:
        thread = s.get(Thread, beta)
        assert (
            thread is not None and thread.status is ConversationStatus.OPEN and thread.snoozed_until is None
        )
        with pytest.raises(DomainError) as caught:
            assignment.set_rule(
                session=s, caller=world.caller("bob"), account_id=world.accounts["B"], mode=AssignMode.NONE
            )
        assert caught.value.code == "admin_required"
        with pytest.raises(DomainError) as caught:
            assignment.get_rule(session=s, caller=world.caller("alice"), account_id=world.accounts["B"])
        assert caught.value.code == "account_not_found"
        with pytest.raises(DomainError) as caught:
            assignment.set_rule(
                session=s,
                caller=world.caller("admin"),
                account_id=world.accounts["B"],
                mode=AssignMode.ROUND_ROBIN,
            )
        assert caught.value.code == "rota_empty"


def test_waiting_for_reply(db: Engine, world: World) -> None:
    """Our message last, unanswered for the account's follow-up days."""
    old = datetime.now(UTC) - timedelta(days=5)
    with session_scope(db) as s:
        thread = s.get(Thread, world.threads["Beta"])
        assert thread is not None
        message = Message(
            tenant_id=world.tenant,
            message_id="<ours@mail.test>",
            content_hash="ours",
            date=old,
            from_email="bob@acme.test",
            direction=Direction.OUTBOUND,
            thread_id=thread.id,
        )
        s.add(message)
        s.flush()
        folder = s.exec(
            select(FolderState).where(
                FolderState.account_id == world.accounts["B"], FolderState.role == FolderRole.INBOX
            )
        ).one()
        s.add(
            ImapUid(
                account_id=world.accounts["B"],
                folder_id=folder.id or 0,
                uidvalidity=1,
                uid=7777,
                state=UidState.STORED,
                message_pk=message.id,
            )
        )
        s.flush()
        threads.refresh(s, [thread.id or 0])  # what the store does after every batch
    bob = world.caller("bob")

    def waiting() -> list[str]:
        with Session(db) as s:
            page = inbox_views.list_threads(session=s, caller=bob, filters=ThreadFilter(waiting=True))
            return [t.subject for t in page.items]

    assert waiting() == ["Re: Beta"]  # the subject of its first message, as the store keeps it
    with session_scope(db) as s:
        assignment.set_rule(
            session=s,
            caller=world.caller("admin"),
            account_id=world.accounts["B"],
            mode=AssignMode.NONE,
            follow_up_days=7,
        )
    assert waiting() == []  # 5 days is within the account's 7
    with Session(db) as s:
        assert inbox_counts.view_counts(session=s, caller=bob).waiting == 0
