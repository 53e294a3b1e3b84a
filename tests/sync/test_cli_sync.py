"""The sync face of the CLI (`crm_inbox.cli.sync`), registered on an app of its own."""

from __future__ import annotations

import json

import pytest
import typer
from sqlalchemy import Engine
from sqlmodel import Session, select
from typer.testing import CliRunner

from core.db import session_scope
from core.types import FolderRole, FolderSyncStatus
from crm import sync_state
from crm.models import FolderState
from crm_inbox.cli.errors import HandledGroup
from crm_inbox.cli.sync import register
from tests.dovecot_fixtures import MailboxUser
from tests.factories import make_account, make_offline_account, make_tenant


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer(cls=HandledGroup)
    account_app = typer.Typer()
    app.add_typer(account_app, name="account")
    register(app, account_app)
    return app


def test_reset_folder_goes_through_the_service(db: Engine, cli: typer.Typer) -> None:
    tenant_id = make_tenant(db)
    account_id = make_offline_account(db, tenant_id)
    with session_scope(db) as s:
        cursor = sync_state.folder_cursor(
            session=s, account_id=account_id, role=FolderRole.INBOX, name="INBOX"
        )
        sync_state.flag_unstable(session=s, folder_id=cursor.folder_id)
    runner = CliRunner()
    done = runner.invoke(
        cli, ["account", "reset-folder", str(account_id), "inbox", "--tenant", str(tenant_id)]
    )
    assert done.exit_code == 0, done.output
    assert f"Folder inbox of account {account_id} reset." in done.output
    with Session(db) as s:
        assert s.exec(select(FolderState)).one().status is FolderSyncStatus.OK
    never = runner.invoke(cli, ["account", "reset-folder", str(account_id), "sent"])
    assert never.exit_code == 1 and "no sent folder state yet" in never.output
    other = make_tenant(db, name="Other")
    hidden = runner.invoke(cli, ["account", "reset-folder", str(account_id), "inbox", "--tenant", str(other)])
    assert hidden.exit_code == 1 and f"No account with id {account_id}" in hidden.output


def test_sync_json_and_hints(db: Engine, cli: typer.Typer, mailbox_user: MailboxUser) -> None:
    tenant_id = make_tenant(db)
    account_id = make_account(db, tenant_id, mailbox_user, trust_ca=False)
    runner = CliRunner()
    as_json = runner.invoke(cli, ["sync", "--once", "--json"])
    assert as_json.exit_code == 1
    [summary] = json.loads(as_json.stdout)
    assert (summary["account_id"], summary["status"]) == (account_id, "failed")
    assert summary["failure"]["code"] == "certificate_untrusted"
    table = runner.invoke(cli, ["sync", "--once", "--account", str(account_id)])
    assert table.exit_code == 1
    # The product's sentence, then this CLI's hint for the code.
    assert "not trusted" in table.stdout and f"crm-inbox account edit {account_id} --ca-file" in table.stdout


def test_sync_once_tries_now_even_after_a_failed_pass(
    db: Engine, cli: typer.Typer, mailbox_user: MailboxUser
) -> None:
    """Issue 12.15: a person at the terminal gets a real attempt, not "skipped: backing off";
    the backoff is the scheduler's."""
    tenant_id = make_tenant(db)
    make_account(db, tenant_id, mailbox_user, trust_ca=False)
    runner = CliRunner()
    for _ in range(2):
        [summary] = json.loads(runner.invoke(cli, ["sync", "--once", "--json"]).stdout)
        assert summary["status"] == "failed" and summary["skip_reason"] == ""
        assert summary["failure"]["code"] == "certificate_untrusted"


def test_sync_once_behind_a_held_write_lock_reports_every_account(
    sqlite_db: Engine, cli: typer.Typer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 12.11: another process holds SQLite's write lock (an import in one transaction):
    `sync --once` tries every account, reports each as a transient storage failure and exits 1;
    never a "database is locked" traceback."""
    import sqlite3
    import time

    from core.settings import reset_settings

    tenant_id = make_tenant(sqlite_db)
    accounts = [make_offline_account(sqlite_db, tenant_id, email=f"{n}@acme.test") for n in ("a", "b")]
    monkeypatch.setenv("CRM_INBOX_DATABASE_BUSY_TIMEOUT_SECONDS", "0.5")
    reset_settings()
    sqlite_db.dispose()  # new connections take the short busy timeout
    holder = sqlite3.connect(sqlite_db.url.database or "", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        done = CliRunner().invoke(cli, ["sync", "--once", "--json"])
        assert time.monotonic() - started < 20
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert done.exit_code == 1, done.output
    assert isinstance(done.exception, SystemExit), done.exception
    summaries = json.loads(done.stdout)
    assert [s["account_id"] for s in summaries] == accounts
    assert {(s["status"], s["failure"]["code"]) for s in summaries} == {("failed", "storage_unavailable")}
