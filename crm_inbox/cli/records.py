"""`crm-inbox contacts|companies|deals|links|report`: CRM records, links and reports.

Thin, like `crm_inbox.cli`: parse arguments, resolve the tenant and act in it as its operator
(`Caller.operator`), call `crm.records`, `crm.links`, `crm.backfill` and `crm.reports` in one
short session, print. No queries of its own. Kept apart from `cli.py` so the sync commands and the
record commands can grow independently; this module does not import `cli.py` (which registers
these apps), so importing either first never meets a half-initialised module. Its JSON helper is
its own for that reason, and because reports carry `date` values the sync commands never print.
"""

from __future__ import annotations

import csv
import dataclasses
import enum
import stat
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Annotated, Any

import typer
from dateutil import parser as dateparser
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn
from rich.table import Table
from sqlmodel import Session

from core.caller import Caller
from core.db import get_engine, session_scope
from crm import backfill, contact_import, links, records, reports
from crm.rules.csv_import import CsvImportError
from crm.rules.linking import RecordKind
from crm_inbox.cli.common import JsonOpt, TenantOpt, err, fail, jsonable, out, print_json, tenant_id_of

contacts_app = typer.Typer(no_args_is_help=True, help="Contacts: add, import a CSV export.")
companies_app = typer.Typer(no_args_is_help=True, help="Companies and their mail domains.")
deals_app = typer.Typer(no_args_is_help=True, help="Deals and their contacts.")
links_app = typer.Typer(no_args_is_help=True, help="Which mail is on which record, and why.")
report_app = typer.Typer(no_args_is_help=True, help="Mail activity and responsiveness reports.")

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


def _cell(value: Any) -> str:
    """A value as CSV/table text: ISO dates, enum values, empty for None."""
    plain = jsonable(value)
    if plain is None:
        return ""
    if isinstance(plain, float):
        return f"{plain:g}" if plain == int(plain) else f"{plain:.1f}"
    return str(plain)


@contextmanager
def _acting(tenant: int | None) -> Iterator[tuple[Session, Caller]]:
    """One short session acting in the tenant (resolved explicitly) as its operator."""
    with session_scope() as session:
        yield session, Caller.operator(tenant_id_of(session, tenant))


def _operator_of(tenant: int | None) -> Caller:
    """The operator of the tenant, for services that open their own short sessions."""
    with _acting(tenant) as (_session, caller):
        return caller


def _print_created(what: str, result: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(result)
    else:
        out.print(f"{what} {result['id']} created; {result['linked_messages']} message(s) linked.")


# ---------------------------------------------------------------------------------------------
# contacts


def _read_csv(file: Path) -> bytes:
    """The file's bytes, refused quickly when it is not a file of at most MAX_CSV_BYTES (a device
    such as /dev/zero, a pipe or a runaway export is never read to its end)."""
    limit = contact_import.MAX_CSV_BYTES
    too_big = f"{file} is larger than {limit // (1024 * 1024)} MB: split it and import the parts."
    try:
        # stat before open: opening a FIFO would wait for a writer.
        info = file.stat()
        if not stat.S_ISREG(info.st_mode):
            raise fail(f"{file} is not a regular file (a device, a pipe or a folder): give a CSV file.")
        if info.st_size > limit:
            raise fail(too_big)
        with file.open("rb") as handle:
            data = handle.read(limit + 1)  # bounded even if the file grows meanwhile
    except OSError as exc:
        raise fail(f"cannot read {file}: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise fail(too_big)
    return data


@contextmanager
def _import_progress() -> Iterator[Callable[[contact_import.ImportProgress], None]]:
    """A progress bar on stderr while an import runs (only on a terminal: scripts and --json
    output stay clean)."""
    with Progress(
        TextColumn("importing"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]} rows"),
        console=err,
        transient=True,
        disable=not err.is_terminal,
    ) as bar:
        task = bar.add_task("import", total=None, rows=0)

        def show(step: contact_import.ImportProgress) -> None:
            bar.update(task, completed=step.position, total=step.size, rows=step.rows + step.bad_rows)

        yield show


@contacts_app.command("import")
def contacts_import(
    file: Annotated[Path, typer.Argument(help="CSV export (comma, semicolon or tab; any encoding).")],
    tenant: TenantOpt = None,
    allow_test_domains: Annotated[
        bool, typer.Option("--allow-test-domains", help="Accept .test addresses (test tenants).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Import contacts. Bad rows are reported with their line and skipped: the exit code is 0
    when the file was processed, 1 when the file itself cannot be imported. Rows are written a
    thousand at a time, each chunk committed, so syncs keep running during a long import."""
    data = _read_csv(file)
    caller = _operator_of(tenant)
    try:
        with _import_progress() as progress:
            report = contact_import.import_contacts_in_chunks(
                sessions=session_scope,
                caller=caller,
                data=data,
                allow_test_domains=allow_test_domains,
                progress=progress,
            )
    except CsvImportError as exc:  # about the file: say which
        raise fail(f"{file}: {exc.message}") from None
    # The rows are committed; their synced mail is linked now in short chunks (this also resumes
    # any import whose linking was interrupted).
    backfill.run_pending(engine=get_engine(), caller=caller)
    if as_json:
        print_json(report)
        return
    out.print(
        f"{file}: {report.created} created, {report.updated} updated, {report.unchanged} unchanged, "
        f"{report.companies_created} companies created, {len(report.errors)} bad row(s) "
        f"(encoding {report.encoding}, delimiter {report.delimiter!r}).",
        highlight=False,
        soft_wrap=True,
    )
    if report.errors:
        table = Table("line", "reason")
        for error in report.errors:
            table.add_row(str(error.line), error.reason)
        out.print(table)


@contacts_app.command("backfill")
def contacts_backfill(tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Link synced mail to imported contacts whose linking was interrupted (a crash or a stop
    during an import); safe to run at any time."""
    caller = _operator_of(tenant)
    results = backfill.run_pending(engine=get_engine(), caller=caller)
    if as_json:
        print_json(list(results))
        return
    linked = sum(r.messages_linked for r in results)
    out.print(f"{len(results)} interrupted import(s) resumed; {linked} message(s) re-decided.")


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
    with _acting(tenant) as (session, caller):
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
    with _acting(tenant) as (session, caller):
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
    with _acting(tenant) as (session, caller):
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
    with _acting(tenant) as (session, caller):
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
    with _acting(tenant) as (session, caller):
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
    with _acting(tenant) as (session, caller):
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


# ---------------------------------------------------------------------------------------------
# report


class OutputFormat(enum.StrEnum):
    TABLE = "table"
    CSV = "csv"
    JSON = "json"


ByOpt = Annotated[reports.ReportBy, typer.Option("--by", help="contact, company, deal or user.")]
IdOpt = Annotated[int | None, typer.Option("--id", help="Only this record (or user) id.")]
SinceOpt = Annotated[str | None, typer.Option("--since", help="From this date/time (UTC), inclusive.")]
UntilOpt = Annotated[str | None, typer.Option("--until", help="Up to this date/time (UTC), exclusive.")]
FormatOpt = Annotated[OutputFormat, typer.Option("--format", help="table, csv or json.")]


def _when(value: str | None, option: str) -> datetime | None:
    """A date ("2026-05-04" = midnight UTC) or a date-time (UTC unless it names a zone)."""
    if value is None:
        return None
    try:
        parsed = date.fromisoformat(value)
    except ValueError:
        pass
    else:
        return datetime.combine(parsed, time(0), tzinfo=UTC)
    try:
        moment = dateparser.isoparse(value)
    except ValueError:
        raise fail(f"{option} {value!r} is not a date (YYYY-MM-DD) or an ISO date-time.", 2) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _emit(rows: Sequence[Any], row_type: type[Any], fmt: OutputFormat) -> None:
    """Rows as a table, as CSV (header first, stdlib csv) or as a JSON list of objects."""
    names = [f.name for f in dataclasses.fields(row_type)]
    if fmt is OutputFormat.JSON:
        print_json(list(rows))
        return
    if fmt is OutputFormat.CSV:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(names)
        for row in rows:
            writer.writerow([_cell(getattr(row, name)) for name in names])
        return
    if not rows:
        out.print("No rows.")
        return
    table = Table(*names)
    for row in rows:
        table.add_row(*(_cell(getattr(row, name)) for name in names))
    out.print(table)


def _run_report(fn: Any, row_type: type[Any], fmt: OutputFormat, tenant: int | None, **kwargs: Any) -> None:
    with _acting(tenant) as (session, caller):
        rows = fn(session=session, caller=caller, **kwargs)
    _emit(rows, row_type, fmt)


@report_app.command("activity")
def report_activity(
    by: ByOpt,
    period: Annotated[reports.Period, typer.Option("--period", help="day or week (Monday).")] = (
        reports.Period.DAY
    ),
    since: SinceOpt = None,
    until: UntilOpt = None,
    record_id: IdOpt = None,
    fmt: FormatOpt = OutputFormat.TABLE,
    tenant: TenantOpt = None,
) -> None:
    """Mail in and out per record and per UTC day or week."""
    _run_report(
        reports.activity,
        reports.ActivityRow,
        fmt,
        tenant,
        by=by,
        period=period,
        since=_when(since, "--since"),
        until=_when(until, "--until"),
        record_id=record_id,
    )


@report_app.command("last-contact")
def report_last_contact(
    by: ByOpt,
    since: SinceOpt = None,
    until: UntilOpt = None,
    record_id: IdOpt = None,
    fmt: FormatOpt = OutputFormat.TABLE,
    tenant: TenantOpt = None,
) -> None:
    """The latest message of each record, and its direction."""
    _run_report(
        reports.last_contact,
        reports.LastContactRow,
        fmt,
        tenant,
        by=by,
        since=_when(since, "--since"),
        until=_when(until, "--until"),
        record_id=record_id,
    )


@report_app.command("first-response")
def report_first_response(
    by: ByOpt,
    since: SinceOpt = None,
    until: UntilOpt = None,
    record_id: IdOpt = None,
    threads: Annotated[bool, typer.Option("--threads", help="One row per thread instead.")] = False,
    fmt: FormatOpt = OutputFormat.TABLE,
    tenant: TenantOpt = None,
) -> None:
    """Time to the first reply on threads that start with inbound mail (median and average)."""
    window = {"since": _when(since, "--since"), "until": _when(until, "--until")}
    if threads:
        _run_report(
            reports.thread_responses,
            reports.ThreadResponseRow,
            fmt,
            tenant,
            by=by,
            record_id=record_id,
            **window,
        )
    else:
        _run_report(
            reports.first_response,
            reports.FirstResponseRow,
            fmt,
            tenant,
            by=by,
            record_id=record_id,
            **window,
        )


@report_app.command("unanswered")
def report_unanswered(
    by: ByOpt,
    older_than_hours: Annotated[
        float | None, typer.Option("--older-than-hours", help="Only threads waiting longer.")
    ] = None,
    record_id: IdOpt = None,
    fmt: FormatOpt = OutputFormat.TABLE,
    tenant: TenantOpt = None,
) -> None:
    """Threads whose latest message is inbound."""
    _run_report(
        reports.unanswered,
        reports.UnansweredRow,
        fmt,
        tenant,
        by=by,
        older_than_hours=older_than_hours,
        record_id=record_id,
    )
