"""Whole-process behaviour: kill -9 mid-sync then resume; the scheduler loop and SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import Engine, func, text
from sqlmodel import Session, col, select

from core.types import RunStatus
from crm.models import ImapUid, Message, SyncRun
from devtools.samples import generate_mailbox
from sync.account_pass import SyncEngine
from sync.scheduler import Worker
from tests.dovecot_fixtures import MailboxUser
from tests.factories import make_account, make_tenant

CLI = [sys.executable, "-m", "crm_inbox"]


def _count(db: Engine, model: type) -> int:
    with Session(db) as session:
        return session.exec(select(func.count()).select_from(model)).one()


def _env(db: Engine, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env["CRM_INBOX_DATABASE_URL"] = db.url.render_as_string(hide_password=False)
    env.update(extra)
    return env


def test_kill_9_mid_sync_then_resume(db: Engine, mailbox_user: MailboxUser) -> None:
    # Killed after 20 messages (batches of 5): 400 leaves the killed sync 76 batches from its end,
    # and the resume is most of the test's time (1200 gave it three times the work to prove the same).
    total = 400
    samples = list(generate_mailbox(total, seed=3))
    mailbox_user.dovecot.load_maildir(mailbox_user.name, "INBOX", [m.raw for m in samples])
    account_id = make_account(db, make_tenant(db), mailbox_user)
    proc = subprocess.Popen(
        [*CLI, "sync", "--once", "--json"],
        env=_env(db, CRM_INBOX_SYNC_BATCH_SIZE="5"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    seen = 0
    while time.monotonic() < deadline and proc.poll() is None:
        with db.connect() as conn:
            seen = conn.execute(text("SELECT count(*) FROM message")).scalar_one()
        if seen >= 20:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL, "the sync ended before it could be killed"
    assert 0 < seen < total

    summary = SyncEngine(db=db).sync_account(account_id)
    assert summary.status == "ok", (summary.skip_reason, summary.errors)
    assert _count(db, ImapUid) == total
    distinct = len({m.message_id for m in samples})
    assert _count(db, Message) == distinct
    with Session(db) as session:
        statuses = [r.status for r in session.exec(select(SyncRun).order_by(col(SyncRun.id))).all()]
    assert statuses == [RunStatus.INTERRUPTED, RunStatus.OK]
    assert SyncEngine(db=db).sync_account(account_id).new_locations == 0


def test_scheduler_syncs_active_accounts_and_stops(db: Engine, mailbox_user: MailboxUser) -> None:
    account_id = make_account(db, make_tenant(db), mailbox_user, sync_interval_seconds=1)
    mailbox_user.dovecot.append_many(
        mailbox_user.name, "INBOX", [m.raw for m in generate_mailbox(10, seed=5)]
    )
    worker = Worker(SyncEngine(db=db))
    runner = threading.Thread(target=worker.run, kwargs={"install_signals": False})
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _count(db, ImapUid) < 10:
            time.sleep(0.1)
        assert _count(db, ImapUid) == 10
        assert worker.scheduler.get_job(f"sync-account-{account_id}") is not None
    finally:
        worker.stop_event.set()
        runner.join(timeout=20)
    assert not runner.is_alive()


def test_run_command_stops_gracefully_on_sigterm(
    sqlite_db: Engine, mailbox_user: MailboxUser, tmp_path: Path
) -> None:
    db = sqlite_db
    make_account(db, make_tenant(db), mailbox_user)
    mailbox_user.dovecot.append_many(mailbox_user.name, "INBOX", [m.raw for m in generate_mailbox(5, seed=9)])
    proc = subprocess.Popen([*CLI, "run"], env=_env(db), stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and _count(db, ImapUid) < 5:
            time.sleep(0.1)
        assert _count(db, ImapUid) == 5
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, stderr
    assert "finishing the current batches" in stderr
