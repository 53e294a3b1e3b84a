"""The record, link and report services as each kind of caller sees them: the visibility table,
error codes, and every public result serializable to JSON."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypedDict

import pytest
from pydantic_core import to_jsonable_python
from sqlalchemy import Engine
from sqlmodel import select

from core.caller import Caller, Role
from core.db import session_scope
from core.errors import Conflict, DomainError, Forbidden, InvalidInput, NotFound
from core.types import FolderRole
from crm import backfill, contact_import, links, records, reports
from crm.models import AccountAccess, Message, User
from crm.rules.csv_import import CsvImportError, RowProblem
from crm.rules.linking import DealStatus, RecordKind
from tests.crm.test_reports import ReportIds, build_world, store_mail
from tests.factories import make_offline_account, make_tenant

WHEN = datetime(2026, 5, 9, 9, 0, tzinfo=UTC)


@dataclass(frozen=True)
class People(ReportIds):
    account_b: int
    m1: int
    b1: int
    member_a: Caller
    member_b: Caller
    admin: Caller
    stranger: Caller


class LinkArgs(TypedDict, total=False):
    """The arguments `links.link_manually` and `links.unlink` share."""

    message_pk: int
    kind: RecordKind
    record_id: int
    whole_thread: bool


@pytest.fixture
def people(db: Engine) -> People:
    """The reports' world (account A = sales@acme.test) plus account B with one message, a member
    of each account, an admin, and the operator of another tenant."""
    ids = build_world(db)
    account_b = make_offline_account(db, ids.tenant, email="support@acme.test")
    store_mail(
        db,
        ids.tenant,
        account_b,
        [("b1", WHEN, FolderRole.INBOX, "hank@globex.test", "support@acme.test", "Via B", None)],
        first_uid=100,
    )
    with session_scope(db) as s:
        users: dict[str, int] = {}
        for name, admin in (("mia", False), ("ben", False), ("ada", True)):
            user = User(tenant_id=ids.tenant, email=f"{name}@acme.test", is_admin=admin)
            s.add(user)
            s.flush()
            users[name] = user.id or 0
        s.add(AccountAccess(user_id=users["mia"], account_id=ids.account))
        s.add(AccountAccess(user_id=users["ben"], account_id=account_b))
        pks = {m.message_id: m.id for m in s.exec(select(Message)).all()}
    m1, b1 = pks["<m1@test>"], pks["<b1@test>"]
    assert m1 is not None and b1 is not None
    return People(
        **{f.name: getattr(ids, f.name) for f in dataclasses.fields(ids)},
        account_b=account_b,
        m1=m1,
        b1=b1,
        member_a=Caller(ids.tenant, users["mia"], Role.MEMBER),
        member_b=Caller(ids.tenant, users["ben"], Role.MEMBER),
        admin=Caller(ids.tenant, users["ada"], Role.ADMIN),
        stranger=Caller.operator(make_tenant(db, name="Elsewhere")),
    )


def _code(fn: Any, **kwargs: Any) -> str:
    """'ok', or the code of the domain error the call raised (in a transaction rolled back)."""
    try:
        with session_scope() as s:
            fn(session=s, **kwargs)
            s.rollback()
    except DomainError as exc:
        return exc.code
    return "ok"


def test_visibility_table(people: People) -> None:
    ids = people
    callers = {"member A": ids.member_a, "member B": ids.member_b, "admin": ids.admin, "other": ids.stranger}
    link_a = {"message_pk": ids.m1, "kind": RecordKind.CONTACT, "record_id": ids.peter}
    cases: dict[str, tuple[Any, dict[str, Any], set[str]]] = {
        # Mail of account A: its members and admins only; the rest get the not-found code.
        "why m1": (links.why, {"message_pk": ids.m1}, {"member A", "admin"}),
        "why b1": (links.why, {"message_pk": ids.b1}, {"member B", "admin"}),
        "link m1": (links.link_manually, link_a, {"member A", "admin"}),
        "unlink m1": (links.unlink, link_a, {"member A", "admin"}),
        # Records are the tenant's shared address book.
        "contact": (records.get_contact, {"contact_id": ids.hank}, {"member A", "member B", "admin"}),
        "company": (records.get_company, {"company_id": ids.globex}, {"member A", "member B", "admin"}),
        "deal": (records.get_deal, {"deal_id": ids.renewal}, {"member A", "member B", "admin"}),
        "edit": (
            records.add_contact_email,
            {"contact_id": ids.hank, "email": "hank.s@globex.test"},
            {"member A", "member B", "admin"},
        ),
    }
    not_found = {
        "why m1": "message_not_found",
        "why b1": "message_not_found",
        "link m1": "message_not_found",
        "unlink m1": "message_not_found",
        "contact": "contact_not_found",
        "company": "company_not_found",
        "deal": "deal_not_found",
        "edit": "contact_not_found",
    }
    for case, (fn, kwargs, allowed) in cases.items():
        for who, caller in callers.items():
            expected = "ok" if who in allowed else not_found[case]
            assert _code(fn, caller=caller, **kwargs) == expected, (case, who)
    # A missing id answers exactly like a forbidden one.
    assert _code(links.why, caller=ids.admin, message_pk=999_999) == "message_not_found"
    assert _code(records.get_contact, caller=ids.admin, contact_id=999_999) == "contact_not_found"


def test_reports_count_only_visible_mail(people: People) -> None:
    ids = people

    def hank_mail(caller: Caller) -> tuple[int, int]:
        with session_scope() as s:
            rows = reports.activity(session=s, caller=caller, by=reports.ReportBy.CONTACT, record_id=ids.hank)
            count = links.linked_count(session=s, caller=caller, kind=RecordKind.CONTACT, record_id=ids.hank)
        return sum(r.inbound + r.outbound for r in rows), count

    assert hank_mail(ids.admin) == (8, 8)  # seven in A, one in B
    assert hank_mail(Caller.operator(ids.tenant)) == (8, 8)
    assert hank_mail(ids.member_a) == (7, 7)
    assert hank_mail(ids.member_b) == (1, 1)
    with session_scope() as s:
        assert reports.activity(session=s, caller=ids.stranger, by=reports.ReportBy.CONTACT) == []
        waiting = reports.unanswered(session=s, caller=ids.member_b, by=reports.ReportBy.CONTACT)
    assert [(w.subject, w.last_from) for w in waiting] == [("Via B", "hank@globex.test")]


def test_error_codes(people: People) -> None:
    ids = people
    op = Caller.operator(ids.tenant)
    with session_scope() as s:
        with pytest.raises(InvalidInput) as invalid:
            records.create_contact(session=s, caller=op, emails=["not an address"])
        assert invalid.value.code == "invalid_email" and invalid.value.fields == {"email": "not an address"}
        with pytest.raises(Conflict) as taken:
            records.create_contact(session=s, caller=op, emails=["HANK@globex.test"])
        assert taken.value.code == "email_taken" and taken.value.fields["contact_id"] == ids.hank
        with pytest.raises(InvalidInput) as user:
            records.create_contact(session=s, caller=op, emails=["alice@acme.test"])
        assert user.value.code == "email_is_user"
        with pytest.raises(Conflict) as domain:
            records.create_company(session=s, caller=op, name="Copy", domains=["globex.test"])
        assert domain.value.code == "domain_taken"
        for bad, code in (("nodot", "invalid_domain"), ("co.uk", "domain_is_public_suffix")):
            with pytest.raises(InvalidInput) as refused:
                records.create_company(session=s, caller=op, name="X", domains=[bad])
            assert refused.value.code == code
        with pytest.raises(InvalidInput) as status:
            records.set_deal_status(session=s, caller=op, deal_id=ids.renewal, status="maybe")
        assert status.value.code == "invalid_deal_status"
        with pytest.raises(NotFound) as address:
            records.remove_contact_email(session=s, caller=op, contact_id=ids.hank, email="nope@globex.test")
        assert address.value.code == "contact_email_not_found"
        with pytest.raises(NotFound) as message:
            links.find_message_pk(session=s, caller=op, message_id="nope@test")
        assert message.value.code == "message_not_found"
        with pytest.raises(InvalidInput) as naive:
            reports.activity(session=s, caller=op, by=reports.ReportBy.CONTACT, since=datetime(2026, 5, 1))
        assert naive.value.code == "naive_datetime"
        with pytest.raises(Forbidden) as member:
            contact_import.import_contacts(session=s, caller=ids.member_a, data=b"Email\nx@y.test\n")
        assert member.value.code == "admin_required"
        with pytest.raises(CsvImportError) as empty:
            contact_import.import_contacts(session=s, caller=op, data=b"")
        assert empty.value.code == "csv_empty" and isinstance(empty.value, InvalidInput)
        with pytest.raises(CsvImportError) as columns:
            contact_import.import_contacts(session=s, caller=op, data=b"Name;Phone\nA;1\n")
        assert columns.value.code == "csv_no_email_column" and columns.value.fields["line"] == 1
        s.rollback()


def _plain(value: object) -> None:
    """Serializable, and no ORM row anywhere inside (views hold plain values only)."""
    to_jsonable_python(value)
    if dataclasses.is_dataclass(value):
        for f in dataclasses.fields(value):
            _plain(getattr(value, f.name))
    elif isinstance(value, list | tuple):
        for item in value:
            _plain(item)
    else:
        assert not hasattr(value, "__table__"), value


def test_every_public_result_serializes(people: People, db: Engine) -> None:
    ids = people
    op = Caller.operator(ids.tenant)
    results: list[object] = []
    with session_scope() as s:
        company = records.create_company(session=s, caller=op, name="Umbrella", domains=["umbrella.test"])
        contact = records.create_contact(
            session=s, caller=op, emails=["ann@umbrella.test"], full_name="Ann", company_id=company.id
        )
        deal = records.create_deal(session=s, caller=op, title="Umbrella", contact_ids=[contact.id])
        results += [company, contact, deal]
        results.append(records.set_deal_status(session=s, caller=op, deal_id=deal.id, status=DealStatus.WON))
        results.append(records.get_contact(session=s, caller=op, contact_id=contact.id))
        results.append(records.get_company(session=s, caller=op, company_id=company.id))
        results.append(records.get_deal(session=s, caller=op, deal_id=deal.id))
        results.append(records.find_company(session=s, caller=op, name="Umbrella"))
        address = "a2@umbrella.test"
        records.add_contact_email(
            session=s, caller=op, contact_id=contact.id, email=address
        )  # returns nothing
        results.append(
            records.remove_contact_email(session=s, caller=op, contact_id=contact.id, email=address)
        )
    with session_scope() as s:
        report = contact_import.import_contacts(
            session=s,
            caller=op,
            data=b"Email,Company\nzoe@umbrella.test,Umbrella\nbad\n",
            allow_test_domains=True,
        )
        results.append(report)
        kwargs: LinkArgs = {"message_pk": ids.m1, "kind": RecordKind.CONTACT, "record_id": contact.id}
        results.append(links.link_manually(session=s, caller=op, **kwargs))
        results.append(links.why(session=s, caller=op, message_pk=ids.m1))
        results.append(links.unlink(session=s, caller=op, **kwargs))
        results.append(links.linked_count(session=s, caller=op, kind=RecordKind.CONTACT, record_id=ids.hank))
        results.append(links.find_message_pk(session=s, caller=op, message_id="m1@test"))
        for fn in (reports.activity, reports.last_contact, reports.first_response, reports.thread_responses):
            results.append(fn(session=s, caller=op, by=reports.ReportBy.CONTACT))
        results.append(reports.unanswered(session=s, caller=op, by=reports.ReportBy.USER))
    results.append(backfill.run_job(engine=db, caller=op, job_id=report.backfill_job_id or 0))
    results.append(backfill.run_pending(engine=db, caller=op))
    for result in results:
        _plain(result)
    assert report.errors[0].code is RowProblem.INVALID_EMAIL
    assert to_jsonable_python(report)["errors"][0]["code"] == "invalid_email"
    assert to_jsonable_python(results[2])["status"] == "open"
    assert to_jsonable_python(results[3])["status"] == "won"


def test_contacts_are_read_by_every_user_but_imported_by_admins(people: People) -> None:
    ids = people
    with session_scope() as s:
        made = records.create_contact(session=s, caller=ids.member_b, emails=["new@globex.test"])
        seen = records.get_contact(session=s, caller=ids.member_a, contact_id=made.id)
    assert seen.emails == ("new@globex.test",) and seen.company_id is None
    with session_scope() as s, pytest.raises(Forbidden):
        contact_import.import_contacts(session=s, caller=ids.member_b, data=b"Email\nx@globex.test\n")


def test_a_members_whole_thread_change_touches_only_the_mail_they_see(people: People, db: Engine) -> None:
    ids = people
    # A reply to T1 that reached account B only: same thread, invisible to the member of A.
    reply = ("b2", WHEN, FolderRole.INBOX, "hank@globex.test", "support@acme.test", "Re: Pricing", "m4")
    store_mail(db, ids.tenant, ids.account_b, [reply], first_uid=200)
    kwargs: LinkArgs = {
        "message_pk": ids.m1,
        "kind": RecordKind.DEAL,
        "record_id": ids.renewal,
        "whole_thread": True,
    }
    with session_scope() as s:
        thread = s.exec(select(Message.thread_id).where(Message.message_id == "<b2@test>")).one()
        assert thread == ids.threads["T1"]
        assert links.unlink(session=s, caller=ids.member_a, **kwargs) == 4  # T1's four messages in A
        assert links.link_manually(session=s, caller=ids.member_a, **kwargs) == 4
        assert links.link_manually(session=s, caller=ids.admin, **kwargs) == 5
        b2 = links.find_message_pk(session=s, caller=ids.admin, message_id="<b2@test>")
        with pytest.raises(NotFound):
            links.find_message_pk(session=s, caller=ids.member_a, message_id="<b2@test>")
        why = links.why(session=s, caller=ids.member_b, message_pk=b2)
    assert (RecordKind.DEAL, ids.renewal, "manual") in {(w.record_kind, w.record_id, w.reason) for w in why}
