"""The "snoozed conversation woke up" notification (issue 10, item 8): the scheduler's scan wakes
snoozes whose time has come (open again, a history entry the event stream publishes) and mails the
assignee once, honouring the user's preference and the tenant's off switch; two scanners racing
and a scan failing half-way still wake and mail each conversation exactly once."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from core.db import session_scope
from core.types import ActivityKind, ConversationStatus, utcnow
from crm import conversations, events, snoozes
from crm.models import Activity, OutboundMail, Thread
from crm.outbound import notifications, system_mail
from crm.outbound.views import MailKind
from tests.crm.world import World, build_world

WOKE_SUBJECT = "Back in your inbox"


def _woke_mail(db: Engine) -> list[OutboundMail]:
    with Session(db) as s:
        rows = s.exec(select(OutboundMail).where(OutboundMail.kind == MailKind.NOTIFICATION)).all()
        return [r for r in rows if WOKE_SUBJECT in r.subject]


def _wake_entries(db: Engine) -> dict[int, int]:
    """thread id -> how many "snooze ended" history entries it has."""
    with Session(db) as s:
        rows = s.exec(select(Activity).where(Activity.kind == ActivityKind.STATUS)).all()
    counts: dict[int, int] = {}
    for row in rows:
        if row.data.get("reason") == "snooze_ended" and row.thread_id is not None:
            counts[row.thread_id] = counts.get(row.thread_id, 0) + 1
    return counts


def _status(db: Engine, thread_id: int) -> ConversationStatus:
    with Session(db) as s:
        return s.get_one(Thread, thread_id).status


def _snooze(db: Engine, w: World, who: str, thread: str, assignee: str | None, hours: float) -> int:
    thread_id = w.threads[thread]
    with session_scope(db) as s:
        row = s.get_one(Thread, thread_id)
        row.assignee_user_id = w.users[assignee] if assignee else None
        s.add(row)
        conversations.set_status(
            session=s,
            caller=w.caller(who),
            thread_id=thread_id,
            status=ConversationStatus.SNOOZED,
            snoozed_until=utcnow() + timedelta(hours=hours),
        )
    return thread_id


def test_wake_mails_the_assignee_once_and_publishes_the_event(db: Engine) -> None:
    w = build_world(db)
    alpha = _snooze(db, w, "admin", "Alpha", "alice", 1)
    shared = _snooze(db, w, "admin", "Shared", "bob", 1)
    beta = _snooze(db, w, "admin", "Beta", None, 1)
    later = w.threads["Xeno"]
    with session_scope(db) as s:
        later_row = s.get_one(Thread, later)
        later_row.status, later_row.snoozed_until = ConversationStatus.SNOOZED, utcnow() + timedelta(hours=5)
        later_row.assignee_user_id = w.users["other_admin"]
        s.add(later_row)
        notifications.set_pref(session=s, caller=w.caller("bob"), event="snooze_woke", enabled=False)
        cursor = events.start(session=s)

    in_two_hours = utcnow() + timedelta(hours=2)
    assert snoozes.wake_due(engine=db, now=utcnow()) == 0  # nobody's time yet
    assert snoozes.wake_due(engine=db, now=in_two_hours) == 3
    assert snoozes.wake_due(engine=db, now=in_two_hours) == 0  # already awake: nothing twice

    for thread_id in (alpha, shared, beta):
        assert _status(db, thread_id) is ConversationStatus.OPEN
    assert _status(db, later) is ConversationStatus.SNOOZED
    assert _wake_entries(db) == {alpha: 1, shared: 1, beta: 1}
    # Alice is told; Bob turned this mail off; Beta has nobody to tell.
    (mail,) = _woke_mail(db)
    assert mail.recipients == ["alice@acme.test"] and mail.subject.startswith("[Acme] Back in your inbox")
    assert f"thread-{alpha}".encode() in mail.raw

    with Session(db) as s:
        batch = events.poll(session=s, caller=w.caller("alice"), cursor=cursor)
    woke = [
        e for e in batch.events if e.type == "conversation.status" and e.data.get("reason") == "snooze_ended"
    ]
    assert {e.thread_id for e in woke} == {alpha, shared}  # Beta is in account B, which alice can't see
    assert all(e.data["status"] == "open" and e.data["actor"] is None for e in woke)


def test_tenant_switch_still_wakes_but_mails_nobody(db: Engine) -> None:
    w = build_world(db)
    alpha = _snooze(db, w, "admin", "Alpha", "alice", 1)
    with session_scope(db) as s:
        system_mail.set_sending(session=s, caller=w.caller("admin"), notifications_enabled=False)
    assert snoozes.wake_due(engine=db, now=utcnow() + timedelta(hours=2)) == 1
    assert _status(db, alpha) is ConversationStatus.OPEN
    assert _wake_entries(db) == {alpha: 1}
    assert _woke_mail(db) == []


def test_a_user_reopening_first_leaves_nothing_to_wake(db: Engine) -> None:
    w = build_world(db)
    alpha = _snooze(db, w, "admin", "Alpha", "alice", 1)
    with session_scope(db) as s:
        due = snoozes.due_ids(session=s, now=utcnow() + timedelta(hours=2))
    assert due == [alpha]
    with session_scope(db) as s:  # between the scan's read and its wake, alice reopens it
        conversations.set_status(
            session=s, caller=w.caller("alice"), thread_id=alpha, status=ConversationStatus.OPEN
        )
    with session_scope(db) as s:
        assert snoozes.wake_one(session=s, thread_id=alpha, now=utcnow() + timedelta(hours=2)) is False
    assert _wake_entries(db) == {} and _woke_mail(db) == []


def _many_snoozed(db: Engine, w: World, count: int) -> list[int]:
    ended = utcnow() - timedelta(minutes=5)
    with session_scope(db) as s:
        rows = [
            Thread(
                tenant_id=w.tenant,
                subject=f"Waiting {i}",
                status=ConversationStatus.SNOOZED,
                snoozed_until=ended,
                assignee_user_id=w.users["alice"],
            )
            for i in range(count)
        ]
        s.add_all(rows)
        s.flush()
        return [r.id or 0 for r in rows]


def test_two_scanners_racing_wake_and_mail_each_once(db: Engine) -> None:
    w = build_world(db)
    ids = _many_snoozed(db, w, 30)
    # Both scanners read the same candidates before either wakes one: the worst interleaving.
    with session_scope(db) as s:
        seen = snoozes.due_ids(session=s)
    assert sorted(seen) == sorted(ids)
    start = threading.Barrier(2)
    woken: list[int] = []
    errors: list[BaseException] = []

    def scanner(order: list[int]) -> None:
        try:
            start.wait(timeout=10)
            for thread_id in order:
                with session_scope(db) as s:
                    if snoozes.wake_one(session=s, thread_id=thread_id):
                        woken.append(thread_id)
        except BaseException as exc:  # reported below, not lost in the thread
            errors.append(exc)

    runners = [
        threading.Thread(target=scanner, args=(seen,)),
        threading.Thread(target=scanner, args=(list(reversed(seen)),)),
    ]
    for r in runners:
        r.start()
    for r in runners:
        r.join(timeout=60)
    assert not errors, errors
    assert sorted(woken) == sorted(ids)  # each woken by exactly one of the two
    assert _wake_entries(db) == dict.fromkeys(ids, 1)
    mail = _woke_mail(db)
    assert len(mail) == len(ids)
    assert sorted(m.subject for m in mail) == sorted(
        f"[Acme] Back in your inbox: Waiting {i}" for i in range(30)
    )


def test_a_scan_failing_half_way_loses_and_repeats_nothing(
    db: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    w = build_world(db)
    ids = _many_snoozed(db, w, 6)
    real_notify = notifications.notify
    calls = {"n": 0}

    def failing_notify(**kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 4:  # the scan dies after the 4th wake's update, before its commit
            raise RuntimeError("process died here")
        return real_notify(**kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(notifications, "notify", failing_notify)
    with pytest.raises(RuntimeError):
        snoozes.wake_due(engine=db)
    with Session(db) as s:
        still = s.exec(
            select(Thread.id).where(col(Thread.id).in_(ids), Thread.status == ConversationStatus.SNOOZED)
        ).all()
    assert len(still) == 3  # three committed; the fourth rolled back whole (no entry, no mail)
    assert len(_wake_entries(db)) == 3 and len(_woke_mail(db)) == 3

    monkeypatch.setattr(notifications, "notify", real_notify)
    assert snoozes.wake_due(engine=db) == 3  # the next scan finishes the job
    assert _wake_entries(db) == dict.fromkeys(ids, 1)
    assert len(_woke_mail(db)) == len(ids)


def test_the_scheduler_runs_the_scan(db: Engine) -> None:
    """The worker registers the scan as a periodic job, and the job wakes due snoozes in the
    deployment's database."""
    import time

    from sync.account_pass import SyncEngine
    from sync.scheduler import SNOOZE_SECONDS, Worker

    w = build_world(db)
    (woken,) = _many_snoozed(db, w, 1)
    worker = Worker(SyncEngine(db=db))
    until = threading.Event()
    runner = threading.Thread(target=worker.run, kwargs={"install_signals": False, "until": until})
    runner.start()
    try:
        deadline = time.monotonic() + 20
        while worker.scheduler.get_job("snoozes") is None and time.monotonic() < deadline:
            time.sleep(0.05)
        job = worker.scheduler.get_job("snoozes")
        assert job is not None and job.trigger.interval == timedelta(seconds=SNOOZE_SECONDS)
    finally:
        until.set()
        runner.join(timeout=30)
    assert not runner.is_alive()
    worker._wake_snoozes()  # what the job runs
    assert _status(db, woken) is ConversationStatus.OPEN
    assert _wake_entries(db) == {woken: 1} and len(_woke_mail(db)) == 1


def test_kill_9_mid_scan_then_the_next_scan_finishes_exactly_once(db: Engine) -> None:
    """A real scanner process killed with SIGKILL part-way: what it committed is whole (woken,
    history entry and mail together), the rest untouched; the next scan wakes the rest once."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from sqlalchemy import func, text

    w = build_world(db)
    total = 250  # enough for the kill to land mid-scan, few enough to keep the test short
    ended = utcnow() - timedelta(minutes=5)
    with session_scope(db) as s:  # many due snoozes, inserted in bulk
        s.execute(
            Thread.__table__.insert(),  # type: ignore[attr-defined]
            [
                {
                    "tenant_id": w.tenant,
                    "subject": f"Waiting {i}",
                    "normalized_subject": f"waiting {i}",
                    "status": ConversationStatus.SNOOZED,
                    "snoozed_until": ended,
                    "assignee_user_id": w.users["alice"],
                    "message_count": 0,
                    "last_direction": "inbound",
                    "account_key": "",
                }
                for i in range(total)
            ],
        )
        ids = list(s.exec(select(Thread.id).where(Thread.status == ConversationStatus.SNOOZED)).all())
    assert len(ids) == total
    env = dict(os.environ, CRM_INBOX_DATABASE_URL=db.url.render_as_string(hide_password=False))
    proc = subprocess.Popen(
        [sys.executable, "-c", "from crm.snoozes import wake_due; wake_due()"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    woken_so_far = 0
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        with db.connect() as conn:
            woken_so_far = conn.execute(
                text("SELECT count(*) FROM thread WHERE status = 'open' AND subject LIKE 'Waiting %'")
            ).scalar_one()
        if woken_so_far >= 20:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    _, stderr = proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL, f"the scan ended before it could be killed: {stderr!r}"

    with Session(db) as s:
        awake = s.exec(
            select(func.count()).select_from(Thread).where(col(Thread.id).in_(ids), Thread.status == "open")
        ).one()
    assert 0 < awake < total
    # Whole or nothing per conversation: as many entries and mails as conversations awake.
    assert len(_wake_entries(db)) == awake and len(_woke_mail(db)) == awake
    assert snoozes.wake_due(engine=db) == total - awake
    assert _wake_entries(db) == dict.fromkeys(ids, 1)
    assert len(_woke_mail(db)) == total
