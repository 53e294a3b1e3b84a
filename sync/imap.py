"""The only module that imports imapclient: connect, log in, list, status, examine, search, fetch.

Everything returned is a plain value from `sync.types`; every library error is translated into a
`sync.errors.SyncError` at this edge. Two invariants live here:

* Nothing we do marks mail as read: folders are opened with EXAMINE (read-only SELECT, RFC 3501
  6.3.2) and bodies fetched with BODY.PEEK[] which, unlike BODY[], never sets \\Seen.
* Every socket has a timeout, and TLS certificates are always verified: a private CA is supported
  with `ca_file`; verification is never turned off.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from imapclient import IMAPClient, exceptions as imap_exc
from imapclient.datetime_util import parse_to_datetime
from imapclient.imapclient import SocketTimeout
from imapclient.response_parser import parse_fetch_response

from core.connection import BearerToken, Credential
from core.types import Security
from sync import errors
from sync.fetch_response import read_quick
from sync.netguard import check_host, pinned_context
from sync.types import FolderInfo, FolderStatus, MessageMeta

# Header fields fetched before any body: enough to recognise a message we already have
# (Message-ID), count its recipients (skip > 100 before downloading) and store headers of
# oversized mail.
META_HEADER_FIELDS = "MESSAGE-ID FROM TO CC BCC DATE SUBJECT"
_META_ITEMS = ["RFC822.SIZE", "INTERNALDATE", "FLAGS", f"BODY.PEEK[HEADER.FIELDS ({META_HEADER_FIELDS})]"]


@dataclass(frozen=True, slots=True)
class ImapEndpoint:
    host: str
    port: int
    security: Security
    username: str
    ca_file: str | None = None
    connect_timeout: float = 15.0
    read_timeout: float = 120.0
    allow_private_hosts: bool = False
    command_deadline: float = 120.0  # floor of one command's deadline
    min_bytes_per_second: int = 20_000  # plus its expected bytes at this rate


class Watchdog:
    """Cuts a connection that must not wait any longer: the command in flight overran its
    deadline, the pass overran its own, or the worker is stopping (SIGTERM). The socket timeout
    alone cannot do it: a server trickling a byte now and then satisfies every read. Shutting
    the socket down makes the blocked read return at once; `why` tells `_guard` what happened."""

    POLL = 0.2

    def __init__(self, stop: threading.Event | None, pass_deadline: float | None) -> None:
        self.stop = stop
        self.pass_seconds = pass_deadline or 0.0
        self.pass_deadline = time.monotonic() + pass_deadline if pass_deadline else None
        self.command_deadline: float | None = None
        self.why: str | None = None
        self._sock: socket.socket | None = None
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="imap-watchdog", daemon=True)

    def watch(self, sock: socket.socket) -> None:
        self._sock = sock
        self._thread.start()

    def close(self) -> None:
        self._closed.set()

    def _watch(self) -> None:
        while not self._closed.wait(self.POLL):
            now = time.monotonic()
            if self.stop is not None and self.stop.is_set():
                self._cut("stop")
            elif self.pass_deadline is not None and now > self.pass_deadline:
                self._cut("pass")
            elif self.command_deadline is not None and now > self.command_deadline:
                self._cut("command")
            if self.why:
                return

    def _cut(self, why: str) -> None:
        self.why = why
        if self._sock is not None:
            with contextlib.suppress(OSError):
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)


@contextmanager
def translate_errors(endpoint: ImapEndpoint, doing: str) -> Iterator[None]:
    """Turn library/socket errors into our own, with messages that never echo server text."""
    host, port = endpoint.host, endpoint.port
    try:
        yield
    except errors.SyncError:
        raise
    except imap_exc.LoginError as exc:
        raise _login_error(endpoint, exc) from exc
    except imap_exc.CapabilityError as exc:
        raise errors.TlsFailed(host, port, "the server does not offer STARTTLS") from exc
    except ssl.SSLCertVerificationError as exc:
        raise errors.CertificateUntrusted(host, port, exc.verify_message or "verification failed") from exc
    except ssl.SSLError as exc:
        raise errors.TlsFailed(host, port, exc.reason or "handshake failed") from exc
    except socket.gaierror as exc:
        raise errors.HostNotFound(host) from exc
    except ConnectionRefusedError as exc:
        raise errors.ConnectionRefused(host, port) from exc
    except TimeoutError as exc:
        raise errors.ConnectionTimedOut(host, port, endpoint.read_timeout) from exc
    except imaplib.IMAP4.abort as exc:
        raise errors.ConnectionLost(host, f"while {doing}") from exc
    except imaplib.IMAP4.error as exc:
        raise errors.ProtocolError(doing) from exc
    except OSError as exc:
        raise errors.ConnectionLost(host, f"{type(exc).__name__} while {doing}") from exc


def _login_error(endpoint: ImapEndpoint, exc: imap_exc.LoginError) -> errors.SyncError:
    """What a failed LOGIN means. imapclient turns every `IMAP4.error` of LOGIN into `LoginError`,
    a dropped connection (`IMAP4.abort`, an `OSError`) included: only a tagged NO refuses the
    credentials (RFC 3501 6.2.3; RFC 5530 codes such as [AUTHENTICATIONFAILED]). A NO with
    [UNAVAILABLE] or [SERVERBUG] is the server's trouble, and BAD is a garbled exchange."""
    cause = exc.__context__
    if isinstance(cause, imaplib.IMAP4.abort | OSError):
        return errors.ConnectionLost(endpoint.host, "while logging in")
    text = str(exc).upper()
    if "COMMAND ERROR: NO" not in text and "LOGIN COMMAND ERROR" in text:
        return errors.ProtocolError("logging in")
    if "[UNAVAILABLE]" in text or "[SERVERBUG]" in text:
        return errors.ConnectionLost(endpoint.host, "the server could not check the password just now")
    return errors.AuthFailed(endpoint.host, endpoint.username)


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def _imap_date(value: datetime) -> str:
    """RFC 3501 date (`1-Mar-2026`), independent of the process locale."""
    return f"{value.day}-{_MONTHS[value.month - 1]}-{value.year}"


def parse_search(lines: Sequence[Any]) -> list[int]:
    """The message numbers of untagged SEARCH responses (pure). Numbers only, whatever follows:
    a CONDSTORE server may add `(MODSEQ n)` (RFC 7162 3.1.5), and some send it with no number at
    all (`* SEARCH (MODSEQ 1)` after an expunge), which imapclient 4.1 rejects."""
    found: set[int] = set()
    for line in lines:
        text = _decode(line) if line is not None else ""
        text = re.sub(r"\([^)]*\)", " ", text)
        found.update(int(token) for token in text.split() if token.isdigit())
    return sorted(found)


def _decode(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _flags(values: Any) -> tuple[str, ...]:
    """Message flags as strings, without \\Recent: a per-session flag (RFC 3501 2.3.2) that
    says nothing about the message and differs between connections."""
    return tuple(f for f in (_decode(v) for v in values or ()) if f.lower() != "\\recent")


def _int_or_none(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number


def _utc(value: Any) -> datetime | None:
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _body_item(data: dict[bytes, Any]) -> bytes | None:
    for key, value in data.items():
        if key.startswith(b"BODY[") and isinstance(value, bytes):
            return value
    return None


class ImapSession:
    """A logged-in connection. Use `connect()`; close with `logout()` or a `with` block."""

    def __init__(self, client: IMAPClient, endpoint: ImapEndpoint, watchdog: Watchdog | None = None) -> None:
        self._client = client
        self.endpoint = endpoint
        self._watchdog = watchdog
        self._caps: frozenset[str] | None = None
        self._condstore_enabled = False

    def __enter__(self) -> ImapSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.logout()

    @contextmanager
    def _guard(self, doing: str, expected_bytes: int = 0) -> Iterator[None]:
        """Errors translated, and the command bounded in time (see `Watchdog`)."""
        dog = self._watchdog
        seconds = self.endpoint.command_deadline + expected_bytes / self.endpoint.min_bytes_per_second
        if dog is not None:
            if dog.why:
                raise self._cut_short(dog.why, doing, seconds)
            dog.command_deadline = time.monotonic() + seconds
        try:
            with translate_errors(self.endpoint, doing):
                yield
        except errors.SyncError:
            if dog is not None and dog.why:
                raise self._cut_short(dog.why, doing, seconds) from None
            raise
        finally:
            if dog is not None:
                dog.command_deadline = None

    def _cut_short(self, why: str, doing: str, seconds: float) -> errors.SyncError:
        host = self.endpoint.host
        if why == "stop":
            return errors.Interrupted()
        if why == "pass" and self._watchdog is not None and self._watchdog.pass_seconds:
            return errors.PassTimedOut(host, self._watchdog.pass_seconds)
        return errors.CommandTimedOut(host, doing, round(seconds, 1))

    @property
    def capabilities(self) -> frozenset[str]:
        if self._caps is None:
            with self._guard("reading capabilities"):
                self._caps = frozenset(_decode(c).upper() for c in self._client.capabilities())
        return self._caps

    def has(self, capability: str) -> bool:
        return capability.upper() in self.capabilities

    def enable_condstore(self) -> bool:
        """Turn on CONDSTORE (RFC 7162) when offered so SELECT/STATUS report HIGHESTMODSEQ."""
        if self._condstore_enabled:
            return True
        if not self.has("CONDSTORE"):
            return False
        with self._guard("enabling CONDSTORE"):
            if self.has("ENABLE"):
                self._client.enable("CONDSTORE")
        self._condstore_enabled = True
        return True

    def list_folders(self) -> list[FolderInfo]:
        # Servers offering SPECIAL-USE (RFC 6154) put \Sent among a plain LIST's attributes.
        with self._guard("listing folders"):
            entries = self._client.list_folders()
        return [
            FolderInfo(
                name=_decode(name),
                delimiter=_decode(delim) if delim else None,
                flags=tuple(_decode(f) for f in flags),
            )
            for flags, delim, name in entries
        ]

    def status(self, folder: str) -> FolderStatus:
        items = ["MESSAGES", "UIDNEXT", "UIDVALIDITY"]
        if self.enable_condstore():
            items.append("HIGHESTMODSEQ")
        with self._guard(f"asking the status of {folder}"):
            data = self._client.folder_status(folder, items)
        return FolderStatus(
            name=folder,
            uidvalidity=_int_or_none(data.get(b"UIDVALIDITY")),
            uidnext=_int_or_none(data.get(b"UIDNEXT")),
            messages=_int_or_none(data.get(b"MESSAGES")),
            highestmodseq=_int_or_none(data.get(b"HIGHESTMODSEQ")),
        )

    def examine(self, folder: str) -> FolderStatus:
        """Open read-only (EXAMINE): nothing done afterwards can change flags."""
        self.enable_condstore()
        with self._guard(f"opening {folder}"):
            data = self._client.select_folder(folder, readonly=True)
        return FolderStatus(
            name=folder,
            uidvalidity=_int_or_none(data.get(b"UIDVALIDITY")),
            uidnext=_int_or_none(data.get(b"UIDNEXT")),
            messages=_int_or_none(data.get(b"EXISTS")),
            highestmodseq=_int_or_none(data.get(b"HIGHESTMODSEQ")),
        )

    def _search(self, *criteria: bytes) -> list[int]:
        """UID SEARCH with plain ASCII criteria, its answer read by `parse_search` rather than by
        imapclient's parser (which raises on a MODSEQ item without numbers). Its lower-level
        command helper is used on purpose: this module is the one place that knows imapclient."""
        lines = self._client._raw_command_untagged(b"SEARCH", list(criteria))
        return parse_search(lines)

    def select_readwrite(self, folder: str) -> FolderStatus:
        """Open read-write (SELECT), for servers that save their UIDs only then. Nothing is done
        while it is open; the caller EXAMINEs it again, which deselects it WITHOUT expunging
        (never CLOSE here: CLOSE on a read-write folder expunges \\Deleted mail)."""
        self.enable_condstore()
        with self._guard(f"opening {folder} read-write"):
            data = self._client.select_folder(folder, readonly=False)
        return FolderStatus(
            name=folder,
            uidvalidity=_int_or_none(data.get(b"UIDVALIDITY")),
            uidnext=_int_or_none(data.get(b"UIDNEXT")),
            messages=_int_or_none(data.get(b"EXISTS")),
            highestmodseq=_int_or_none(data.get(b"HIGHESTMODSEQ")),
        )

    def uids_above(self, uid: int) -> list[int]:
        """UIDs greater than `uid`. `UID n:*` always matches the last message even when its UID
        is lower (RFC 3501 6.4.8), hence the filter."""
        with self._guard("searching for new messages"):
            found = self._search(b"UID", f"{uid + 1}:*".encode())
        return sorted(u for u in found if u > uid)

    def uids_since(self, since: datetime) -> list[int]:
        with self._guard("searching by date"):
            found = self._search(b"SINCE", _imap_date(since).encode())
        return sorted(found)

    def all_uids(self) -> list[int]:
        with self._guard("listing message UIDs"):
            return self._search(b"ALL")

    def exists(self, uid: int) -> bool:
        with self._guard("checking a message"):
            return uid in self._search(b"UID", str(uid).encode())

    def fetch_meta(self, uids: Sequence[int]) -> list[MessageMeta]:
        if not uids:
            return []
        with self._guard("fetching message sizes and headers"):
            data = self._fetch(uids, _META_ITEMS)
        metas = []
        for uid, item in data.items():
            if uid not in uids:
                continue  # unsolicited FETCH responses for other messages
            metas.append(
                MessageMeta(
                    uid=uid,
                    size=_int_or_none(item.get(b"RFC822.SIZE")) or 0,
                    flags=_flags(item.get(b"FLAGS")),
                    internal_date=_utc(item.get(b"INTERNALDATE")),
                    header_bytes=_body_item(item) or b"",
                )
            )
        return sorted(metas, key=lambda m: m.uid)

    def _fetch(self, uids: Sequence[int], items: Sequence[str]) -> dict[int, dict[bytes, Any]]:
        """`IMAPClient.fetch(uids, items)`, the same command and result, with the usual answer
        read by `fetch_response.read_quick` (a fraction of the CPU) and anything else by
        imapclient's own parser, as before. A refused command raises imapclient's error."""
        client = self._client
        wanted = [int(uid) for uid in uids]
        typ, lines = client._imap.uid("FETCH", ",".join(map(str, wanted)), f"({' '.join(items).upper()})")
        if typ != "OK":  # as IMAPClient.fetch (`_checkok`): imaplib returns NO, raises on BAD
            raise imap_exc.IMAPClientError("fetch failed")
        normalise = client.normalise_times

        def internal_date(value: bytes) -> datetime | None:
            try:
                return parse_to_datetime(value, normalise=normalise)
            except ValueError:
                return None

        parsed = read_quick(lines, internal_date)
        if parsed is None:
            parsed = parse_fetch_response(lines, normalise, uid_is_key=True)
        return {uid: parsed[uid] for uid in wanted if uid in parsed}  # unsolicited ones dropped

    def sizes(self, uids: Sequence[int]) -> dict[int, int]:
        """RFC822.SIZE of each message, a thousand at a time (a few bytes each on the wire)."""
        out: dict[int, int] = {}
        for start in range(0, len(uids), 1000):
            chunk = list(uids[start : start + 1000])
            with self._guard("fetching message sizes"):
                data = self._fetch(chunk, ["RFC822.SIZE"])
            out.update({uid: _int_or_none(item.get(b"RFC822.SIZE")) or 0 for uid, item in data.items()})
        return out

    def fetch_bodies(
        self, uids: Sequence[int], *, headers_only: bool = False, expected_bytes: int = 0
    ) -> dict[int, bytes]:
        if not uids:
            return {}
        item = "BODY.PEEK[HEADER]" if headers_only else "BODY.PEEK[]"
        with self._guard("downloading messages", expected_bytes):
            data = self._fetch(uids, [item])
        wanted = set(uids)
        out: dict[int, bytes] = {}
        for uid, values in data.items():
            body = _body_item(values)
            if uid in wanted and body is not None:
                out[uid] = body
        return out

    def flags_of(self, uids: Sequence[int]) -> dict[int, tuple[str, ...]]:
        out: dict[int, tuple[str, ...]] = {}
        for start in range(0, len(uids), 1000):
            chunk = list(uids[start : start + 1000])
            with self._guard("fetching flags"):
                data = self._client.fetch(chunk, ["FLAGS"])
            out.update({uid: _flags(item.get(b"FLAGS")) for uid, item in data.items()})
        return out

    def changed_flags(self, modseq: int) -> dict[int, tuple[str, ...]]:
        """FLAGS of messages whose mod-sequence is above `modseq`: SEARCH MODSEQ (RFC 7162
        3.1.5) names them, then one FETCH reads their flags."""
        with self._guard("searching for changed flags"):
            uids = self._search(b"MODSEQ", str(modseq + 1).encode())
        return self.flags_of(sorted(uids))

    def all_flags(self) -> dict[int, tuple[str, ...]]:
        return self.flags_of(self.all_uids())

    def noop(self) -> None:
        with self._guard("checking the connection"):
            self._client.noop()

    def logout(self) -> None:
        if self._watchdog is not None:
            self._watchdog.close()
        try:
            self._client.logout()
        except Exception:  # closing a dead connection must never raise
            with contextlib.suppress(Exception):
                self._client.shutdown()


def _sasl(client: IMAPClient, mechanism: str, initial: str) -> None:
    """AUTHENTICATE with one initial response. A refused token gets a `+ base64(JSON error)`
    challenge (RFC 7628 3.2.2) that is answered with an empty line, never with the token again;
    the server then sends its tagged NO. imapclient's own helpers would resend the token."""
    answered = False

    def answer(challenge: bytes) -> str:
        nonlocal answered
        if answered:
            return ""
        answered = True
        return initial

    try:
        typ, data = client._imap.authenticate(mechanism, answer)
    except imaplib.IMAP4.abort:
        raise
    except imaplib.IMAP4.error as exc:
        raise imap_exc.LoginError(str(exc)) from exc
    if typ != "OK":
        raise imap_exc.LoginError(f"authenticate command error: {typ} {data!r}")


def _authenticate(client: IMAPClient, endpoint: ImapEndpoint, credential: Credential) -> None:
    """LOGIN with a password, or SASL with an OAuth2 access token: XOAUTH2 (Gmail, Microsoft
    365), or OAUTHBEARER (RFC 7628) when the server offers it and not XOAUTH2. imaplib's wire
    debugging is off (`connect`), so neither the password nor the token reaches a log."""
    if not isinstance(credential, BearerToken):
        client.login(endpoint.username, credential.get_secret_value())
        return
    bearer = f"auth=Bearer {credential.token.get_secret_value()}\x01\x01"
    offered = {_decode(c).upper() for c in client.capabilities()}
    if "AUTH=OAUTHBEARER" in offered and "AUTH=XOAUTH2" not in offered:
        gs2 = endpoint.username.replace("=", "=3D").replace(",", "=2C")
        _sasl(client, "OAUTHBEARER", f"n,a={gs2},\x01{bearer}")
    else:
        _sasl(client, "XOAUTH2", f"user={endpoint.username}\x01{bearer}")


def connect(
    endpoint: ImapEndpoint,
    password: Credential,
    *,
    stop: threading.Event | None = None,
    pass_seconds: float | None = None,
) -> ImapSession:
    """Open, secure and log in. Raises a `SyncError` subclass on any failure. `stop` (the
    worker stopping) and `pass_seconds` (the pass's time limit) cut the connection short."""
    address = check_host(endpoint.host, endpoint.port, allow_private=endpoint.allow_private_hosts)
    timeout = SocketTimeout(connect=endpoint.connect_timeout, read=endpoint.read_timeout)
    context = pinned_context(endpoint.host, endpoint.ca_file)
    with translate_errors(endpoint, "connecting"):
        try:
            client = IMAPClient(
                address,
                port=endpoint.port,
                ssl=endpoint.security is Security.TLS,
                ssl_context=context if endpoint.security is Security.TLS else None,
                timeout=timeout,
            )
        except TimeoutError as exc:
            raise errors.ConnectionTimedOut(endpoint.host, endpoint.port, endpoint.connect_timeout) from exc
    # Aware datetimes for INTERNALDATE instead of naive local time.
    client.normalise_times = False
    # imapclient turns imaplib's wire debugging on (debug = 5) to feed its own logger: imaplib then
    # formats every literal it reads with %r twice, whether or not anything logs it (measured:
    # 191 -> 48 us of CPU per message on a FETCH). We never log the wire.
    client._imap.debug = 0
    watchdog = Watchdog(stop, pass_seconds)
    session = ImapSession(client, endpoint, watchdog)
    try:
        if endpoint.security is Security.STARTTLS:
            with session._guard("starting TLS"):
                client.starttls(context)
        watchdog.watch(client.socket())
        with session._guard("logging in"):
            _authenticate(client, endpoint, password)
    except BaseException:
        session.logout()
        raise
    return session


def append_message(
    session: ImapSession,
    folder: str,
    raw: bytes,
    *,
    message_id: str | None = None,
    when: datetime | None = None,
) -> tuple[int, int] | None:
    """APPEND a message we sent to `folder`, marked \\Seen, once: with `message_id`, a copy
    already there (an earlier attempt that died before recording it) is found by a SEARCH and
    not appended again. Returns (UIDVALIDITY, UID) of the copy (RFC 4315 APPENDUID for a new
    one), or None when the server does not say."""
    client = session._client
    if message_id is not None:
        with session._guard(f"looking for {message_id} in {folder}"):
            selected = client.select_folder(folder, readonly=True)
            found = client.search(["HEADER", "Message-ID", message_id])
            client.close_folder()  # after EXAMINE, CLOSE expunges nothing (RFC 3501 6.4.2)
        uidvalidity = _int_or_none(selected.get(b"UIDVALIDITY"))
        if found and uidvalidity is not None:
            return uidvalidity, int(min(found))
    with session._guard(f"appending to {folder}"):
        answer = client.append(folder, raw, flags=(b"\\Seen",), msg_time=when)
    text = _decode(answer)
    start = text.upper().find("[APPENDUID ")
    if start < 0:
        return None
    parts = text[start + len("[APPENDUID ") :].split("]", 1)[0].split()
    if len(parts) != 2 or not all(p.isdigit() for p in parts):
        return None
    return int(parts[0]), int(parts[1])
