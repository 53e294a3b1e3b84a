"""The parse pool (`sync.pipeline.ParsePool`): a worker that is still starting holds nothing
up, and results are the same wherever a batch was parsed."""

from __future__ import annotations

import time

from core.settings import Settings
from devtools.samples import build_message


def test_batches_before_the_worker_is_ready_are_parsed_in_process(settings: Settings) -> None:
    """A worker takes a while to start: batches handed over meanwhile are parsed at once in
    the calling thread, later ones in the worker; the results are the same either way."""
    from core import stages
    from sync.parse import parse_message
    from sync.parse_worker import ParseJob
    from sync.pipeline import ParsePool

    settings.parse_workers = 1
    raws = {
        uid: build_message(subject=f"Quote {uid}", from_=f"b{uid}@globex.test", to="s@acme.test")
        for uid in range(1, 6)
    }
    jobs: list[ParseJob] = [(uid, raw, None) for uid, raw in raws.items()]
    expected = [(uid, parse_message(raw)) for uid, raw, _ in jobs]
    pool = ParsePool(settings)
    try:
        stages.reset()
        early = pool.submit(jobs)
        assert early.done() and early.result() == expected
        assert stages.snapshot().get("parse.mime", 0) > 0  # parsed here
        assert pool.executor is not None  # ...while the worker starts
        deadline = time.monotonic() + 60
        while not pool.ready() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pool.ready()
        stages.reset()
        assert pool.submit(jobs).result(timeout=60) == expected
        assert stages.snapshot().get("parse.mime", 0) == 0  # parsed in the worker
    finally:
        pool.close()
