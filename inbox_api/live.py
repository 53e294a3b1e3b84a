"""Waking event streams when something they may show is committed (PostgreSQL LISTEN/NOTIFY).

Writers do not call us: triggers (migration 0026) send `NOTIFY crm_inbox_events, '<tenant>'`
from the transaction that stores mail, activity or presence, so PostgreSQL delivers it when that
transaction commits, whichever process wrote it (the sync runs apart from the server). One
listening connection per process and database, opened while streams are open, fans each
notification out to the streams of that tenant; each stream then reads what happened from the
tables past its cursor, through the visibility rule (`crm.events.poll`). A notification carries
no data, so nothing is published that a listener could see without permission, and one that is
lost costs latency, never an event.

Fallbacks: on SQLite (no LISTEN) and while the listening connection is down, streams poll every
second; when it comes back every stream is woken once to catch up.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field

import psycopg
from sqlalchemy import Engine

from crm.events import EVENTS_CHANNEL

__all__ = ["APPLICATION_NAME", "Listener", "listener_for"]

log = logging.getLogger(__name__)

APPLICATION_NAME = "crm-inbox events"  # how the listening connection shows in pg_stat_activity
RECONNECT_SECONDS = 1.0
IDLE_SECONDS = 1.0  # how often the listener checks whether it is still wanted


@dataclass(eq=False)
class _Subscriber:
    tenant_id: int
    loop: asyncio.AbstractEventLoop
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def set(self) -> None:
        with suppress(RuntimeError):  # the stream's loop closed meanwhile
            self.loop.call_soon_threadsafe(self.wake.set)


class Listener:
    """The LISTEN connection of one database, shared by the streams of this process. Runs in a
    daemon thread while at least one stream subscribes; reconnects when the connection drops."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._lock = threading.Lock()
        self._subscribers: set[_Subscriber] = set()
        self._thread: threading.Thread | None = None
        self.listening = False  # connected and listening: streams may stop polling every second

    @contextmanager
    def subscribe(self, tenant_id: int) -> Iterator[asyncio.Event]:
        """An event set when the tenant's events may have changed (call from the stream's loop)."""
        subscriber = _Subscriber(tenant_id, asyncio.get_running_loop())
        with self._lock:
            self._subscribers.add(subscriber)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name=APPLICATION_NAME, daemon=True)
                self._thread.start()
        try:
            yield subscriber.wake
        finally:
            with self._lock:
                self._subscribers.discard(subscriber)

    def _wanted(self) -> bool:
        """Whether this thread should keep listening: there are streams, and it is the listener's
        thread (one that found no streams left has handed over to the next subscriber's)."""
        with self._lock:
            if self._thread is not threading.current_thread():
                return False
            if self._subscribers:
                return True
            self._thread = None  # the next subscriber starts a new thread
            return False

    def _wake(self, tenant_id: int | None) -> None:
        with self._lock:
            chosen = [s for s in self._subscribers if tenant_id is None or s.tenant_id == tenant_id]
        for subscriber in chosen:
            subscriber.set()

    def _run(self) -> None:
        while self._wanted():
            try:
                with psycopg.connect(
                    self._conninfo, autocommit=True, application_name=APPLICATION_NAME
                ) as conn:
                    conn.execute(f"LISTEN {EVENTS_CHANNEL}")
                    self.listening = True
                    self._wake(None)  # anything committed while we were not listening
                    while self._wanted():
                        for note in conn.notifies(timeout=IDLE_SECONDS):
                            self._wake(int(note.payload) if note.payload.isdigit() else None)
            except psycopg.Error as exc:
                if self.listening:
                    log.warning("event listener connection lost, polling until it is back: %s", exc)
                self.listening = False
                self._wake(None)  # the streams go back to polling now
                threading.Event().wait(RECONNECT_SECONDS)
            finally:
                self.listening = False


_listeners: dict[str, Listener] = {}
_listeners_lock = threading.Lock()


def listener_for(engine: Engine) -> Listener | None:
    """The process's listener for this database; None on SQLite (streams poll)."""
    if engine.dialect.name != "postgresql":
        return None
    conninfo = engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    with _listeners_lock:
        found = _listeners.get(conninfo)
        if found is None:
            found = _listeners[conninfo] = Listener(conninfo)
        return found
