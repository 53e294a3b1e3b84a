"""Reports against a small hand-checked mailbox, on SQLite and PostgreSQL.

The mail is stored through `crm.mailstore.apply_batch` (so threading and linking are the real ones)
from hand-made `MessageData`; every expected figure below was worked out by hand from this table
(UTC; 2026-05-03 is a Sunday, 2026-05-04 a Monday):

    msg  date              dir  from   to     thread  note
    m1   05-03 23:30       in   hank   sales  T1      previous ISO week, previous UTC day
    m2   05-04 01:00       out  alice  hank   T1      first reply: 5400 s
    m3   05-05 08:00       in   hank   sales  T1
    m4   05-05 09:00       out  bob    hank   T1      bob's first reply on T1: 120600 s
    m5   05-06 12:00       in   hank   sales  T2      never answered
    m6   05-04 14:00       out  alice  hank   T3      starts outbound: no first-response figure
    m7   05-04 15:00       in   hank   sales  T3      ... but left unanswered
    m8   05-04 10:00       in   peter  sales  T4
    m9   05-04 10:30       out  bob    peter  T4      1800 s
    m10  05-07 08:00       in   peter  sales  T5
    m11  05-07 11:00       out  sales  peter  T5      10800 s (shared account, no user)
    m12  05-08 09:00       in   peter  sales  T6
    m13  05-08 09:01       out  bob    peter  T6      60 s

Alice owns Hank (Globex, deal "Globex renewal"); Bob owns Peter (Initech).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import Session, select

from core.caller import Caller
from core.db import session_scope
from core.secrets import SecretBox
from core.types import Direction, FolderRole, Security
from crm import mailboxes, mailstore, records, sync_state, tenants
from crm.mailstore import Location, MessageData, NewMail
from crm.models import Message, MessageLink, Thread
from crm.reports import (
    ActivityRow,
    FirstResponseRow,
    Period,
    ReportBy,
    activity,
    first_response,
    last_contact,
    thread_responses,
    unanswered,
)


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 5, day, hour, minute, tzinfo=UTC)


# (name, date, folder, from, to, subject, in_reply_to)
MAIL: tuple[tuple[str, datetime, FolderRole, str, str, str, str | None], ...] = (
    ("m1", at(3, 23, 30), FolderRole.INBOX, "hank@globex.test", "sales@acme.test", "Pricing", None),
    ("m2", at(4, 1), FolderRole.SENT, "alice@acme.test", "hank@globex.test", "Re: Pricing", "m1"),
    ("m3", at(5, 8), FolderRole.INBOX, "hank@globex.test", "sales@acme.test", "Re: Pricing", "m2"),
    ("m4", at(5, 9), FolderRole.SENT, "bob@acme.test", "hank@globex.test", "Re: Pricing", "m3"),
    ("m5", at(6, 12), FolderRole.INBOX, "hank@globex.test", "sales@acme.test", "Contract question", None),
    ("m6", at(4, 14), FolderRole.SENT, "alice@acme.test", "hank@globex.test", "Intro", None),
    ("m7", at(4, 15), FolderRole.INBOX, "hank@globex.test", "sales@acme.test", "Re: Intro", "m6"),
    ("m8", at(4, 10), FolderRole.INBOX, "peter@initech.test", "sales@acme.test", "Question", None),
    ("m9", at(4, 10, 30), FolderRole.SENT, "bob@acme.test", "peter@initech.test", "Re: Question", "m8"),
    ("m10", at(7, 8), FolderRole.INBOX, "peter@initech.test", "sales@acme.test", "Invoice", None),
    ("m11", at(7, 11), FolderRole.SENT, "sales@acme.test", "peter@initech.test", "Re: Invoice", "m10"),
    ("m12", at(8, 9), FolderRole.INBOX, "peter@initech.test", "sales@acme.test", "Delivery", None),
    ("m13", at(8, 9, 1), FolderRole.SENT, "bob@acme.test", "peter@initech.test", "Re: Delivery", "m12"),
)


def _data(name: str, when: datetime, sender: str, to: str, subject: str, parent: str | None) -> MessageData:
    message_id = f"<{name}@test>"
    return MessageData(
        message_id=message_id,
        content_hash=hashlib.sha256(message_id.encode()).hexdigest(),
        subject=subject,
        normalized_subject=subject.lower().removeprefix("re: "),
        date=when,
        from_email=sender,
        to=((to, ""),),
        in_reply_to=f"<{parent}@test>" if parent else None,
        references=(f"<{parent}@test>",) if parent else (),
        text_body=f"Body of {name}",
    )


def store_mail(
    db: Engine,
    tenant_id: int,
    account_id: int,
    mail: Sequence[tuple[str, datetime, FolderRole, str, str, str, str | None]],
    first_uid: int = 1,
) -> None:
    """Store mail the way the sync engine does: one `apply_batch` per folder."""
    with session_scope(db) as s:
        identities = mailstore.tenant_identities(session=s, tenant_id=tenant_id)
        for role in (FolderRole.INBOX, FolderRole.SENT):
            cursor = sync_state.folder_cursor(session=s, account_id=account_id, role=role, name=role.value)
            items = [
                NewMail(Location(uid=first_uid + n), _data(name, when, sender, to, subject, parent))
                for n, (name, when, folder, sender, to, subject, parent) in enumerate(mail)
                if folder is role
            ]
            mailstore.apply_batch(
                session=s,
                tenant_id=tenant_id,
                account_id=account_id,
                folder_id=cursor.folder_id,
                folder_role=role,
                uidvalidity=1,
                items=items,
                identities=identities,
                cursor=None,
            )


@dataclass(frozen=True)
class ReportIds:
    """The ids of the module docstring's world; `threads` maps "T1".."T6" to thread ids."""

    tenant: int
    account: int
    alice: int
    bob: int
    globex: int
    initech: int
    hank: int
    peter: int
    renewal: int
    threads: dict[str, int]


def build_world(db: Engine) -> ReportIds:
    """The tenant, records and mail of the module docstring; returns their ids."""
    with session_scope(db) as s:
        tenant = tenants.create_tenant(session=s, name="Acme", account_quota=5, own_domains=["acme.test"])
        tenant_id = tenant.id or 0
        account = mailboxes.add_account(
            session=s,
            caller=Caller.operator(tenant_id),
            data=mailboxes.AccountInput(
                email="sales@acme.test",
                imap_host="imap.acme.test",
                imap_port=993,
                imap_security=Security.TLS,
                username="sales",
            ),
            password=SecretStr("not used"),
            box=SecretBox.from_settings(),
        )
        alice = tenants.create_user(session=s, caller=Caller.operator(tenant_id), email="alice@acme.test")
        bob = tenants.create_user(session=s, caller=Caller.operator(tenant_id), email="bob@acme.test")
        globex = records.create_company(
            session=s, caller=Caller.operator(tenant_id), name="Globex", domains=["globex.test"]
        )
        initech = records.create_company(
            session=s, caller=Caller.operator(tenant_id), name="Initech", domains=["initech.test"]
        )
        hank = records.create_contact(
            session=s,
            caller=Caller.operator(tenant_id),
            emails=["hank@globex.test"],
            full_name="Hank Scorpio",
            company_id=globex.id,
            owner_user_id=alice.id,
        )
        peter = records.create_contact(
            session=s,
            caller=Caller.operator(tenant_id),
            emails=["peter@initech.test"],
            full_name="Peter Gibbons",
            company_id=initech.id,
            owner_user_id=bob.id,
        )
        renewal = records.create_deal(
            session=s, caller=Caller.operator(tenant_id), title="Globex renewal", contact_ids=[hank.id or 0]
        )
        account_id = account.id or 0
    store_mail(db, tenant_id, account_id, MAIL)
    with Session(db) as s:
        threads = {m.message_id.strip("<>").split("@")[0]: m.thread_id for m in s.exec(select(Message)).all()}
    named = {"T1": "m1", "T2": "m5", "T3": "m6", "T4": "m8", "T5": "m10", "T6": "m12"}
    thread_ids: dict[str, int] = {}
    for name, first in named.items():
        thread_id = threads[first]
        assert thread_id is not None, f"{first} was threaded"
        thread_ids[name] = thread_id
    return ReportIds(
        tenant=tenant_id,
        account=account_id,
        alice=alice.id,
        bob=bob.id,
        globex=globex.id,
        initech=initech.id,
        hank=hank.id,
        peter=peter.id,
        renewal=renewal.id,
        threads=thread_ids,
    )


@pytest.fixture
def world(db: Engine) -> tuple[Engine, ReportIds]:
    return db, build_world(db)


def test_world_is_threaded_and_linked_as_described(world: tuple[Engine, ReportIds]) -> None:
    db, ids = world
    assert len(set(ids.threads.values())) == 6
    with Session(db) as s:
        assert len(s.exec(select(Thread)).all()) == 6
        contact_links = s.exec(select(MessageLink).where(MessageLink.record_kind == "contact")).all()
    # All 13 messages are on exactly one contact (7 on Hank, 6 on Peter).
    assert sorted(link.record_id for link in contact_links) == sorted([ids.hank] * 7 + [ids.peter] * 6)


def test_activity_per_day_and_week(world: tuple[Engine, ReportIds]) -> None:
    db, ids = world
    with Session(db) as s:
        daily = activity(session=s, caller=Caller.operator(ids.tenant), by=ReportBy.CONTACT)
        weekly = activity(
            session=s, caller=Caller.operator(ids.tenant), by=ReportBy.CONTACT, period=Period.WEEK
        )
    hank, peter = "Hank Scorpio", "Peter Gibbons"
    c = ReportBy.CONTACT
    assert daily == [
        ActivityRow(c, ids.hank, hank, date(2026, 5, 3), 1, 0),  # 23:30 UTC on Sunday
        ActivityRow(c, ids.hank, hank, date(2026, 5, 4), 1, 2),
        ActivityRow(c, ids.hank, hank, date(2026, 5, 5), 1, 1),
        ActivityRow(c, ids.hank, hank, date(2026, 5, 6), 1, 0),
        ActivityRow(c, ids.peter, peter, date(2026, 5, 4), 1, 1),
        ActivityRow(c, ids.peter, peter, date(2026, 5, 7), 1, 1),
        ActivityRow(c, ids.peter, peter, date(2026, 5, 8), 1, 1),
    ]
    assert weekly == [
        ActivityRow(c, ids.hank, hank, date(2026, 4, 27), 1, 0),  # the Sunday belongs to last week
        ActivityRow(c, ids.hank, hank, date(2026, 5, 4), 3, 3),
        ActivityRow(c, ids.peter, peter, date(2026, 5, 4), 3, 3),
    ]


def test_activity_range_and_one_record(world: tuple[Engine, ReportIds]) -> None:
    db, ids = world
    with Session(db) as s:
        rows = activity(
            session=s,
            caller=Caller.operator(ids.tenant),
            by=ReportBy.CONTACT,
            since=at(4, 0),
            until=at(5, 8),  # exclusive: m3 at 05-05 08:00 is out
            record_id=ids.hank,
        )
    assert [(r.record_id, r.period_start, r.inbound, r.outbound) for r in rows] == [
        (ids.hank, date(2026, 5, 4), 1, 2)
    ]


def test_activity_of_companies_and_deals_follows_their_contacts(
    world: tuple[Engine, ReportIds],
) -> None:
    db, ids = world
    with Session(db) as s:
        companies = activity(
            session=s, caller=Caller.operator(ids.tenant), by=ReportBy.COMPANY, period=Period.WEEK
        )
        deals = activity(session=s, caller=Caller.operator(ids.tenant), by=ReportBy.DEAL, period=Period.WEEK)
    assert [(r.record_id, r.label, r.period_start, r.inbound, r.outbound) for r in companies] == [
        (ids.globex, "Globex", date(2026, 4, 27), 1, 0),
        (ids.globex, "Globex", date(2026, 5, 4), 3, 3),
        (ids.initech, "Initech", date(2026, 5, 4), 3, 3),
    ]
    assert [(r.record_id, r.label, r.period_start, r.inbound, r.outbound) for r in deals] == [
        (ids.renewal, "Globex renewal", date(2026, 4, 27), 1, 0),
        (ids.renewal, "Globex renewal", date(2026, 5, 4), 3, 3),
    ]


def test_activity_per_user(world: tuple[Engine, ReportIds]) -> None:
    """Out: mail the user sent. In: inbound mail of the contacts the user owns."""
    db, ids = world
    with Session(db) as s:
        rows = activity(session=s, caller=Caller.operator(ids.tenant), by=ReportBy.USER)
    assert [(r.record_id, r.label, r.period_start, r.inbound, r.outbound) for r in rows] == [
        (ids.alice, "alice@acme.test", date(2026, 5, 3), 1, 0),
        (ids.alice, "alice@acme.test", date(2026, 5, 4), 1, 2),
        (ids.alice, "alice@acme.test", date(2026, 5, 5), 1, 0),
        (ids.alice, "alice@acme.test", date(2026, 5, 6), 1, 0),
        (ids.bob, "bob@acme.test", date(2026, 5, 4), 1, 1),
        (ids.bob, "bob@acme.test", date(2026, 5, 5), 0, 1),
        (ids.bob, "bob@acme.test", date(2026, 5, 7), 1, 0),
        (ids.bob, "bob@acme.test", date(2026, 5, 8), 1, 1),
    ]


def test_last_contact(world: tuple[Engine, ReportIds]) -> None:
    db, ids = world
    with Session(db) as s:
        contacts = last_contact(session=s, caller=Caller.operator(ids.tenant), by=ReportBy.CONTACT)
        users = last_contact(session=s, caller=Caller.operator(ids.tenant), by=ReportBy.USER)
        as_of = last_contact(
            session=s, caller=Caller.operator(ids.tenant), by=ReportBy.CONTACT, until=at(5, 0)
        )
    assert [(r.record_id, r.last_date, r.direction, r.subject) for r in contacts] == [
        (ids.hank, at(6, 12), Direction.INBOUND, "Contract question"),
        (ids.peter, at(8, 9, 1), Direction.OUTBOUND, "Re: Delivery"),
    ]
    assert [(r.record_id, r.last_date, r.direction) for r in users] == [
        (ids.alice, at(6, 12), Direction.INBOUND),
        (ids.bob, at(8, 9, 1), Direction.OUTBOUND),
    ]
    assert [(r.record_id, r.last_date, r.direction) for r in as_of] == [
        (ids.hank, at(4, 15), Direction.INBOUND),
        (ids.peter, at(4, 10, 30), Direction.OUTBOUND),
    ]


def test_first_response_per_thread(world: tuple[Engine, ReportIds]) -> None:
    db, ids = world
    t = ids.threads
    with Session(db) as s:
        rows = thread_responses(session=s, caller=Caller.operator(ids.tenant), by=ReportBy.CONTACT)
    assert [
        (r.record_id, r.thread_id, r.first_inbound_at, r.first_response_at, r.response_seconds) for r in rows
    ] == [
        (ids.hank, t["T1"], at(3, 23, 30), at(4, 1), 5400),
        (ids.hank, t["T2"], at(6, 12), None, None),  # never answered; T3 starts outbound
        (ids.peter, t["T4"], at(4, 10), at(4, 10, 30), 1800),
        (ids.peter, t["T5"], at(7, 8), at(7, 11), 10800),
        (ids.peter, t["T6"], at(8, 9), at(8, 9, 1), 60),
    ]


def test_first_response_per_record_and_user(world: tuple[Engine, ReportIds]) -> None:
    db, ids = world
    with Session(db) as s:
        contacts = first_response(session=s, caller=Caller.operator(ids.tenant), by=ReportBy.CONTACT)
        users = first_response(session=s, caller=Caller.operator(ids.tenant), by=ReportBy.USER)
        bob_threads = thread_responses(
            session=s, caller=Caller.operator(ids.tenant), by=ReportBy.USER, record_id=ids.bob
        )
        since = first_response(
            session=s, caller=Caller.operator(ids.tenant), by=ReportBy.CONTACT, since=at(7, 0)
        )
    c, u = ReportBy.CONTACT, ReportBy.USER
    assert contacts == [
        FirstResponseRow(c, ids.hank, "Hank Scorpio", 2, 1, 5400.0, 5400.0),
        FirstResponseRow(c, ids.peter, "Peter Gibbons", 3, 3, 1800.0, 4220.0),
    ]
    # Users: only their own replies count. Bob answered T1 (33.5 h later), T4 and T6, not T5.
    assert users == [
        FirstResponseRow(u, ids.alice, "alice@acme.test", 2, 1, 5400.0, 5400.0),
        FirstResponseRow(u, ids.bob, "bob@acme.test", 4, 3, 1800.0, 40820.0),
    ]
    assert [(r.thread_id, r.response_seconds) for r in bob_threads] == [
        (ids.threads["T1"], 120600),
        (ids.threads["T4"], 1800),
        (ids.threads["T5"], None),
        (ids.threads["T6"], 60),
    ]
    # Threads whose first inbound message is in range: T5 and T6 only; even count -> mean of two.
    assert since == [FirstResponseRow(c, ids.peter, "Peter Gibbons", 2, 2, 5430.0, 5430.0)]


def test_unanswered_threads(world: tuple[Engine, ReportIds]) -> None:
    db, ids = world
    t = ids.threads
    with Session(db) as s:
        contacts = unanswered(session=s, caller=Caller.operator(ids.tenant), by=ReportBy.CONTACT)
        old = unanswered(
            session=s,
            caller=Caller.operator(ids.tenant),
            by=ReportBy.CONTACT,
            older_than_hours=48,
            now=at(7, 12),
        )
        users = unanswered(session=s, caller=Caller.operator(ids.tenant), by=ReportBy.USER)
        deals = unanswered(
            session=s, caller=Caller.operator(ids.tenant), by=ReportBy.DEAL, record_id=ids.renewal
        )
    assert [(r.record_id, r.thread_id, r.subject, r.last_inbound_at, r.last_from) for r in contacts] == [
        (ids.hank, t["T3"], "Intro", at(4, 15), "hank@globex.test"),
        (ids.hank, t["T2"], "Contract question", at(6, 12), "hank@globex.test"),
    ]
    assert [(r.record_id, r.thread_id) for r in old] == [(ids.hank, t["T3"])]
    assert [(r.record_id, r.thread_id) for r in users] == [(ids.alice, t["T3"]), (ids.alice, t["T2"])]
    assert [(r.record_id, r.thread_id) for r in deals] == [(ids.renewal, t["T3"]), (ids.renewal, t["T2"])]


def test_a_reply_and_another_tenant_change_only_what_they_should(
    world: tuple[Engine, ReportIds],
) -> None:
    """Answering T2 takes it off the unanswered list and adds a response time; another tenant's
    mail with the same addresses never shows up."""
    db, ids = world
    store_mail(
        db,
        ids.tenant,
        ids.account,
        [("m14", at(6, 13), FolderRole.SENT, "alice@acme.test", "hank@globex.test", "Re: Contract", "m5")],
        first_uid=100,
    )
    with session_scope(db) as s:
        other = tenants.create_tenant(session=s, name="Other", own_domains=["other.test"])
        records.create_contact(session=s, caller=Caller.operator(other.id or 0), emails=["hank@globex.test"])
    with Session(db) as s:
        still_open = unanswered(session=s, caller=Caller.operator(ids.tenant), by=ReportBy.CONTACT)
        hank = first_response(
            session=s, caller=Caller.operator(ids.tenant), by=ReportBy.CONTACT, record_id=ids.hank
        )
        others = activity(session=s, caller=Caller.operator(other.id or 0), by=ReportBy.CONTACT)
    assert [r.thread_id for r in still_open] == [ids.threads["T3"]]
    assert hank == [FirstResponseRow(ReportBy.CONTACT, ids.hank, "Hank Scorpio", 2, 2, 4500.0, 4500.0)]
    assert others == []
