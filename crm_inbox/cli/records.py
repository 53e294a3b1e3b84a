"""`crm-inbox contacts|companies|deals|links|report`: CRM records, links and reports.

Thin, like `crm_inbox.cli`: parse arguments, resolve the tenant and act in it as its operator
(`Caller.operator`), call `crm.records` and `crm.links` in one short session, print. No queries of
its own. Getting records in and out in bulk (`contacts import`, `contacts backfill` and the
`report` exports) lives in `crm_inbox.cli.import_export`; this module registers those commands
in their places, so the command tree is one. Kept apart from `cli.py` so the sync commands and the
record commands can grow independently; this module does not import `cli.py` (which registers
these apps), so importing either first never meets a half-initialised module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

import typer
from rich.table import Table
from sqlmodel import Session

from core.caller import Caller
from crm import links, records
from crm.rules.linking import RecordKind
from crm_inbox.cli import import_export
from crm_inbox.cli.common import JsonOpt, TenantOpt, acting, fail, out, print_json

contacts_app = typer.Typer(no_args_is_help=True, help="Contacts: add, import a CSV export.")
companies_app = typer.Typer(no_args_is_help=True, help="Companies and their mail domains.")
deals_app = typer.Typer(no_args_is_help=True, help="Deals and their contacts.")
links_app = typer.Typer(no_args_is_help=True, help="Which mail is on which record, and why.")
report_app = import_export.report_app

# First among the contacts commands, as before the split (help lists them in this order).
contacts_app.command("import")(import_export.contacts_import)
contacts_app.command("backfill")(import_export.contacts_backfill)

APPS: tuple[tuple[str, typer.Typer], ...] = (
    ("contacts", contacts_app),
    ("companies", companies_app),
    ("deals", deals_app),
    ("links", links_app),
    ("report", report_app),
)


def register(app: typer.Typer) -> None:
    """Add the record commands to the main `crm-inbox` app."""
    for name, sub in APPS:
        app.add_typer(sub, name=name)


# ---------------------------------------------------------------------------------------------
# Output helpers


def _print_created(what: str, result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(result)
    else:
        out.print(f"{what} {result['id']} created; {result['linked_messages']} message(s) linked.")


# ---------------------------------------------------------------------------------------------
# contacts


@contacts_app.command("add")
def contacts_add(
    email: Annotated[list[str], typer.Option("--email", help="An address (repeat for several).")],
    first_name: Annotated[str, typer.Option("--first-name")] = "",
    last_name: Annotated[str, typer.Option("--last-name")] = "",
    phone: Annotated[str, typer.Option("--phone")] = "",
    company_id: Annotated[int | None, typer.Option("--company-id")] = None,
    owner_id: Annotated[int | None, typer.Option("--owner-id", help="User id of the owner.")] = None,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a contact; mail already synced with its addresses is linked at once."""
    with acting(tenant) as (session, caller):
        contact = records.create_contact(
            session=session,
            caller=caller,
            emails=email,
            first_name=first_name,
            last_name=last_name,
            phone=phone,
            company_id=company_id,
            owner_user_id=owner_id,
        )
        result = {
            "id": contact.id,
            "full_name": contact.full_name,
            "emails": list(contact.emails),
            "linked_messages": links.linked_count(
                session=session, caller=caller, kind=RecordKind.CONTACT, record_id=contact.id
            ),
        }
    _print_created("Contact", result, as_json)


# ---------------------------------------------------------------------------------------------
# companies


@companies_app.command("add")
def companies_add(
    name: str,
    domain: Annotated[list[str] | None, typer.Option("--domain", help="Mail domain (repeatable).")] = None,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a company; mail from its domains is linked at once."""
    with acting(tenant) as (session, caller):
        company = records.create_company(session=session, caller=caller, name=name, domains=domain or [])
        result = {
            "id": company.id,
            "name": company.name,
            "linked_messages": links.linked_count(
                session=session, caller=caller, kind=RecordKind.COMPANY, record_id=company.id
            ),
        }
    _print_created("Company", result, as_json)


# ---------------------------------------------------------------------------------------------
# deals


@deals_app.command("add")
def deals_add(
    title: str,
    contact: Annotated[list[int], typer.Option("--contact", help="Contact id (repeatable).")],
    amount: Annotated[float | None, typer.Option("--amount")] = None,
    currency: Annotated[str, typer.Option("--currency")] = "EUR",
    stage: Annotated[str, typer.Option("--stage")] = "new",
    status: Annotated[str, typer.Option("--status", help="open, won or lost.")] = "open",
    company_id: Annotated[int | None, typer.Option("--company-id")] = None,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a deal; its contacts' synced mail is linked at once (open deals only)."""
    with acting(tenant) as (session, caller):
        deal = records.create_deal(
            session=session,
            caller=caller,
            title=title,
            contact_ids=contact,
            amount=amount,
            currency=currency,
            stage=stage,
            status=status,
            company_id=company_id,
        )
        result = {
            "id": deal.id,
            "title": deal.title,
            "status": deal.status,
            "linked_messages": links.linked_count(
                session=session, caller=caller, kind=RecordKind.DEAL, record_id=deal.id
            ),
        }
    _print_created("Deal", result, as_json)


@deals_app.command("status")
def deals_status(
    deal_id: int,
    status: Annotated[str, typer.Argument(help="open, won or lost.")],
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mark a deal open, won or lost (closed deals get no new mail by rule, only by hand)."""
    with acting(tenant) as (session, caller):
        deal = records.set_deal_status(session=session, caller=caller, deal_id=deal_id, status=status)
        result = {"id": deal.id, "title": deal.title, "status": deal.status}
    if as_json:
        print_json(result)
    else:
        out.print(f"Deal {result['id']} ({result['title']}) is now {result['status']}.")


# ---------------------------------------------------------------------------------------------
# links


def _message_pk(session: Session, caller: Caller, message: str) -> int:
    """A message by database id ("42") or by its Message-ID header ("<abc@host>")."""
    if message.isdigit():
        return int(message)
    return links.find_message_pk(session=session, caller=caller, message_id=message)


@links_app.command("why")
def links_why(
    message: Annotated[str, typer.Argument(help="Message id, or its Message-ID header.")],
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Why each record is on this message."""
    with acting(tenant) as (session, caller):
        message_pk = _message_pk(session, caller, message)
        explanations = links.why(session=session, caller=caller, message_pk=message_pk)
    if as_json:
        print_json({"message": message_pk, "links": explanations})
        return
    if not explanations:
        out.print(f"Message {message_pk} is on no record.")
        return
    table = Table("record", "id", "reason", "detail")
    for e in explanations:
        table.add_row(e.record_kind, str(e.record_id), e.reason, e.detail)
    out.print(table)


def _one_record(contact: int | None, deal: int | None, company: int | None) -> tuple[RecordKind, int]:
    given = [
        (kind, value)
        for kind, value in (
            (RecordKind.CONTACT, contact),
            (RecordKind.DEAL, deal),
            (RecordKind.COMPANY, company),
        )
        if value is not None
    ]
    if len(given) != 1:
        raise fail("name exactly one record: --contact ID, --deal ID or --company ID.", 2)
    return given[0]


ContactOpt = Annotated[int | None, typer.Option("--contact", help="Contact id.")]
DealOpt = Annotated[int | None, typer.Option("--deal", help="Deal id.")]
CompanyOpt = Annotated[int | None, typer.Option("--company", help="Company id.")]
ThreadOpt = Annotated[bool, typer.Option("--thread", help="Every message of the message's thread.")]


def _change_link(
    service: Callable[..., int],
    verb: str,
    sentence: str,
    message: str,
    record: tuple[RecordKind, int],
    thread: bool,
    tenant: int | None,
    as_json: bool,
) -> None:
    """Shared by `links link` and `links unlink`: same arguments, same output."""
    kind, record_id = record
    with acting(tenant) as (session, caller):
        message_pk = _message_pk(session, caller, message)
        count = service(
            session=session,
            caller=caller,
            message_pk=message_pk,
            kind=kind,
            record_id=record_id,
            whole_thread=thread,
        )
    if as_json:
        print_json({"message": message_pk, "record_kind": kind.value, "record_id": record_id, verb: count})
    else:
        out.print(sentence.format(count=count, record=f"{kind.value} {record_id}"))


@links_app.command("link")
def links_link(
    message: Annotated[str, typer.Argument(help="Message id, or its Message-ID header.")],
    contact: ContactOpt = None,
    deal: DealOpt = None,
    company: CompanyOpt = None,
    thread: ThreadOpt = False,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Link a message (or its thread) to a record by hand; rules never remove such a link."""
    record = _one_record(contact, deal, company)
    _change_link(
        links.link_manually,
        "linked",
        "{count} message(s) linked to {record}.",
        message,
        record,
        thread,
        tenant,
        as_json,
    )


@links_app.command("unlink")
def links_unlink(
    message: Annotated[str, typer.Argument(help="Message id, or its Message-ID header.")],
    contact: ContactOpt = None,
    deal: DealOpt = None,
    company: CompanyOpt = None,
    thread: ThreadOpt = False,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove a record from a message (or its thread); rules will not put it back on the thread."""
    record = _one_record(contact, deal, company)
    _change_link(
        links.unlink,
        "unlinked",
        "{count} link(s) to {record} removed.",
        message,
        record,
        thread,
        tenant,
        as_json,
    )
