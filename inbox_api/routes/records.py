"""Contacts, companies and deals: lists, create, edit, delete, CSV import, mail timelines; the
sharing level of each account on those timelines; reports and an incremental export of linked
mail for scripts and BI jobs (JSON or CSV), scoped like everything else."""

from __future__ import annotations

import csv
import dataclasses
import io
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, File, Query, UploadFile
from fastapi.responses import Response
from pydantic import BaseModel, Field
from pydantic_core import to_jsonable_python

from core.db import get_engine, session_scope
from core.errors import InvalidInput
from core.types import SharingLevel
from crm import backfill, contact_import, exports, record_lists, records, reports, timelines
from crm.contact_import import ImportReport
from crm.exports import ExportPage
from crm.record_lists import Page
from crm.records import CompanyView, ContactView, DealView
from crm.rules.linking import DealStatus, RecordKind
from crm.timelines import SharingView, TimelinePage
from inbox_api.deps import CallerDep, SessionDep

router = APIRouter(prefix="/api", tags=["records"])
MAX_CSV_BYTES = contact_import.MAX_CSV_BYTES
Limit = Annotated[int, Query(ge=1, le=record_lists.MAX_PAGE)]


class ContactIn(BaseModel):
    emails: list[str] = Field(min_length=1, max_length=20)  # checked by the service (email-validator)
    first_name: str = Field(default="", max_length=200)
    last_name: str = Field(default="", max_length=200)
    phone: str = Field(default="", max_length=100)
    company_id: int | None = None
    owner_user_id: int | None = None


class ContactEditIn(BaseModel):
    first_name: str | None = Field(default=None, max_length=200)
    last_name: str | None = Field(default=None, max_length=200)
    phone: str | None = Field(default=None, max_length=100)
    company_id: int | None = None
    clear_company: bool = False
    owner_user_id: int | None = None


class CompanyIn(BaseModel):
    name: str = Field(min_length=1, max_length=300)
    domains: list[str] = Field(default_factory=list, max_length=20)


class DealIn(BaseModel):
    title: str = Field(min_length=1, max_length=300)
    contact_ids: list[int] = Field(default_factory=list, max_length=100)
    stage: str = Field(default="new", max_length=100)
    amount: float | None = Field(default=None, ge=0)
    currency: str = Field(default="EUR", min_length=3, max_length=3)
    company_id: int | None = None
    owner_user_id: int | None = None


class DealEditIn(BaseModel):
    title: str | None = Field(default=None, max_length=300)
    stage: str | None = Field(default=None, max_length=100)
    amount: float | None = Field(default=None, ge=0)
    status: DealStatus | None = None


class SharingIn(BaseModel):
    level: SharingLevel | None = Field(
        description="null: full for a shared mailbox, metadata for a personal one"
    )


# ---------------------------------------------------------------------------------------------
# Contacts


@router.get("/contacts", summary="Contacts (search names and addresses; keyset pages by id)")
def list_contacts(
    session: SessionDep,
    caller: CallerDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
    company_id: int | None = None,
    after: int = 0,
    limit: Limit = 50,
) -> Page[ContactView]:
    return record_lists.list_contacts(
        session=session, caller=caller, q=q, company_id=company_id, after=after, limit=limit
    )


@router.post("/contacts", status_code=201, summary="Create a contact (its synced mail is linked at once)")
def create_contact(body: ContactIn, session: SessionDep, caller: CallerDep) -> ContactView:
    return records.create_contact(
        session=session,
        caller=caller,
        emails=[str(e) for e in body.emails],
        first_name=body.first_name,
        last_name=body.last_name,
        phone=body.phone,
        company_id=body.company_id,
        owner_user_id=body.owner_user_id,
    )


@router.get("/contacts/{contact_id}", summary="One contact")
def get_contact(contact_id: int, session: SessionDep, caller: CallerDep) -> ContactView:
    return records.get_contact(session=session, caller=caller, contact_id=contact_id)


@router.patch("/contacts/{contact_id}", summary="Edit a contact")
def edit_contact(contact_id: int, body: ContactEditIn, session: SessionDep, caller: CallerDep) -> ContactView:
    return record_lists.update_contact(
        session=session,
        caller=caller,
        contact_id=contact_id,
        first_name=body.first_name,
        last_name=body.last_name,
        phone=body.phone,
        company_id=body.company_id,
        clear_company=body.clear_company,
        owner_user_id=body.owner_user_id,
    )


@router.delete("/contacts/{contact_id}", status_code=204, summary="Delete a contact and its links (admins)")
def delete_contact(contact_id: int, session: SessionDep, caller: CallerDep) -> None:
    record_lists.delete_record(session=session, caller=caller, kind=RecordKind.CONTACT, record_id=contact_id)


@router.post("/contacts/import", summary="Import contacts from a CSV export (admins); bad rows by line")
def import_contacts(
    session: SessionDep,
    caller: CallerDep,
    file: Annotated[UploadFile, File(description="CSV export of another CRM (any common encoding)")],
    allow_test_domains: Annotated[bool, Query(description="Accept .test addresses (test tenants)")] = False,
) -> ImportReport:
    data = file.file.read(MAX_CSV_BYTES + 1)
    if len(data) > MAX_CSV_BYTES:
        raise InvalidInput(
            "csv_too_large", "The file is larger than 20 MB.", field="file", maximum=MAX_CSV_BYTES
        )
    # Nothing of the request's own session stays open (on SQLite it could hold the write lock):
    # the rows are written in chunks of their own transactions, so syncs keep running meanwhile;
    # linking runs after, in short chunks of its own.
    session.commit()
    engine = get_engine()
    report = contact_import.import_contacts_in_chunks(
        sessions=lambda: session_scope(engine),
        caller=caller,
        data=data,
        allow_test_domains=allow_test_domains,
    )
    backfill.run_pending(engine=engine, caller=caller)
    return report


@router.get(
    "/contacts/{contact_id}/timeline", summary="A contact's mail, newest first (sharing levels apply)"
)
def contact_timeline(
    contact_id: int, session: SessionDep, caller: CallerDep, cursor: str | None = None, limit: Limit = 50
) -> TimelinePage:
    return timelines.timeline(
        session=session,
        caller=caller,
        kind=RecordKind.CONTACT,
        record_id=contact_id,
        cursor=cursor,
        limit=limit,
    )


# ---------------------------------------------------------------------------------------------
# Companies


@router.get("/companies", summary="Companies (search names and domains)")
def list_companies(
    session: SessionDep,
    caller: CallerDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
    after: int = 0,
    limit: Limit = 50,
) -> Page[CompanyView]:
    return record_lists.list_companies(session=session, caller=caller, q=q, after=after, limit=limit)


@router.post("/companies", status_code=201, summary="Create a company with its mail domains")
def create_company(body: CompanyIn, session: SessionDep, caller: CallerDep) -> CompanyView:
    return records.create_company(session=session, caller=caller, name=body.name, domains=body.domains)


@router.get("/companies/{company_id}", summary="One company")
def get_company(company_id: int, session: SessionDep, caller: CallerDep) -> CompanyView:
    return records.get_company(session=session, caller=caller, company_id=company_id)


@router.delete("/companies/{company_id}", status_code=204, summary="Delete a company and its links (admins)")
def delete_company(company_id: int, session: SessionDep, caller: CallerDep) -> None:
    record_lists.delete_record(session=session, caller=caller, kind=RecordKind.COMPANY, record_id=company_id)


@router.get("/companies/{company_id}/timeline", summary="A company's mail, newest first")
def company_timeline(
    company_id: int, session: SessionDep, caller: CallerDep, cursor: str | None = None, limit: Limit = 50
) -> TimelinePage:
    return timelines.timeline(
        session=session,
        caller=caller,
        kind=RecordKind.COMPANY,
        record_id=company_id,
        cursor=cursor,
        limit=limit,
    )


# ---------------------------------------------------------------------------------------------
# Deals


@router.get("/deals", summary="Deals (search titles; by status or stage)")
def list_deals(
    session: SessionDep,
    caller: CallerDep,
    q: Annotated[str | None, Query(max_length=200)] = None,
    status: DealStatus | None = None,
    stage: Annotated[str | None, Query(max_length=100)] = None,
    after: int = 0,
    limit: Limit = 50,
) -> Page[DealView]:
    return record_lists.list_deals(
        session=session, caller=caller, q=q, status=status, stage=stage, after=after, limit=limit
    )


@router.post("/deals", status_code=201, summary="Create a deal (its contacts' open mail is linked)")
def create_deal(body: DealIn, session: SessionDep, caller: CallerDep) -> DealView:
    return records.create_deal(
        session=session,
        caller=caller,
        title=body.title,
        contact_ids=body.contact_ids,
        stage=body.stage,
        amount=body.amount,
        currency=body.currency,
        company_id=body.company_id,
        owner_user_id=body.owner_user_id,
    )


@router.get("/deals/{deal_id}", summary="One deal")
def get_deal(deal_id: int, session: SessionDep, caller: CallerDep) -> DealView:
    return records.get_deal(session=session, caller=caller, deal_id=deal_id)


@router.patch("/deals/{deal_id}", summary="Edit a deal: title, stage, amount, status")
def edit_deal(deal_id: int, body: DealEditIn, session: SessionDep, caller: CallerDep) -> DealView:
    return record_lists.update_deal(
        session=session,
        caller=caller,
        deal_id=deal_id,
        title=body.title,
        stage=body.stage,
        amount=body.amount,
        status=body.status,
    )


@router.delete("/deals/{deal_id}", status_code=204, summary="Delete a deal and its links (admins)")
def delete_deal(deal_id: int, session: SessionDep, caller: CallerDep) -> None:
    record_lists.delete_record(session=session, caller=caller, kind=RecordKind.DEAL, record_id=deal_id)


@router.get("/deals/{deal_id}/timeline", summary="A deal's mail, newest first")
def deal_timeline(
    deal_id: int, session: SessionDep, caller: CallerDep, cursor: str | None = None, limit: Limit = 50
) -> TimelinePage:
    return timelines.timeline(
        session=session, caller=caller, kind=RecordKind.DEAL, record_id=deal_id, cursor=cursor, limit=limit
    )


# ---------------------------------------------------------------------------------------------
# Sharing, reports, export


@router.get("/accounts/{account_id}/sharing", summary="What record timelines show of an account's mail")
def get_sharing(account_id: int, session: SessionDep, caller: CallerDep) -> SharingView:
    return timelines.get_sharing(session=session, caller=caller, account_id=account_id)


@router.put("/accounts/{account_id}/sharing", summary="Set an account's sharing level (admins)")
def set_sharing(account_id: int, body: SharingIn, session: SessionDep, caller: CallerDep) -> SharingView:
    return timelines.set_sharing(session=session, caller=caller, account_id=account_id, level=body.level)


class ReportName(StrEnum):
    activity = "activity"
    last_contact = "last-contact"
    first_response = "first-response"
    unanswered = "unanswered"


class Format(StrEnum):
    json = "json"
    csv = "csv"


def _csv(rows: list[Any]) -> Response:
    buffer = io.StringIO()
    if rows:
        plain = [to_jsonable_python(r) for r in rows]
        writer = csv.DictWriter(buffer, fieldnames=[f.name for f in dataclasses.fields(rows[0])])
        writer.writeheader()
        writer.writerows(plain)
    return Response(buffer.getvalue(), media_type="text/csv; charset=utf-8")


@router.get(
    "/reports/{name}", summary="Reports on linked mail, as JSON or CSV (scoped to what the caller sees)"
)
def report(
    name: ReportName,
    session: SessionDep,
    caller: CallerDep,
    by: reports.ReportBy = reports.ReportBy.COMPANY,
    since: datetime | None = None,
    until: datetime | None = None,
    record_id: int | None = None,
    period: reports.Period = reports.Period.WEEK,
    format: Format = Format.json,
) -> Any:
    common: dict[str, Any] = {"session": session, "caller": caller, "by": by, "record_id": record_id}
    rows: list[Any]
    if name is ReportName.activity:
        rows = list(reports.activity(**common, period=period, since=since, until=until))
    elif name is ReportName.last_contact:
        rows = list(reports.last_contact(**common, since=since, until=until))
    elif name is ReportName.first_response:
        rows = list(reports.first_response(**common, since=since, until=until))
    else:
        rows = list(reports.unanswered(**common))
    return _csv(rows) if format is Format.csv else to_jsonable_python(rows)


@router.get("/export/linked-mail", summary="Linked mail changed since a cursor (incremental loads for BI)")
def export_linked_mail(
    session: SessionDep,
    caller: CallerDep,
    since: int = 0,
    limit: Annotated[int, Query(ge=1, le=exports.MAX_PAGE)] = 1000,
) -> ExportPage:
    return exports.linked_mail(session=session, caller=caller, since=since, limit=limit)
