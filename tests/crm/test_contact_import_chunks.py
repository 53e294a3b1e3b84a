"""Issue 12.11: a contacts import streamed in chunks, each committed on its own, so a long import
never locks syncs out; the same result as the one-transaction import."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, select

from core.caller import Caller
from core.db import make_engine, session_scope
from core.settings import reset_settings
from crm import contact_import, mailstore
from crm.contact_import import ImportProgress
from crm.models import Company, Contact, Message
from crm.models.records import BackfillJob
from devtools.samples import build_message
from sync.account_pass import SyncEngine
from tests.dovecot_fixtures import MailboxUser
from tests.factories import make_account, make_tenant


def _csv(rows: int, *, bad_every: int = 0) -> bytes:
    lines = ["Email,First name,Last name,Company,Website"]
    for i in range(rows):
        if bad_every and i % bad_every == bad_every - 1:
            lines.append(f"broken-{i},No,Address,,")
        else:
            lines.append(f"p{i}@client{i % 7}.example,Pat{i},Doe,Client {i % 7},client{i % 7}.example")
    return ("\n".join(lines) + "\n").encode()


def _count(db: Engine, model: type) -> int:
    with Session(db) as session:
        return session.exec(select(func.count()).select_from(model)).one()


def test_chunks_are_committed_one_by_one_with_the_one_transaction_result(db: Engine) -> None:
    tenant = make_tenant(db)
    caller = Caller.operator(tenant)
    data = _csv(27, bad_every=9)  # 24 good rows, 3 bad ones
    seen: list[tuple[ImportProgress, int]] = []

    def progress(step: ImportProgress) -> None:
        seen.append((step, _count(db, Contact)))  # another connection: committed rows only

    report = contact_import.import_contacts_in_chunks(
        sessions=lambda: session_scope(db), caller=caller, data=data, chunk_rows=10, progress=progress
    )
    assert (report.created, report.updated, report.unchanged, report.companies_created) == (24, 0, 0, 7)
    assert [e.line for e in report.errors] == [10, 19, 28]
    assert [(s.rows, committed) for s, committed in seen] == [(10, 10), (20, 20), (24, 24)]
    assert [s.bad_rows for s, _ in seen] == [1, 2, 3]
    assert seen[-1][0].position == seen[-1][0].size
    assert len(report.backfill_job_ids) == 3 == _count(db, BackfillJob)
    assert _count(db, Company) == 7  # a company met again in a later chunk is not created twice

    with session_scope(db) as session:  # the one-transaction path agrees: nothing left to do
        again = contact_import.import_contacts(session=session, caller=caller, data=data)
    assert (again.created, again.updated, again.unchanged, again.companies_created) == (0, 0, 24, 0)
    assert again.errors == report.errors


def test_a_bad_file_writes_nothing(db: Engine) -> None:
    from crm.rules.csv_import import CsvImportError

    caller = Caller.operator(make_tenant(db))
    with pytest.raises(CsvImportError):
        contact_import.import_contacts_in_chunks(
            sessions=lambda: session_scope(db), caller=caller, data=b"Name;Phone\nA;1\n"
        )
    assert _count(db, Contact) == 0


def test_a_sync_runs_while_a_long_import_is_writing(
    sqlite_db: Engine, mailbox_user: MailboxUser, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The failure of 12.11: a 40,000-row import held SQLite's write lock and a concurrent sync
    died with "database is locked". Here the sync waits for one chunk at most: with a busy
    timeout of 2 s (an import in one transaction would hold the lock for its whole length) it
    stores its mail while the import keeps committing chunks around it."""
    tenant = make_tenant(sqlite_db)
    account = make_account(sqlite_db, tenant, mailbox_user, email="sales@acme.test")
    mailbox_user.dovecot.append_many(
        mailbox_user.name,
        "INBOX",
        [
            build_message(
                subject=f"Order {i}",
                from_=f"p{i}@client{i}.example",
                to="sales@acme.test",
                message_id=f"<order{i}@client.example>",
                date=datetime(2026, 3, 1, 9, i, tzinfo=UTC),
            )
            for i in range(3)
        ],
    )
    monkeypatch.setenv("CRM_INBOX_DATABASE_BUSY_TIMEOUT_SECONDS", "2")
    reset_settings()
    engine = make_engine(sqlite_db.url.render_as_string(hide_password=False))
    chunks = 0
    first_chunk, sync_done = threading.Event(), threading.Event()
    sync_started, chunk_during_sync = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def progress(_step: ImportProgress) -> None:
        nonlocal chunks
        chunks += 1
        first_chunk.set()
        if sync_started.is_set():
            chunk_during_sync.set()
        if not sync_done.is_set():
            time.sleep(0.05)  # a long import: chunks keep coming until the sync is over

    def run_import() -> None:
        try:
            outcome["report"] = contact_import.import_contacts_in_chunks(
                sessions=lambda: session_scope(engine),
                caller=Caller.operator(tenant),
                data=_csv(2000),
                chunk_rows=25,
                progress=progress,
            )
        except BaseException as exc:  # reported by the assertion below
            outcome["error"] = exc

    # The sync's write waits (30 s at most) until a chunk committed after the sync began, so the
    # interleaving is certain however fast the sync runs next to a loaded test worker (three
    # messages can be stored before the next chunk, which made `during` 0 now and then). An
    # import in one transaction commits no chunk: the wait runs out and the write then meets
    # the held lock, so the test still fails for the bug it guards.
    real_apply = mailstore.apply_batch

    def apply_after_a_chunk(**kwargs: Any) -> mailstore.BatchResult:
        chunk_during_sync.wait(30)
        return real_apply(**kwargs)

    monkeypatch.setattr(mailstore, "apply_batch", apply_after_a_chunk)
    importer = threading.Thread(target=run_import)
    importer.start()
    try:
        assert first_chunk.wait(60)
        before = chunks
        sync_started.set()
        with SyncEngine(db=engine) as sync:
            summary = sync.sync_account(account)
        during = chunks - before
    finally:
        sync_done.set()
        importer.join(120)
        engine.dispose()
    assert summary.status == "ok", summary.errors
    assert summary.new_messages == 3
    assert during >= 1, "the import did not commit while the sync ran"
    assert "error" not in outcome, outcome.get("error")
    report = outcome["report"]
    assert isinstance(report, contact_import.ImportReport) and report.created == 2000
    assert _count(sqlite_db, Message) == 3 and _count(sqlite_db, Contact) == 2000
