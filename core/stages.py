"""CPU seconds spent per stage of the sync, for the benchmark's breakdown (bench/sync_bench.py).

Thread CPU time (`time.thread_time`), so the fetching thread and the storing thread are told
apart and a wait on the network or a lock costs nothing. Taken a few times per batch, never per
message (the one exception, building rows, costs a microsecond each): always on, at no
measurable cost. Stages nest by name ("store", "store.threading").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_totals: dict[str, float] = {}


@contextmanager
def stage(name: str) -> Iterator[None]:
    started = time.thread_time()
    try:
        yield
    finally:
        spent = time.thread_time() - started
        with _lock:
            _totals[name] = _totals.get(name, 0.0) + spent


def snapshot() -> dict[str, float]:
    with _lock:
        return dict(_totals)


def reset() -> None:
    with _lock:
        _totals.clear()
