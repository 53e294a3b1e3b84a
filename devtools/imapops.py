"""IMAP-only helpers shared by the local test servers (Dovecot, Cyrus).

Everything here talks to the server as the mailbox's user over IMAP, the same path the
sync engine uses, so one helper serves every server; what only a server's own tools can
do (a new UIDVALIDITY, bulk loading) stays in that server's harness.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol, cast

from imapclient import IMAPClient

__all__ = ["ImapMailboxOps", "ImapTestServer"]

_APPENDUID = re.compile(rb"\[APPENDUID (\d+) ([0-9:,]+)\]")


def uid_set(spec: bytes) -> list[int]:
    """Expand an IMAP uid-set such as ``4:6,9`` (as in APPENDUID) into a list."""
    uids: list[int] = []
    for part in spec.decode().split(","):
        if ":" in part:
            lo, hi = (int(x) for x in part.split(":"))
            uids.extend(range(min(lo, hi), max(lo, hi) + 1))
        else:
            uids.append(int(part))
    return uids


class ImapTestServer(Protocol):
    """Where a test account points: what `tests.factories.make_account` reads of a server."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def ssl_port(self) -> int | None: ...
    @property
    def ca_file(self) -> Path | None: ...


class ImapMailboxOps:
    """Mailbox helpers over IMAP; a subclass provides ``client(user)``."""

    def client(
        self, user: str, *, tls: bool = False, timeout: float = 30.0
    ) -> contextlib.AbstractContextManager[IMAPClient]:
        raise NotImplementedError

    def create_folder(self, user: str, name: str) -> None:
        """Create and subscribe a folder (``/`` is the hierarchy separator); idempotent."""
        with self.client(user) as conn:
            if not conn.folder_exists(name):
                conn.create_folder(name)
            conn.subscribe_folder(name)

    def append(
        self,
        user: str,
        folder: str,
        message: bytes,
        *,
        flags: Sequence[str] = (),
        internal_date: dt.datetime | None = None,
    ) -> int:
        """IMAP APPEND one message and return its UID (from UIDPLUS APPENDUID)."""
        with self.client(user) as conn:
            return self._append_one(conn, folder, message, flags, internal_date)

    def append_many(
        self,
        user: str,
        folder: str,
        messages: Iterable[bytes],
        *,
        flags: Sequence[str] = (),
        internal_date: dt.datetime | None = None,
        chunk_size: int = 50,
    ) -> list[int]:
        """APPEND many messages over one connection using MULTIAPPEND; returns UIDs in order.

        Chunked so a single command never carries an unbounded number of literals.
        """
        uids: list[int] = []
        with self.client(user) as conn:
            batch: list[dict[str, object]] = []
            for raw in messages:
                item: dict[str, object] = {"msg": raw, "flags": tuple(flags)}
                if internal_date is not None:
                    item["date"] = internal_date
                batch.append(item)
                if len(batch) >= chunk_size:
                    uids.extend(self._multiappend(conn, folder, batch))
                    batch = []
            if batch:
                uids.extend(self._multiappend(conn, folder, batch))
        return uids

    def expunge(self, user: str, folder: str, uids: Iterable[int]) -> None:
        """Mark ``uids`` \\Deleted and UID EXPUNGE exactly those (other messages untouched)."""
        wanted = list(uids)
        if not wanted:
            return
        with self.client(user) as conn:
            conn.select_folder(folder)
            conn.delete_messages(wanted)
            conn.uid_expunge(wanted)

    def flags(self, user: str, folder: str) -> dict[int, tuple[str, ...]]:
        """UID -> flags, read via EXAMINE so looking never changes anything.

        ``\\Recent`` is dropped: it is per-session noise, not state the CRM could change.
        """
        with self.client(user) as conn:
            conn.select_folder(folder, readonly=True)
            uids = conn.search("ALL")
            if not uids:
                return {}
            fetched = conn.fetch(uids, ["FLAGS"])
        result: dict[int, tuple[str, ...]] = {}
        for uid, data in fetched.items():
            decoded = (f.decode() if isinstance(f, bytes) else str(f) for f in data[b"FLAGS"])
            result[uid] = tuple(sorted(f for f in decoded if f != "\\Recent"))
        return result

    def fetch(self, user: str, folder: str, uids: Iterable[int] | None = None) -> dict[int, bytes]:
        """UID -> raw message via BODY.PEEK[] (PEEK: must not set \\Seen)."""
        with self.client(user) as conn:
            conn.select_folder(folder, readonly=True)
            wanted = list(uids) if uids is not None else conn.search("ALL")
            if not wanted:
                return {}
            fetched = conn.fetch(wanted, ["BODY.PEEK[]"])
        return {uid: data[b"BODY[]"] for uid, data in fetched.items()}

    def status(self, user: str, folder: str) -> dict[str, int]:
        """MESSAGES, UIDNEXT, UIDVALIDITY, UNSEEN, HIGHESTMODSEQ of ``folder``."""
        with self.client(user) as conn:
            raw = conn.folder_status(
                folder, ["MESSAGES", "UIDNEXT", "UIDVALIDITY", "UNSEEN", "HIGHESTMODSEQ"]
            )
        return {k.decode(): int(v) for k, v in raw.items()}

    def _append_one(
        self,
        conn: IMAPClient,
        folder: str,
        message: bytes,
        flags: Sequence[str],
        internal_date: dt.datetime | None,
    ) -> int:
        response = conn.append(folder, message, flags=tuple(flags), msg_time=internal_date)
        match = _APPENDUID.search(response if isinstance(response, bytes) else str(response).encode())
        if match:
            return uid_set(match.group(2))[-1]
        return self._uid_fallback(conn, folder, message)

    def _multiappend(self, conn: IMAPClient, folder: str, batch: list[dict[str, object]]) -> list[int]:
        response = conn.multiappend(folder, batch)
        match = _APPENDUID.search(response if isinstance(response, bytes) else str(response).encode())
        if match:
            uids = uid_set(match.group(2))
            if len(uids) == len(batch):
                return uids
        return [self._uid_fallback(conn, folder, cast(bytes, item["msg"])) for item in batch]

    @staticmethod
    def _uid_fallback(conn: IMAPClient, folder: str, message: bytes) -> int:
        """Servers without UIDPLUS: find the message by Message-ID, else the highest UID."""
        conn.select_folder(folder, readonly=True)
        match = re.search(rb"^Message-ID:[ \t]*(<[^>\r\n]+>)", message, re.IGNORECASE | re.MULTILINE)
        uids = conn.search(["HEADER", "Message-ID", match.group(1).decode()]) if match else []
        uids = uids or conn.search("ALL")
        conn.unselect_folder()
        if not uids:
            raise RuntimeError("APPEND succeeded but the message cannot be found")
        return max(uids)
