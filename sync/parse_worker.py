"""What a parse worker process runs: kept apart from `sync.pipeline` so that a worker imports
only the parser (~40 MiB), not the store, SQLAlchemy and the models the pipeline needs (~60 MiB
more per worker, against a 200 MiB budget for the whole process tree)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Sequence
from datetime import datetime

from core import stages
from sync.parse import parse_message
from sync.types import ParsedMessage

ParseJob = tuple[int, bytes, datetime | None]  # uid, raw bytes, INTERNALDATE
Parsed = list[tuple[int, ParsedMessage]]


def parse_jobs(jobs: Sequence[ParseJob], fast: bool = True) -> Parsed:
    """Top-level (picklable) so a process pool can run it. `fast`: the `fast_parser` setting."""
    with stages.stage("parse.mime"):
        return [(uid, parse_message(raw, internal_date=when, fast=fast)) for uid, raw, when in jobs]


def die_with(parent_pid: int) -> None:
    """Initializer of each parse worker: exit as soon as the syncing process is gone, even after
    a kill -9. Workers are forked from the forkserver, so neither a parent-death signal nor EOF
    on their queue (they hold both ends of it) would tell them. They also let go of stdin and
    stdout at once: `crm-inbox sync --once | wc` must end when the sync does."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1):
        with contextlib.suppress(OSError):
            os.dup2(devnull, fd)
    os.close(devnull)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() == 1 or not _alive(parent_pid):
                os._exit(0)

    threading.Thread(target=watch, name="die-with-parent", daemon=True).start()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
