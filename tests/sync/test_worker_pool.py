"""The parse workers' process pool (`sync.worker_pool`): results and errors come back, a dead
worker breaks the pool the way ProcessPoolExecutor's does (ParsePool recovers from that), and a
worker is lean: no helper processes beside it, none of the store's imports in it."""

from __future__ import annotations

import os
import time
from concurrent.futures.process import BrokenProcessPool

import pytest

from sync.parse_worker import parse_jobs
from sync.worker_pool import WorkerPool

MAIL = (
    b"From: a@globex.test\r\nTo: b@acme.test\r\nSubject: Quote %d\r\n"
    b"Message-ID: <q%d@globex.test>\r\n\r\nHi\r\n"
)
STORE_SIDE = ("sqlalchemy", "sqlmodel", "crm", "multiprocessing")


def _children() -> set[int]:
    """Pids of this process's children (from /proc)."""
    found = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == os.getpid():
                found.add(int(entry))
    return found


def test_calls_come_back_in_order_from_lean_workers() -> None:
    before = _children()
    pool = WorkerPool(2)
    try:
        jobs = [[(uid, MAIL % (uid, uid), None)] for uid in range(6)]
        futures = [pool.submit(parse_jobs, batch, True) for batch in jobs]
        results = [f.result(timeout=60) for f in futures]
        assert [[(uid, p.subject) for uid, p in r] for r in results] == [
            [(uid, f"Quote {uid}")] for uid in range(6)
        ]
        # The workers and nothing else (no forkserver, no resource tracker) ...
        assert _children() - before == set(pool._processes)
        # ... and a worker that has parsed holds the parser, not the store or multiprocessing.
        imported = pool.submit(eval, "sorted(__import__('sys').modules)").result(timeout=60)
        assert "sync.parse" in imported
        heavy = [m for m in imported if m.split(".")[0] in STORE_SIDE]
        assert heavy == []
    finally:
        pool.shutdown(wait=True)
    assert not any(process.process.poll() is None for process in pool._processes.values())


def test_an_error_in_a_call_is_raised_by_its_future_and_the_pool_carries_on() -> None:
    pool = WorkerPool(1)
    try:
        with pytest.raises(ZeroDivisionError):
            pool.submit(eval, "1 / 0").result(timeout=60)
        # Output printed in a worker goes to stderr, not into the results pipe.
        assert pool.submit(print, "from a worker").result(timeout=60) is None
        assert pool.submit(eval, "6 * 7").result(timeout=60) == 42
    finally:
        pool.shutdown(wait=True)


def test_a_dead_worker_breaks_the_pool() -> None:
    pool = WorkerPool(1)
    try:
        assert pool.submit(eval, "1").result(timeout=60) == 1
        for worker in pool._processes.values():
            worker.kill()
            worker.join()
        with pytest.raises(BrokenProcessPool):
            pool.submit(eval, "2").result(timeout=60)
        with pytest.raises(BrokenProcessPool):
            pool.submit(eval, "3")
    finally:
        pool.shutdown(wait=True)


def test_shutdown_cancels_what_was_queued() -> None:
    pool = WorkerPool(1)
    slow = pool.submit(eval, "__import__('time').sleep(1) or 'slept'")
    deadline = time.monotonic() + 60
    while not slow.running() and time.monotonic() < deadline:  # handed to the worker
        time.sleep(0.01)
    queued = [pool.submit(eval, "0") for _ in range(3)]
    pool.shutdown(wait=True, cancel_futures=True)
    assert slow.result(timeout=60) == "slept"
    assert all(f.cancelled() for f in queued)
    with pytest.raises(RuntimeError):
        pool.submit(eval, "0")
