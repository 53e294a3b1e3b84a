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

from core.db import session_scope
from core.types import utcnow
from crm import sync_state
from sync.account_pass import SyncEngine

log = logging.getLogger(__name__)

REFRESH_SECONDS = 30


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
        self.scheduler.start()
        try:
            while not self.stop_event.wait(0.5):
                if until is not None and until.is_set():
                    self.stop_event.set()
        finally:
            self.scheduler.shutdown(wait=True)
