"""APScheduler wiring only: one interval job per active account, each calling the engine.

* `max_instances=1` and `coalesce=True`: a slow sync is never overlapped by the next tick of the
  same account; missed ticks collapse into one run.
* Across processes the account lease in the database (`crm.sync_state.claim_account`) keeps two
  workers sharing one PostgreSQL from syncing the same account at once.
* SIGTERM/SIGINT set the stop event: running passes finish their current batch, commit and
  return; then the scheduler shuts down waiting for them.
* A refresh job picks up accounts added, deactivated or re-timed while the worker runs.
"""

from __future__ import annotations

import logging
import signal
import threading
from datetime import timedelta
from types import FrameType

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from core.caller import Caller
from core.db import get_engine, session_scope
from core.types import utcnow
from crm import backfill, sync_state, tenants
from sync.account_pass import SyncEngine

log = logging.getLogger(__name__)

REFRESH_SECONDS = 30
SEND_QUEUE_SECONDS = 5  # under the undo delay's granularity: a reply goes within seconds of it
BACKFILL_SECONDS = 60
DIGEST_SECONDS = 600  # the digest hour is checked every 10 min; each user gets one a day
SNOOZE_SECONDS = 60  # a snoozed conversation's assignee hears of its return within a minute


class Worker:
    def __init__(self, engine: SyncEngine, *, max_parallel: int = 4) -> None:
        self.engine = engine
        self.stop_event = engine.stop_event
        self.scheduler = BackgroundScheduler(
            executors={"default": ThreadPoolExecutor(max_workers=max_parallel)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 300},
            timezone="UTC",
        )
        self._intervals: dict[int, int] = {}

    def refresh_jobs(self) -> None:
        with session_scope(self.engine.db) as session:
            wanted = dict(sync_state.syncable_account_ids(session=session))
        for account_id in list(self._intervals):
            if account_id not in wanted:
                self.scheduler.remove_job(self._job_id(account_id))
                del self._intervals[account_id]
                log.info("account %s deactivated or removed: job stopped", account_id)
        for account_id, interval in wanted.items():
            if self._intervals.get(account_id) == interval:
                continue
            self.scheduler.add_job(
                self._sync_one,
                IntervalTrigger(seconds=interval, timezone="UTC"),
                args=[account_id],
                id=self._job_id(account_id),
                replace_existing=True,
                # The first run soon after start, spread a little so accounts don't all connect
                # in the same second.
                next_run_time=utcnow() + timedelta(seconds=min(len(self._intervals), 30)),
            )
            self._intervals[account_id] = interval

    @staticmethod
    def _job_id(account_id: int) -> str:
        return f"sync-account-{account_id}"

    def _sync_one(self, account_id: int) -> None:
        if self.stop_event.is_set():
            return
        summary = self.engine.sync_account(account_id)
        log.info(
            "account %s: %s, %s new, %s skipped, %s errors",
            account_id,
            summary.status if not summary.skip_reason else f"skipped ({summary.skip_reason})",
            summary.new_messages,
            summary.skipped,
            len(summary.errors),
        )

    def _send_queue(self) -> None:
        from sync.send_queue import work_queue

        try:
            work_queue()
        except Exception:  # one bad pass must not stop the scheduler; the rows keep their state
            log.exception("the send queue pass failed; it runs again in %s s", SEND_QUEUE_SECONDS)

    def _notification_digests(self) -> None:
        """The daily digest of unanswered conversations, for users whose hour it is."""
        from crm.outbound.notifications import send_digests

        try:
            with session_scope() as session:
                send_digests(session=session)
        except Exception:
            log.exception("the digest pass failed; it runs again in %s s", DIGEST_SECONDS)

    def _wake_snoozes(self) -> None:
        """Snoozes whose time has come: back to open, history entry, mail to the assignee."""
        from crm.snoozes import wake_due

        try:
            wake_due()
        except Exception:  # the rows keep their state: the next scan wakes them
            log.exception("the snooze scan failed; it runs again in %s s", SNOOZE_SECONDS)

    def _resume_backfills(self) -> None:
        try:
            with session_scope() as session:
                tenant_ids = [t.id for t in tenants.list_tenants(session=session)]
            for tenant_id in tenant_ids:
                backfill.run_pending(engine=get_engine(), caller=Caller.operator(tenant_id))
        except Exception:
            log.exception("resuming link backfills failed; they are retried in %s s", BACKFILL_SECONDS)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s received: finishing the current batches, then stopping", signum)
        self.stop_event.set()

    def run(self, *, install_signals: bool = True, until: threading.Event | None = None) -> None:
        """Block until SIGTERM/SIGINT (or `until`), then stop gracefully."""
        if install_signals:
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self.refresh_jobs()
        self.scheduler.add_job(
            self.refresh_jobs, IntervalTrigger(seconds=REFRESH_SECONDS), id="refresh-accounts"
        )
        # Outgoing mail (replies, undo-able for a few seconds) and interrupted link backfills
        # are worked by the same process: one command runs the whole embedded deployment.
        self.scheduler.add_job(
            self._send_queue,
            IntervalTrigger(seconds=SEND_QUEUE_SECONDS),
            id="send-queue",
            max_instances=1,
            coalesce=True,
        )
        self.scheduler.add_job(
            self._notification_digests,
            IntervalTrigger(seconds=DIGEST_SECONDS),
            id="digests",
            max_instances=1,
            coalesce=True,
        )
        self.scheduler.add_job(
            self._wake_snoozes,
            IntervalTrigger(seconds=SNOOZE_SECONDS),
            id="snoozes",
            max_instances=1,
            coalesce=True,
        )
        self.scheduler.add_job(
            self._resume_backfills,
            IntervalTrigger(seconds=BACKFILL_SECONDS),
            id="backfills",
            max_instances=1,
            coalesce=True,
        )
        self.scheduler.start()
        try:
            while not self.stop_event.wait(0.5):
                if until is not None and until.is_set():
                    self.stop_event.set()
        finally:
            self.scheduler.shutdown(wait=True)
