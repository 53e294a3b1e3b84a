"""`crm-inbox contacts|companies|deals|links|report` through Typer's CliRunner, on SQLite and
PostgreSQL, against the real services."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Protocol

import pytest
import typer
from sqlalchemy import Engine
from sqlmodel import Session, select
from typer.testing import CliRunner, Result

from core.db import session_scope
from crm import tenants
from crm.models import Contact, Message
from crm_inbox import cli
from crm_inbox.cli import import_export as cli_import_export, records as cli_records
from crm_inbox.cli.errors import HandledGroup
from tests.crm.test_reports import build_world

CSV_DIR = Path(__file__).resolve().parent / "fixtures" / "csv"
MIXED = CSV_DIR / "cli_mixed_semicolon_bom.csv"


def make_app() -> typer.Typer:
    """cli.py's app plus the record apps, assembled without touching the global `cli.app`
    (whether or not cli.py already registers them)."""
    root = typer.Typer(cls=HandledGroup, no_args_is_help=True, add_completion=False)
    root.registered_callback = cli.app.registered_callback
    root.registered_commands = list(cli.app.registered_commands)
    mine = {name for name, _ in cli_records.APPS}
    root.registered_groups = [g for g in cli.app.registered_groups if g.name not in mine]
    cli_records.register(root)
    return root


class Run(Protocol):
    """The `run` fixture: invoke the CLI with these arguments."""

    def __call__(self, *args: str) -> Result: ...


@pytest.fixture
def run(db: Engine) -> Run:
    app = make_app()
    runner = CliRunner()

    def invoke(*args: str) -> Result:
        return runner.invoke(app, list(args))

    return invoke


@pytest.fixture
def tenant(db: Engine) -> int:
    with session_scope(db) as s:
        return tenants.create_tenant(session=s, name="Acme", own_domains=["acme.test"]).id or 0


def test_import_reports_bad_rows_by_line_and_reimport_changes_nothing(
    run: Run, tenant: int, db: Engine
) -> None:
    first = run("contacts", "import", str(MIXED), "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.stdout)
    assert (report["created"], report["updated"], report["unchanged"]) == (2, 0, 0)
    assert report["companies_created"] == 2
    assert (report["encoding"], report["delimiter"]) == ("utf-8-sig", ";")
    errors = {e["line"]: e["reason"] for e in report["errors"]}
    assert sorted(errors) == [3, 6, 7, 8]  # line 5 is blank and skipped silently
    assert "invalid email 'jean(at)initech.com'" in errors[3]
    assert errors[6] == "duplicate email helene@globex-corp.com (first on line 2)"
    assert "zoe@lab.test" in errors[7]
    assert errors[8] == "missing email"
    with Session(db) as s:
        names = sorted(c.full_name for c in s.exec(select(Contact)).all())
    assert names == ["Hélène Lefèvre", "Marie Curie"]

    again = run("contacts", "import", str(MIXED), "--json")
    assert again.exit_code == 0
    second = json.loads(again.stdout)
    assert (second["created"], second["updated"], second["unchanged"], second["companies_created"]) == (
        0,
        0,
        2,
        0,
    )
    assert [e["line"] for e in second["errors"]] == [3, 6, 7, 8]

    # Test tenants may accept .test addresses: only line 7 changes.
    third = json.loads(run("contacts", "import", str(MIXED), "--json", "--allow-test-domains").stdout)
    assert (third["created"], third["unchanged"]) == (1, 2)
    assert [e["line"] for e in third["errors"]] == [3, 6, 8]


def test_import_human_output_and_file_level_errors(run: Run, tenant: int, tmp_path: Path) -> None:
    human = run("contacts", "import", str(MIXED))
    assert human.exit_code == 0
    assert "2 created, 0 updated, 0 unchanged" in human.stdout
    assert "missing email" in human.stdout

    no_email = run("contacts", "import", str(CSV_DIR / "no_email_column.csv"))
    assert no_email.exit_code == 1
    assert "no email column found" in no_email.stderr

    missing = run("contacts", "import", str(tmp_path / "nope.csv"))
    assert missing.exit_code == 1
    assert "cannot read" in missing.stderr


def test_import_refuses_devices_pipes_and_big_files_without_reading_them(
    run: Run, tenant: int, tmp_path: Path
) -> None:
    """Issue 12.11: an endless source is refused at once, never read (a FIFO not even opened:
    that would wait for a writer); a file over the limit is refused by its size. Timed in CPU
    seconds of this process (the CLI runs in it): reading the sources would cost them, while the
    wall clock of a busy machine says nothing about it (a blocked open never returns at all)."""
    started = time.process_time()
    endless = run("contacts", "import", "/dev/zero")
    assert endless.exit_code == 1 and "/dev/zero is not a regular file" in endless.stderr
    fifo = tmp_path / "export.csv"
    os.mkfifo(fifo)
    piped = run("contacts", "import", str(fifo))
    assert piped.exit_code == 1 and "not a regular file" in piped.stderr
    folder = run("contacts", "import", str(tmp_path))
    assert folder.exit_code == 1 and "not a regular file" in folder.stderr
    huge = tmp_path / "huge.csv"
    with huge.open("wb") as handle:  # sparse: 50 MB long, nothing written
        handle.truncate(50 * 1024 * 1024)
    too_big = run("contacts", "import", str(huge))
    assert too_big.exit_code == 1 and "larger than 20 MB: split it" in too_big.stderr
    assert time.process_time() - started < 5


def test_import_of_many_rows_commits_in_chunks_and_reports_once(
    run: Run, tenant: int, db: Engine, tmp_path: Path
) -> None:
    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text("Email,Name\n" + "".join(f"p{i}@client.example,Pat {i}\n" for i in range(2001)))
    imported = run("contacts", "import", str(csv_file), "--json")
    assert imported.exit_code == 0, imported.output
    report = json.loads(imported.stdout)
    assert report["created"] == 2001 and len(report["backfill_job_ids"]) == 3
    with Session(db) as s:
        assert len(s.exec(select(Contact.id)).all()) == 2001


def test_add_records_and_manual_links(run: Run, db: Engine) -> None:
    ids = build_world(db)
    company = run("companies", "add", "Umbrella", "--domain", "umbrella.test", "--json")
    assert company.exit_code == 0, company.output
    assert json.loads(company.stdout)["linked_messages"] == 0

    # An address can belong to one contact only; a fresh address has no mail to backfill.
    taken = run("contacts", "add", "--email", "hank@globex.test")
    assert taken.exit_code == 1 and "already belongs to contact" in taken.stderr
    added = run("contacts", "add", "--email", "Nina@Umbrella.test", "--first-name", "Nina", "--json")
    assert added.exit_code == 0, added.output
    nina = json.loads(added.stdout)
    assert nina["emails"] == ["nina@umbrella.test"] and nina["full_name"] == "Nina"

    deal = run("deals", "add", "Peter upsell", "--contact", str(ids.peter), "--amount", "1200", "--json")
    assert deal.exit_code == 0, deal.output
    deal_out = json.loads(deal.stdout)
    assert deal_out["linked_messages"] == 6  # all of Peter's mail, linked by the backfill

    why = json.loads(run("links", "why", "<m8@test>", "--json").stdout)
    assert {(link["record_kind"], link["record_id"]) for link in why["links"]} == {
        ("company", ids.initech),
        ("contact", ids.peter),
        ("deal", deal_out["id"]),
    }

    with Session(db) as s:
        m1 = s.exec(select(Message).where(Message.message_id == "<m1@test>")).one()
    linked = run("links", "link", str(m1.id), "--contact", str(nina["id"]), "--thread", "--json")
    assert linked.exit_code == 0, linked.output
    assert json.loads(linked.stdout)["linked"] == 4  # T1 has four messages
    reasons = json.loads(run("links", "why", str(m1.id), "--json").stdout)["links"]
    assert {
        "record_kind": "contact",
        "record_id": nina["id"],
        "reason": "manual",
        "detail": "linked by a user",
    } in (reasons)
    unlinked = run("links", "unlink", "m1@test", "--contact", str(nina["id"]), "--thread", "--json")
    assert json.loads(unlinked.stdout)["unlinked"] == 4

    won = run("deals", "status", str(deal_out["id"]), "won", "--json")
    assert won.exit_code == 0 and json.loads(won.stdout)["status"] == "won"
    bad = run("deals", "status", str(deal_out["id"]), "maybe")
    assert bad.exit_code == 1 and "open, won, lost" in bad.stderr

    both = run("links", "link", "1", "--contact", "1", "--deal", "1")
    assert both.exit_code == 2 and "exactly one record" in both.stderr
    unknown = run("links", "why", "<nope@test>")
    assert unknown.exit_code == 1 and "No message" in unknown.stderr


def test_report_csv_and_json(run: Run, db: Engine) -> None:
    ids = build_world(db)
    weekly = run("report", "activity", "--by", "contact", "--period", "week", "--format", "csv")
    assert weekly.exit_code == 0, weekly.output
    assert list(csv.reader(io.StringIO(weekly.stdout))) == [
        ["by", "record_id", "label", "period_start", "inbound", "outbound"],
        ["contact", str(ids.hank), "Hank Scorpio", "2026-04-27", "1", "0"],
        ["contact", str(ids.hank), "Hank Scorpio", "2026-05-04", "3", "3"],
        ["contact", str(ids.peter), "Peter Gibbons", "2026-05-04", "3", "3"],
    ]

    ranged = run(
        "report",
        "activity",
        *("--by", "user", "--id", str(ids.bob)),
        *("--since", "2026-05-05", "--until", "2026-05-08", "--format", "csv"),
    )
    assert ranged.stdout.splitlines()[1:] == [
        f"user,{ids.bob},bob@acme.test,2026-05-05,0,1",
        f"user,{ids.bob},bob@acme.test,2026-05-07,1,0",
    ]

    response = run("report", "first-response", "--by", "user", "--format", "json")
    assert response.exit_code == 0, response.output
    assert json.loads(response.stdout) == [
        {
            "by": "user",
            "record_id": ids.alice,
            "label": "alice@acme.test",
            "threads": 2,
            "answered": 1,
            "median_seconds": 5400.0,
            "average_seconds": 5400.0,
        },
        {
            "by": "user",
            "record_id": ids.bob,
            "label": "bob@acme.test",
            "threads": 4,
            "answered": 3,
            "median_seconds": 1800.0,
            "average_seconds": 40820.0,
        },
    ]

    waiting = json.loads(run("report", "unanswered", "--by", "deal", "--format", "json").stdout)
    assert [(w["thread_id"], w["subject"], w["last_inbound_at"]) for w in waiting] == [
        (ids.threads["T3"], "Intro", "2026-05-04T15:00:00Z"),
        (ids.threads["T2"], "Contract question", "2026-05-06T12:00:00Z"),
    ]

    last = run("report", "last-contact", "--by", "company", "--format", "csv")
    assert last.stdout.splitlines()[0] == "by,record_id,label,last_date,direction,message_pk,subject"
    assert last.stdout.splitlines()[1].startswith(
        f"company,{ids.globex},Globex,2026-05-06T12:00:00Z,inbound,"
    )

    table = run("report", "first-response", "--by", "contact", "--threads")
    assert table.exit_code == 0 and "5400" in table.stdout

    bad = run("report", "activity", "--by", "contact", "--since", "last tuesday")
    assert bad.exit_code == 2 and "not a date" in bad.stderr


def test_backfill_command_resumes_nothing_when_nothing_is_pending(run: Run, db: Engine) -> None:
    build_world(db)
    resumed = run("contacts", "backfill", "--json")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(resumed.stdout) == []
    assert "0 interrupted import(s) resumed" in run("contacts", "backfill").stdout


def test_import_shows_a_progress_bar_on_a_terminal_only(
    run: Run, tenant: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    csv_file = tmp_path / "contacts.csv"
    csv_file.write_text("Email\n" + "".join(f"q{i}@client.example\n" for i in range(20)))
    terminal = io.StringIO()
    monkeypatch.setattr(cli_import_export, "err", Console(file=terminal, force_terminal=True, width=100))
    shown = run("contacts", "import", str(csv_file))
    assert shown.exit_code == 0, shown.output
    drawn = terminal.getvalue()
    assert "importing" in drawn and "20 rows" in drawn and "100%" in drawn
    assert "importing" not in shown.stdout  # the report stays clean


def test_a_write_behind_a_held_sqlite_lock_is_a_clear_busy_error(
    sqlite_db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12.11: `account add` and the like failed with a "database is locked" traceback
    behind a long import; now the busy database is reported as such, exit code 1."""
    import sqlite3

    from core.settings import reset_settings

    with session_scope(sqlite_db) as s:
        tenants.create_tenant(session=s, name="Acme", own_domains=["acme.test"])
    monkeypatch.setenv("CRM_INBOX_DATABASE_BUSY_TIMEOUT_SECONDS", "0.3")
    reset_settings()
    sqlite_db.dispose()
    holder = sqlite3.connect(sqlite_db.url.database or "", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        done = CliRunner().invoke(make_app(), ["contacts", "add", "--email", "x@client.example"])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert done.exit_code == 1 and isinstance(done.exception, SystemExit), done.exception
    assert "The database is busy" in done.stderr and "Traceback" not in done.output
