"""Issue 12.8: a syncing process killed with -9 leaves no parse workers behind, and nothing
keeps its stdout open (`crm-inbox sync --once | wc` ends)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

CHILD = textwrap.dedent(
    """
    import os, sys, time
    from core.settings import Settings
    from sync.pipeline import ParsePool
    pool = ParsePool(Settings(parse_workers=2))
    jobs = [(1, b"Subject: hi\\r\\n\\r\\nbody\\r\\n", None)]
    pool.submit(jobs).result()
    pool.submit(jobs).result()
    executor = pool.executor
    assert executor is not None
    print(" ".join(str(pid) for pid in executor._processes), flush=True)
    time.sleep(300)
    """
)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie waiting for its reaper is gone for our purpose
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def test_parse_workers_die_with_a_killed_sync() -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, cwd=os.getcwd()
    )
    assert child.stdout is not None
    workers = [int(pid) for pid in child.stdout.readline().split()]
    assert workers and all(_alive(pid) for pid in workers)
    child.send_signal(signal.SIGKILL)
    child.wait(10)
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not any(_alive(pid) for pid in workers), "parse workers outlived the sync"
    # Nobody holds the pipe any more: reading it ends.
    started = time.monotonic()
    assert child.stdout.read() == b""
    assert time.monotonic() - started < 10
    child.stdout.close()
