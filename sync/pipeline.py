"""The moving parts between the IMAP connection and the store: a parse pool and a prefetcher.

* `ParsePool` parses in worker processes when `parse_workers` is set (parsing is pure and
  CPU-bound: on a multi-core machine it then runs beside the fetching and storing), else in
  the calling thread. A worker that dies (e.g. killed for memory) costs one batch parsed in
  process and a fresh pool for the next, never the sync. A worker takes a few hundred ms to
  start (an interpreter, then the parser's imports; seconds on a loaded machine): `warm` starts
  it as soon as a folder has mail to fetch, and batches handed over before it is ready are
  parsed in the calling thread instead of waiting for it.
* `prefetched` overlaps the network side of batch N+1 (a background thread, the only user of
  the IMAP connection meanwhile) with the parsing and storing of batch N; a bounded queue keeps
  at most two fetched batches waiting, so memory stays flat.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from core.settings import Settings
from crm import mailstore
from sync.parse_worker import Parsed, ParseJob, parse_jobs
from sync.types import MessageMeta, ParsedMessage
from sync.worker_pool import WorkerPool

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Fetched:
    """One batch after its network round-trips, waiting to be parsed and stored."""

    batch: list[int]
    done: set[int]  # already stored earlier, or gone from the server
    failures: dict[int, str] = field(default_factory=dict)
    early: list[mailstore.Incoming] = field(default_factory=list)  # decided from headers alone
    metas: dict[int, MessageMeta] = field(default_factory=dict)
    known: dict[str, mailstore.KnownIdentity] = field(default_factory=dict)
    heads: dict[int, ParsedMessage] = field(default_factory=dict)  # parsed from the meta headers
    reused: set[int] = field(default_factory=set)  # a Message-ID we hold, other content
    bodies: dict[int, bytes] = field(default_factory=dict)
    headers: dict[int, bytes] = field(default_factory=dict)
    parsed: Future[Parsed] = field(default_factory=Future)

    def jobs(self) -> list[ParseJob]:
        """The full downloads to parse, in UID order."""
        return [(uid, body, self.metas[uid].internal_date) for uid, body in sorted(self.bodies.items())]


class ParsePool:
    """Parsing beside fetching; shared by the scheduler's threads (one engine, one pool)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings  # read at each call: `parse_workers` may be changed later
        self._executor: WorkerPool | None = None
        self._ready: Future[Parsed] | None = None  # a first, empty job: done once a worker runs
        self._lock = threading.Lock()

    @property
    def executor(self) -> WorkerPool | None:
        """The running worker pool, if any (for tests and diagnostics)."""
        return self._executor

    def warm(self) -> None:
        """Start the workers now, so they are ready by the time the batches come."""
        if self.settings.parse_workers > 0:
            self._started()

    def ready(self) -> bool:
        """A worker has started and imported the parser (for tests and diagnostics)."""
        return self._ready is not None and self._ready.done()

    def _started(self) -> tuple[WorkerPool, Future[Parsed]]:
        with self._lock:
            if self._executor is None or self._ready is None:
                self._executor = WorkerPool(self.settings.parse_workers)
                # Unpickling the job imports the parser in the worker: done means ready.
                self._ready = self._executor.submit(parse_jobs, [], self.settings.fast_parser)
            return self._executor, self._ready

    def submit(self, jobs: list[ParseJob]) -> Future[Parsed]:
        if self.settings.parse_workers > 0 and jobs:
            try:
                executor, ready = self._started()
                if ready.done():
                    ready.result()  # a worker that died starting: BrokenProcessPool
                    return executor.submit(parse_jobs, jobs, self.settings.fast_parser)
            except BrokenProcessPool:
                self.reset()
        done: Future[Parsed] = Future()
        done.set_result(parse_jobs(jobs, self.settings.fast_parser))
        return done

    def result(self, fetched: Fetched, context: str) -> Parsed:
        """The parsed batch; parsed here if its worker died (the pool is replaced for later
        batches, so one crash never stops the syncing)."""
        try:
            return fetched.parsed.result()
        except BrokenProcessPool:
            log.warning("%s: a parse worker died; parsing this batch in process", context)
            self.reset()
            return parse_jobs(fetched.jobs(), self.settings.fast_parser)

    def reset(self) -> None:
        """Forget a broken pool; the next batch starts a fresh one."""
        with self._lock:
            executor, self._executor, self._ready = self._executor, None, None
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor, self._ready = None, None


def chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def prefetched(
    batches: list[list[int]], fetch: Callable[[list[int]], Fetched], *, stop: threading.Event, name: str
) -> Iterator[Fetched]:
    """`fetch(batch)` for each batch, one batch ahead in a background thread. An exception in
    the fetching thread is re-raised here, in the consumer."""
    if len(batches) <= 1:
        for batch in batches:
            if not stop.is_set():
                yield fetch(batch)
        return
    handoff: queue.Queue[Fetched | BaseException | None] = queue.Queue(maxsize=2)
    cancel = threading.Event()

    def produce() -> None:
        try:
            for batch in batches:
                if cancel.is_set() or stop.is_set():
                    break
                handoff.put(fetch(batch))
        except BaseException as exc:  # handed to the consumer, which re-raises it
            handoff.put(exc)
        finally:
            handoff.put(None)

    producer = threading.Thread(target=produce, name=name, daemon=True)
    producer.start()
    item: Fetched | BaseException | None = None
    try:
        while (item := handoff.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set()
        while item is not None:  # unblock the producer, then wait for it
            item = handoff.get()
        producer.join()
