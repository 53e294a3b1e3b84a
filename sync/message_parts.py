"""An attachment's content, fetched again from the mail server when someone opens it.

Only attachment facts are stored at sync; the bytes stay on the server. `crm.mail_media`
decides (in a short database session, closed before any network call) whether the caller may
see the message and where its copies are; this module logs in, opens the folder read-only
(EXAMINE: nothing changes on the server, not even \\Seen), fetches the message with BODY.PEEK[],
and reads the part with the same bounded walk that listed the attachments.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from sqlmodel import Session

from core.caller import Caller
from core.db import session_scope
from core.errors import Unavailable
from core.secrets import SecretBox
from core.settings import get_settings
from crm import mail_media
from sync import errors, imap
from sync.parse import attachment_payloads


@dataclass(frozen=True, slots=True)
class FetchedPart:
    filename: str | None
    content_type: str
    data: bytes = field(repr=False)


class _InlineCache:
    """The small inline images of recently opened messages, so a mail with ten `cid:` images
    costs one fetch from the server, not ten logins. Only consulted after the access check;
    bounded in bytes and age. A lock per message makes parallel requests wait for one fetch."""

    MAX_PART = 1024 * 1024
    MAX_TOTAL = 16 * 1024 * 1024
    TTL = 300.0

    def __init__(self) -> None:
        self._parts: OrderedDict[tuple[int, int], tuple[float, FetchedPart]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        self._fetching: dict[int, threading.Lock] = {}

    def get(self, message_pk: int, index: int) -> FetchedPart | None:
        with self._lock:
            found = self._parts.get((message_pk, index))
            if found is None or time.monotonic() - found[0] > self.TTL:
                return None
            self._parts.move_to_end((message_pk, index))
            return found[1]

    def put(self, message_pk: int, index: int, part: FetchedPart) -> None:
        if len(part.data) > self.MAX_PART or not part.content_type.startswith("image/"):
            return
        with self._lock:
            old = self._parts.pop((message_pk, index), None)
            self._size -= len(old[1].data) if old else 0
            self._parts[(message_pk, index)] = (time.monotonic(), part)
            self._size += len(part.data)
            while self._size > self.MAX_TOTAL:
                _key, (_at, dropped) = self._parts.popitem(last=False)
                self._size -= len(dropped.data)

    def fetching(self, message_pk: int) -> threading.Lock:
        with self._lock:
            return self._fetching.setdefault(message_pk, threading.Lock())

    def done(self, message_pk: int) -> None:
        with self._lock:
            self._fetching.pop(message_pk, None)


_inline = _InlineCache()


def _unavailable() -> Unavailable:
    return Unavailable(
        "attachment_unavailable",
        "The attachment could not be fetched: its message is no longer on the mail server of an "
        "account you can see. Try again after the next sync.",
    )


def _from_raw(raw: bytes, source: mail_media.PartSource) -> FetchedPart | None:
    parts = attachment_payloads(raw)
    if source.index >= len(parts):
        return None
    facts, data = parts[source.index]
    if facts.content_type != source.content_type:  # not the part that was listed
        return None
    return FetchedPart(filename=source.filename, content_type=source.content_type, data=data)


def _fetch_from(location: mail_media.PartLocation, box: SecretBox) -> bytes | None:
    settings = get_settings()
    endpoint = imap.ImapEndpoint(
        host=location.host,
        port=location.port,
        security=location.security,
        username=location.username,
        ca_file=location.ca_file,
        connect_timeout=settings.connect_timeout_seconds,
        read_timeout=settings.read_timeout_seconds,
        allow_private_hosts=settings.allow_private_hosts,
        command_deadline=settings.command_deadline_seconds,
        min_bytes_per_second=settings.min_bytes_per_second,
    )
    session = imap.connect(endpoint, box.decrypt(location.secret_encrypted))
    try:
        status = session.examine(location.folder)
        if status.uidvalidity != location.uidvalidity:
            return None  # the folder was rebuilt: the UID names another message now
        return session.fetch_bodies([location.uid]).get(location.uid)
    finally:
        session.logout()


def fetch_part(
    *,
    caller: Caller,
    message_pk: int,
    index: int,
    sessions: Callable[[], AbstractContextManager[Session]] = session_scope,
) -> FetchedPart:
    """The content of attachment `index` of a message the caller sees (NotFound otherwise)."""
    with sessions() as session:
        source = mail_media.part_source(session=session, caller=caller, message_pk=message_pk, index=index)
    cached = _inline.get(message_pk, index)
    if cached is not None and _same(cached, source):
        return cached
    with _inline.fetching(message_pk):
        cached = _inline.get(message_pk, index)  # another request fetched it meanwhile
        if cached is not None and _same(cached, source):
            return cached
        try:
            return _fetch(source)
        finally:
            _inline.done(message_pk)


def _same(part: FetchedPart, source: mail_media.PartSource) -> bool:
    """The cached part is the one the database lists (type and size), not a stale one."""
    return part.content_type == source.content_type and len(part.data) == source.size


def _keep_inline(raw: bytes, source: mail_media.PartSource) -> None:
    for index, (facts, data) in enumerate(attachment_payloads(raw)):
        if facts.content_type in mail_media.INLINE_IMAGE_TYPES:
            _inline.put(source.message_pk, index, FetchedPart(facts.filename, facts.content_type, data))


def _fetch(source: mail_media.PartSource) -> FetchedPart:
    if source.raw is not None:
        found = _from_raw(source.raw, source)
        if found is not None:
            return found
    box = SecretBox.from_settings()
    last: errors.SyncError | None = None
    for location in source.locations:
        try:
            raw = _fetch_from(location, box)
        except errors.SyncError as exc:  # this copy's server failed: try the next copy
            last = exc
            continue
        found = _from_raw(raw, source) if raw is not None else None
        if found is not None:
            assert raw is not None
            _keep_inline(raw, source)
            return found
    if last is not None:
        raise last
    raise _unavailable()
