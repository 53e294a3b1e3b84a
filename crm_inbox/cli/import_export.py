"""Records in and out in bulk: `crm-inbox contacts import` (a CSV export of another tool),
`contacts backfill` (finishes the linking of an interrupted import) and the `report` commands
(a table, or a CSV or JSON export for a spreadsheet or a script).

Apart from `crm_inbox.cli.records` because files and formats are their own concern (size limits,
encodings, a progress bar, CSV writing) and grow apart from the one-record commands; `records`
registers these commands in their places (`contacts import`, `report activity`, ...).
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

from core.db import get_engine, session_scope
from crm import backfill, contact_import, reports
from crm.rules.csv_import import CsvImportError
from crm_inbox.cli.common import (
    JsonOpt,
    TenantOpt,
    acting,
    err,
    fail,
    jsonable,
    operator_of,
    out,
    print_json,
)

report_app = typer.Typer(no_args_is_help=True, help="Mail activity and responsiveness reports.")


# ---------------------------------------------------------------------------------------------
# contacts import


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
    caller = operator_of(tenant)
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


def contacts_backfill(tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Link synced mail to imported contacts whose linking was interrupted (a crash or a stop
    during an import); safe to run at any time."""
    caller = operator_of(tenant)
    results = backfill.run_pending(engine=get_engine(), caller=caller)
    if as_json:
        print_json(list(results))
        return
    linked = sum(r.messages_linked for r in results)
    out.print(f"{len(results)} interrupted import(s) resumed; {linked} message(s) re-decided.")


# ---------------------------------------------------------------------------------------------
# report


def _cell(value: Any) -> str:
    """A value as CSV/table text: ISO dates, enum values, empty for None."""
    plain = jsonable(value)
    if plain is None:
        return ""
    if isinstance(plain, float):
        return f"{plain:g}" if plain == int(plain) else f"{plain:.1f}"
    return str(plain)


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
    with acting(tenant) as (session, caller):
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
