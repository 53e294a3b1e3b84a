"""Bulk imports are linked in short chunks: a sync batch never waits long for the tenant's lock,
and an interrupted backfill resumes where it stopped."""

from __future__ import annotations

import hashlib
import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from core.caller import Caller
from core.db import session_scope
from core.types import FolderRole
from crm import backfill, contact_import, mailstore, sync_state
from crm.mailstore import Location, MessageData, NewMail
from crm.models import MessageLink
from crm.models.records import BackfillJob
from tests.factories import make_offline_account, make_tenant

T0 = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
CONTACTS = 10_000
WITH_MAIL = range(0, CONTACTS, 5)  # every fifth contact already has a synced message


def _address(n: int) -> str:
    return f"person{n}@client{n % 97}.test"


def _mail(uid: int, sender: str) -> NewMail:
    message_id = f"<u{uid}@test>"
    return NewMail(
        Location(uid=uid),
        MessageData(
            message_id=message_id,
            content_hash=hashlib.sha256(message_id.encode()).hexdigest(),
            subject=f"Hello {uid}",
            normalized_subject=f"hello {uid}",
            date=T0 + timedelta(minutes=uid),
            from_email=sender,
            to=(("sales@acme.test", ""),),
            text_body="Hi",
        ),
    )


def _store(db: Engine, tenant_id: int, account_id: int, mail: list[NewMail]) -> float:
    """Commit one sync batch through the mail store; returns the seconds it took."""
    started = time.monotonic()
    with session_scope(db) as s:
        cursor = sync_state.folder_cursor(
            session=s, account_id=account_id, role=FolderRole.INBOX, name="INBOX"
        )
        mailstore.apply_batch(
            session=s,
            tenant_id=tenant_id,
            account_id=account_id,
            folder_id=cursor.folder_id,
            folder_role=FolderRole.INBOX,
            uidvalidity=1,
            items=mail,
            identities=mailstore.tenant_identities(session=s, tenant_id=tenant_id),
            cursor=None,
        )
    return time.monotonic() - started


def _csv() -> bytes:
    lines = ["Email,First name,Last name"] + [f"{_address(n)},P{n},Person" for n in range(CONTACTS)]
    return ("\n".join(lines) + "\n").encode()


def _contact_links(db: Engine) -> int:
    with session_scope(db) as s:
        return s.exec(
            select(func.count(col(MessageLink.id))).where(MessageLink.record_kind == "contact")
        ).one()


@pytest.mark.parametrize("db", ["postgres"], indirect=True)
def test_a_sync_batch_never_waits_for_an_import_of_10000_contacts(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The time each sync batch spends waiting for the tenant's lock (the real lock, timed): what a
    # backfill holding it would cost a batch, apart from the batch's own work, which a loaded
    # machine stretches (3-7 s seen at a load of 8 on 2 cores, with or without the tally triggers).
    lock_waits: list[float] = []
    take_lock = mailstore.lock_tenant

    def timed_lock(*, session: Session, tenant_id: int) -> None:
        started = time.monotonic()
        take_lock(session=session, tenant_id=tenant_id)
        if threading.current_thread() is threading.main_thread():
            lock_waits.append(time.monotonic() - started)

    monkeypatch.setattr(mailstore, "lock_tenant", timed_lock)
    tenant_id = make_tenant(db, own_domains=("acme.test",))
    account_id = make_offline_account(db, tenant_id, email="sales@acme.test")
    existing = [_mail(uid, _address(n)) for uid, n in enumerate(WITH_MAIL, start=1)]
    for start in range(0, len(existing), 500):
        _store(db, tenant_id, account_id, existing[start : start + 500])
    operator = Caller.operator(tenant_id)
    phases: dict[str, float] = {}
    outcome: dict[str, object] = {}

    def importer() -> None:
        phases["import_started"] = time.monotonic()
        with session_scope(db) as s:
            report = contact_import.import_contacts(
                session=s, caller=operator, data=_csv(), allow_test_domains=True
            )
        phases["committed"] = time.monotonic()
        outcome["report"] = report
        outcome["backfill"] = backfill.run_job(engine=db, caller=operator, job_id=report.backfill_job_id or 0)
        phases["done"] = time.monotonic()

    thread = threading.Thread(target=importer)
    thread.start()
    waits: list[tuple[float, float]] = []  # (started, seconds) of each batch
    uid = 100_000
    while thread.is_alive():
        batch = [_mail(uid + i, _address((uid + i) % CONTACTS)) for i in range(20)]
        uid += 20
        started = time.monotonic()
        waits.append((started, _store(db, tenant_id, account_id, batch)))
        time.sleep(0.05)
    thread.join()

    report, result = outcome["report"], outcome["backfill"]
    assert isinstance(result, backfill.BackfillResult) and result.finished
    assert getattr(report, "created", None) == CONTACTS
    during_backfill = [w for started, w in waits if phases["committed"] <= started <= phases["done"]]
    assert len(during_backfill) >= 3, (phases, waits)  # the batches really met the backfill
    # The import and backfill take many seconds; no batch waits for them: a lock held across the
    # import would make a batch wait for all of it. A batch waits for the lock behind one backfill
    # chunk at most (0.2-0.5 s measured under load; the slow batches of issue 8's note, up to 3.2 s,
    # were the batches' own work on a loaded machine, not waits: pg_stat_activity showed no wait
    # but this lock, and the same run without the tally triggers was as slow).
    whole = phases["done"] - phases["import_started"]
    assert max(lock_waits) < min(2.5, whole / 4), (whole, lock_waits)
    assert max(w for _, w in waits) < whole / 2, (whole, waits)
    assert result.longest_chunk_seconds < 2.5
    # Nothing was missed: every stored message is on its sender's contact.
    assert _contact_links(db) == len(existing) + len(waits) * 20


def test_an_interrupted_backfill_resumes_where_it_stopped(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id = make_tenant(db, own_domains=("acme.test",))
    account_id = make_offline_account(db, tenant_id, email="sales@acme.test")
    _store(db, tenant_id, account_id, [_mail(n + 1, _address(n)) for n in range(30)])
    operator = Caller.operator(tenant_id)
    monkeypatch.setattr(backfill, "KEYS_PER_CHUNK", 4)
    monkeypatch.setattr(backfill, "MESSAGES_PER_CHUNK", 3)
    data = ("Email\n" + "\n".join(_address(n) for n in range(30)) + "\n").encode()
    with session_scope(db) as s:
        job_id = contact_import.import_contacts(
            session=s, caller=operator, data=data, allow_test_domains=True
        ).backfill_job_id
    assert _contact_links(db) == 0  # the rows are in; their mail is not linked yet

    # A crash after a few chunks: each chunk committed its links and its progress together.
    calls = {"n": 0}
    real_chunk = backfill._chunk

    def crash_after_three(session: Session, job_id: int) -> bool:
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("process killed")
        return real_chunk(session, job_id)

    monkeypatch.setattr(backfill, "_chunk", crash_after_three)
    with pytest.raises(RuntimeError):
        backfill.run_job(engine=db, caller=operator, job_id=job_id or 0)
    partial = _contact_links(db)
    assert 0 < partial < 30
    monkeypatch.setattr(backfill, "_chunk", real_chunk)

    results = backfill.run_pending(engine=db, caller=operator)
    assert [r.job_id for r in results] == [job_id] and results[0].finished
    assert _contact_links(db) == 30
    assert backfill.run_pending(engine=db, caller=operator) == ()
    with session_scope(db) as s:
        job = s.get_one(BackfillJob, job_id)
        assert job.messages_linked == 30 and job.finished_at is not None
    # A job of another tenant is not reachable, and a member may not run the queue.
    other = Caller.operator(make_tenant(db, name="Other"))
    with pytest.raises(Exception) as missing:
        backfill.run_job(engine=db, caller=other, job_id=job_id or 0)
    assert getattr(missing.value, "code", None) == "backfill_job_not_found"
