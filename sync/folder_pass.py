"""One folder's pass: STATUS, plan, then batches fetched, parsed and stored with their cursor.

1. STATUS, compared with the saved cursor by `plan.plan_folder`: an unchanged folder costs this
   one command.
2. EXAMINE (read-only), then the UIDs above the cursor, processed in batches. For each batch the
   cheap facts come first (size, flags, a few header fields); mail we already hold (same
   Message-ID, e.g. the same message in another folder or account, or after a UIDVALIDITY
   change) only gets a new location and is never downloaded again, mail with too many
   recipients is recorded as skipped, oversized mail has only its header downloaded.
3. Each batch is written with its cursor in one short transaction, after the network work for
   that batch is over: no database session is ever held across a server round-trip, and a crash
   resumes after the last committed batch with nothing lost or stored twice.
4. Expunged messages are noticed by comparing the server's message count with ours, and flags
   changed since the last HIGHESTMODSEQ are refreshed when the server offers CONDSTORE.

A message that fails to fetch or store is retried on later passes and quarantined after a few
attempts, so one bad message never blocks its folder.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import replace
from typing import TYPE_CHECKING, TypeVar

from sqlalchemy.exc import OperationalError, SQLAlchemyError
from sqlmodel import Session

from core import stages
from core.db import DatabaseUnavailable, session_scope
from core.types import SkipReason
from crm import mailstore, sync_state
from sync import errors, imap
from sync.identity import as_reused, reused_key, same_message
from sync.message_data import dedupe, to_message_data
from sync.parse import parse_head, parse_message
from sync.pipeline import Fetched, prefetched
from sync.plan import Action, SavedState, contiguous_done, plan_folder, size_batches
from sync.types import FolderRole, MessageMeta, ParsedMessage

T = TypeVar("T")

if TYPE_CHECKING:
    from sync.account_pass import AccountInfo, SyncEngine, SyncSummary

log = logging.getLogger(__name__)

RECONNECT_BUDGET = 24
# The first batch of a pass is smaller (see `plan.size_batches`): the first store then waits
# for 50 messages fetched and parsed instead of a full batch.
FIRST_BATCH = 50
DROPPED_ON_MESSAGE = "the server closed the connection when asked for this message"


class _UidValidityMoved(Exception):
    """UIDVALIDITY differs from what we saved, or between two opens of one pass."""


class FolderPass:
    """The state of one folder's pass (kept in one object so the steps stay small)."""

    def __init__(
        self,
        engine: SyncEngine,
        conn: imap.ImapSession,
        account: AccountInfo,
        identities: frozenset[str],
        role: FolderRole,
        name: str,
        summary: SyncSummary,
        *,
        reconnect: Callable[[], imap.ImapSession] | None = None,
    ) -> None:
        self.engine = engine
        self._connect = reconnect
        # Reconnects this pass may spend narrowing down a message the server drops the
        # connection on: a bisection of a full batch needs about 2 x log2(batch size).
        self.reconnects_left = RECONNECT_BUDGET
        self.settings = engine.settings
        self.conn = conn
        self.account = account
        self.identities = identities
        self.role = role
        self.name = name
        self.summary = summary
        self.folder_id = 0
        self.uidvalidity = 0
        self.cursor_uid = 0
        self.blocked = False  # a UID of this pass is left to retry: the cursor stays before it

    def _session(self) -> AbstractContextManager[Session]:
        return session_scope(self.engine.db)

    def run(self) -> None:
        try:
            self._run(may_write_select=True)
        except _UidValidityMoved:
            # Some servers write their UID database only when a client opens the folder
            # read-write, and hand out a new UIDVALIDITY at every read-only open until then (a
            # shared mailbox only delivered to and read through us never gets one). Open it
            # read-write once, then look again: a real change is then resynced as usual, a
            # merely unsaved one is stable from now on. Nothing is fetched on this opening (the
            # folder is EXAMINEd again before any FETCH, and BODY.PEEK never sets \Seen); the
            # only trace is that \Recent is cleared, as by any client opening the folder.
            log.info(
                "account %s folder %s: UIDVALIDITY moved, opening read-write once", self.account.id, self.name
            )
            self.conn.select_readwrite(self.name)
            self._run(may_write_select=False)

    def _run(self, *, may_write_select: bool) -> None:
        status = self.conn.status(self.name)
        with self._session() as session:
            cursor = sync_state.folder_cursor(
                session=session, account_id=self.account.id, role=self.role, name=self.name
            )
        self.folder_id = cursor.folder_id
        saved = SavedState(
            uidvalidity=cursor.uidvalidity,
            highest_uid=cursor.highest_uid,
            uidnext=cursor.uidnext,
            messages=cursor.messages,
            highestmodseq=cursor.highestmodseq,
            uidvalidity_resyncs=cursor.uidvalidity_resyncs,
            unstable=cursor.unstable,
            initial_sync_done=cursor.initial_sync_done,
        )
        plan = plan_folder(saved, status, max_resyncs=self.settings.max_uidvalidity_resyncs)
        log.info("account %s folder %s: %s (%s)", self.account.id, self.name, plan.action, plan.reason)
        if plan.action is Action.NOTHING:
            with self._session() as session:
                sync_state.finish_folder_pass(
                    session=session,
                    folder_id=self.folder_id,
                    uidnext=status.uidnext,
                    messages=status.messages,
                    highestmodseq=status.highestmodseq,
                )
            return
        if plan.action is Action.UNUSABLE:
            raise errors.ProtocolError(f"reading {self.name}: {plan.reason}")
        if may_write_select and plan.action in (Action.RESYNC, Action.FLAGGED):
            raise _UidValidityMoved()
        if plan.action is Action.FLAGGED:
            with self._session() as session:
                sync_state.flag_unstable(session=session, folder_id=self.folder_id)
            raise errors.UidValidityUnstable(self.name)
        if plan.action is Action.RESYNC:
            assert plan.uidvalidity is not None
            log.warning("account %s folder %s: %s, resyncing", self.account.id, self.name, plan.reason)
            with self._session() as session:
                sync_state.begin_resync(
                    session=session, folder_id=self.folder_id, uidvalidity=plan.uidvalidity
                )
        elif plan.action is Action.INITIAL and saved.uidvalidity is None:
            with self._session() as session:
                sync_state.begin_initial(
                    session=session, folder_id=self.folder_id, uidvalidity=plan.uidvalidity or 0
                )

        assert plan.uidvalidity is not None
        self.uidvalidity = plan.uidvalidity
        selected = self.conn.examine(self.name)
        if selected.uidvalidity != self.uidvalidity:
            if may_write_select:
                raise _UidValidityMoved()
            raise errors.ProtocolError(f"opening {self.name}: UIDVALIDITY changed while syncing")
        self.cursor_uid = 0 if plan.action is Action.RESYNC else plan.fetch_above
        uids = self.conn.uids_above(self.cursor_uid)
        highest_on_server = uids[-1] if uids else self.cursor_uid
        windowed = plan.action in (Action.INITIAL, Action.RESYNC) and self.account.sync_since is not None
        if windowed and self.account.sync_since is not None:
            in_window = set(self.conn.uids_since(self.account.sync_since))
            uids = [u for u in uids if u in in_window]
        self._fetch_all(uids)
        if self.engine.stop_event.is_set():
            return
        if windowed and not self.blocked and highest_on_server > self.cursor_uid:
            # Older mail is outside the window on purpose: the cursor moves past it (to a UID
            # the server really listed, never to a UIDNEXT it merely claims), so the next pass
            # is incremental instead of downloading the whole mailbox.
            self._apply([], highest_on_server)
            self.cursor_uid = highest_on_server
        messages = self._notice_expunged(selected.messages)
        self._refresh_flags(plan.flags_since, plan.full_flag_scan)
        with self._session() as session:
            sync_state.finish_folder_pass(
                session=session,
                folder_id=self.folder_id,
                uidnext=selected.uidnext or status.uidnext,
                messages=messages,
                highestmodseq=selected.highestmodseq or status.highestmodseq,
                pending=self.blocked,
                # A windowed first sync with a UID left to retry is not over: the next pass
                # must apply the window again, not import old mail above the cursor.
                initial_done=not (windowed and self.blocked),
            )

    # -----------------------------------------------------------------------------------------
    def _fetch_all(self, uids: list[int]) -> None:
        """Fetch and store batch after batch. The network side of batch N+1 (a background thread,
        the only user of the IMAP connection meanwhile) overlaps with parsing and storing batch
        N; a bounded queue keeps at most two fetched batches waiting, so memory stays flat."""
        # Memory follows the bytes in flight (up to four batches: being fetched, two queued, being
        # stored), so batches are bounded by total size as well as by count. Mail over the size
        # limit only has its header downloaded: it counts for that.
        if uids:
            self.engine.parser.warm()  # starting a worker overlaps with the first batches
        limit = self.settings.max_message_bytes
        sizes = {uid: size if size <= limit else 0 for uid, size in self.conn.sizes(uids).items()}
        batches = size_batches(
            uids,
            sizes,
            max_count=self.settings.sync_batch_size,
            max_bytes=self.settings.sync_batch_max_bytes,
            first=FIRST_BATCH,
        )
        total, done = len(uids), 0
        name = f"fetch-{self.account.id}-{self.role}"
        for fetched in prefetched(batches, self._fetch_batch, stop=self.engine.stop_event, name=name):
            self._finish_batch(fetched)
            done += len(fetched.batch)
            if self.engine.progress:
                self.engine.progress(self.account.id, self.role, done, total)

    def _fetch_batch(self, batch: list[int]) -> Fetched:
        """The network side of a batch (plus short reads): what is new, what to download. The
        lease is renewed first, so a long download never outlives it."""
        with self._session() as session:
            self._renew(session)
        with self._session() as session:
            already = mailstore.seen_uids(
                session=session, folder_id=self.folder_id, uidvalidity=self.uidvalidity, uids=batch
            )
        todo = [u for u in batch if u not in already]
        fetched = Fetched(batch=batch, done=set(already))
        with stages.stage("fetch.headers"):
            fetched.metas = {m.uid: m for m in self._fetch_meta(todo, fetched.failures)}
        for uid in todo:
            if uid not in fetched.metas and uid not in fetched.failures:
                if self.conn.exists(uid):
                    fetched.failures[uid] = "the server returned no data for it"
                else:
                    fetched.done.add(uid)  # expunged between SEARCH and FETCH
        # Parsed without INTERNALDATE: `date` is then the Date header's own value (or None),
        # which is what tells a copy of a stored message from another one reusing its ID.
        with stages.stage("parse.headers"):
            heads = {uid: parse_head(m.header_bytes) for uid, m in fetched.metas.items()}
        fetched.heads = heads
        with self._session() as session:
            fetched.known = mailstore.known_messages(
                session=session,
                tenant_id=self.account.tenant_id,
                message_ids=[h.message_id for h in heads.values() if not h.message_id_synthetic],
            )
        full: list[int] = []
        header_only: list[int] = []
        for uid, meta in sorted(fetched.metas.items()):
            head = heads[uid]
            location = mailstore.Location(uid=uid, flags=meta.flags, internal_date=meta.internal_date)
            known = None if head.message_id_synthetic else fetched.known.get(head.message_id)
            if known is not None:
                if same_message(head, known, header_date=head.date):
                    fetched.early.append(mailstore.KnownMail(location=location, message_id=head.message_id))
                    continue
                fetched.reused.add(uid)
            if head.recipient_count > self.settings.max_recipients:
                if uid in fetched.reused:
                    head = replace(head, message_id=reused_key(head.message_id, head.content_hash))
                fetched.early.append(
                    self._skipped(location, replace(head, date=head.date or meta.internal_date))
                )
            elif meta.size > self.settings.max_message_bytes:
                header_only.append(uid)
            else:
                full.append(uid)
        sizes = {uid: meta.size for uid, meta in fetched.metas.items()}
        with stages.stage("fetch.bodies"):
            fetched.bodies = self._download(full, headers_only=False, failures=fetched.failures, sizes=sizes)
            fetched.headers = self._download(header_only, headers_only=True, failures=fetched.failures)
        jobs = [
            (uid, fetched.bodies[uid], fetched.metas[uid].internal_date)
            for uid in full
            if uid in fetched.bodies
        ]
        fetched.parsed = self.engine.parser.submit(jobs)
        return fetched

    def _fetch_meta(self, uids: list[int], failures: dict[int, str]) -> list[MessageMeta]:
        def fetch(part: list[int]) -> dict[int, MessageMeta]:
            return {m.uid: m for m in self.conn.fetch_meta(part)}

        return list(self._narrowed(uids, failures, fetch).values())

    def _narrowed(
        self, uids: list[int], failures: dict[int, str], fetch: Callable[[list[int]], dict[int, T]]
    ) -> dict[int, T]:
        """`fetch(uids)`, narrowed down to the message(s) the server chokes on. A refused command
        (NO/BAD) is retried one message at a time on the same connection. A dropped connection
        (some servers crash on one crafted message) is bisected across reconnects: the halves
        that come back are kept, a single UID that still drops it is a failure, counted towards
        its quarantine like any other, so the folder moves on after a few passes."""
        if not uids:
            return {}
        try:
            return fetch(uids)
        except errors.ProtocolError as exc:
            if len(uids) == 1:
                failures[uids[0]] = str(exc)
                return {}
            parts = [[uid] for uid in uids]
        except errors.ConnectionLost:
            self._reconnect()
            if len(uids) == 1:
                failures[uids[0]] = DROPPED_ON_MESSAGE
                return {}
            middle = len(uids) // 2
            parts = [uids[:middle], uids[middle:]]
        out: dict[int, T] = {}
        for part in parts:
            out.update(self._narrowed(part, failures, fetch))
        return out

    def _reconnect(self) -> None:
        """A fresh connection with the folder open again, within this pass's budget; otherwise
        the lost connection fails the pass like any other."""
        if self._connect is None or self.reconnects_left <= 0:
            raise errors.ConnectionLost(self.account.endpoint.host, "again and again while fetching")
        self.reconnects_left -= 1
        self.conn.logout()
        self.conn = self._connect()
        selected = self.conn.examine(self.name)
        if selected.uidvalidity != self.uidvalidity:
            raise errors.ProtocolError(f"opening {self.name}: UIDVALIDITY changed while syncing")

    def _finish_batch(self, fetched: Fetched) -> None:
        """The database side of a batch: build the items, count failures, write, advance."""
        items = list(fetched.early)
        parsed_all = list(self.engine.parser.result(fetched, f"account {self.account.id} {self.name}"))
        for uid, header in sorted(fetched.headers.items()):
            when = fetched.metas[uid].internal_date
            parsed_all.append(
                (uid, parse_message(header, internal_date=when, fast=self.settings.fast_parser))
            )
        # Batches are fetched ahead of storing: what an earlier batch stored since is looked up
        # again here, so a reused Message-ID is told apart however the batches fall.
        unseen = [p.message_id for _, p in parsed_all if p.message_id not in fetched.known]
        if unseen:
            with self._session() as session:
                fetched.known.update(
                    mailstore.known_messages(
                        session=session, tenant_id=self.account.tenant_id, message_ids=unseen
                    )
                )
        for uid, parsed in sorted(parsed_all, key=lambda pair: pair[0]):
            meta = fetched.metas[uid]
            location = mailstore.Location(uid=uid, flags=meta.flags, internal_date=meta.internal_date)
            header_date = fetched.heads[uid].date if uid in fetched.heads else parsed.date
            known = fetched.known.get(parsed.message_id)
            if uid in fetched.reused or (
                known is not None and not same_message(parsed, known, header_date=header_date)
            ):
                parsed = as_reused(parsed)  # a different message under a Message-ID we hold
                known = fetched.known.get(parsed.message_id)
            if parsed.recipient_count > self.settings.max_recipients:
                items.append(self._skipped(location, parsed))
            elif known is not None:
                items.append(mailstore.KnownMail(location=location, message_id=parsed.message_id))
            else:
                headers_only = uid in fetched.headers
                raw = fetched.headers[uid] if headers_only else fetched.bodies[uid]
                data = to_message_data(parsed, raw=raw, headers_only=headers_only)
                items.append(mailstore.NewMail(location=location, data=data))
                sender = parsed.from_.email if parsed.from_ else ""
                fetched.known[parsed.message_id] = mailstore.KnownIdentity(
                    sender, parsed.subject, header_date
                )
        items = dedupe(items)
        quarantined = self._record_failures(fetched.failures)
        done = fetched.done | quarantined | {i.location.uid for i in items}
        with stages.stage("store"):
            result = self._store(items, fetched.batch, done)
        self.summary.add(result)
        if result.stored_message_pks:
            for callback in self.engine.after_batch:
                callback(self.account.tenant_id, result.stored_message_pks)

    def _skipped(self, location: mailstore.Location, parsed: ParsedMessage) -> mailstore.SkippedMail:
        return mailstore.SkippedMail(
            location=location,
            message_id=parsed.message_id,
            reason=SkipReason.TOO_MANY_RECIPIENTS,
            detail=(
                f"{parsed.recipient_count} distinct recipients (To, Cc, Bcc); mail with more than "
                f"{self.settings.max_recipients} is not synced as conversation mail."
            ),
            subject=parsed.subject,
            from_email=parsed.from_.email if parsed.from_ else "",
            date=parsed.date,
            recipient_count=parsed.recipient_count,
        )

    def _download(
        self,
        uids: list[int],
        *,
        headers_only: bool,
        failures: dict[int, str],
        sizes: dict[int, int] | None = None,
    ) -> dict[int, bytes]:
        def fetch(part: list[int]) -> dict[int, bytes]:
            expected = sum((sizes or {}).get(uid, 0) for uid in part)
            return self.conn.fetch_bodies(part, headers_only=headers_only, expected_bytes=expected)

        bodies = self._narrowed(uids, failures, fetch)
        for uid in uids:
            if uid not in bodies and uid not in failures:
                failures[uid] = "the server returned no body for it"
        return bodies

    def _record_failures(self, failures: dict[int, str]) -> set[int]:
        quarantined: set[int] = set()
        if not failures:
            return quarantined
        with self._session() as session:
            for uid, error in failures.items():
                if mailstore.record_failure(
                    session=session,
                    account_id=self.account.id,
                    folder_id=self.folder_id,
                    uidvalidity=self.uidvalidity,
                    uid=uid,
                    error=error,
                    max_attempts=self.settings.max_message_attempts,
                ):
                    quarantined.add(uid)
        self.summary.quarantined += len(quarantined)
        for uid, error in failures.items():
            log.warning("account %s %s UID %s: %s", self.account.id, self.name, uid, error)
        return quarantined

    def _apply(self, items: Sequence[mailstore.Incoming], cursor: int | None) -> mailstore.BatchResult:
        with self._session() as session:
            result = mailstore.apply_batch(
                session=session,
                tenant_id=self.account.tenant_id,
                account_id=self.account.id,
                folder_id=self.folder_id,
                folder_role=self.role,
                uidvalidity=self.uidvalidity,
                items=items,
                identities=self.identities,
                cursor=mailstore.CursorUpdate(cursor) if cursor is not None else None,
            )
            self._renew(session)
        return result

    def _renew(self, session: Session) -> None:
        """Still ours? A worker that lost its claim (it stalled past the lease and another took
        over) must stop before writing: raising rolls the batch back."""
        if not sync_state.renew_lease(
            session=session,
            account_id=self.account.id,
            owner=self.engine.worker_id,
            lease_seconds=self.settings.lease_seconds,
        ):
            raise errors.LeaseLost()

    def _cursor_after(self, batch: list[int], done: set[int]) -> int:
        """Where the cursor may go after this batch: up to the first UID not done. Once a batch
        left one behind (a failure to retry), no later batch of the pass moves it: the cursor
        means "everything up to here is done", and the retry must find that UID again."""
        return self.cursor_uid if self.blocked else contiguous_done(batch, done, self.cursor_uid)

    def _moved_to(self, batch: list[int], cursor: int) -> None:
        self.cursor_uid = cursor
        if batch and cursor < batch[-1]:
            self.blocked = True

    def _store(
        self, items: list[mailstore.Incoming], batch: list[int], done: set[int]
    ) -> mailstore.BatchResult:
        """Write the batch and advance the cursor as far as it is done."""
        cursor = self._cursor_after(batch, done)
        try:
            result = self._apply(items, cursor)
        except (OperationalError, DatabaseUnavailable) as exc:
            # Locked or unreachable database: not the message's fault, retry the pass later.
            raise errors.StorageUnavailable(type(exc).__name__) from exc
        except (SQLAlchemyError, LookupError, ValueError) as exc:
            log.warning(
                "account %s %s: batch write failed (%s); storing one by one", self.account.id, self.name, exc
            )
        else:
            self._moved_to(batch, cursor)
            return result
        # One message broke the batch (or another worker stored the same Message-ID first):
        # store each in its own transaction and count failures towards quarantine.
        total = mailstore.BatchResult()
        failures: dict[int, str] = {}
        for item in items:
            try:
                result = self._apply([item], None)
            except (OperationalError, DatabaseUnavailable) as exc:
                raise errors.StorageUnavailable(type(exc).__name__) from exc
            except (SQLAlchemyError, LookupError, ValueError) as exc:
                failures[item.location.uid] = f"could not be stored ({type(exc).__name__})"
                continue
            total.new_messages += result.new_messages
            total.new_locations += result.new_locations
            total.skipped += result.skipped
            for reason, count in result.skipped_reasons.items():
                total.skipped_reasons[reason] = total.skipped_reasons.get(reason, 0) + count
            total.malformed += result.malformed
            total.stored_message_pks.extend(result.stored_message_pks)
        quarantined = self._record_failures(failures)
        cursor = self._cursor_after(batch, (done - set(failures)) | quarantined)
        self._apply([], cursor)
        self._moved_to(batch, cursor)
        return total

    # -----------------------------------------------------------------------------------------
    def _notice_expunged(self, server_count: int | None) -> int | None:
        with self._session() as session:
            ours = mailstore.live_uids(
                session=session, folder_id=self.folder_id, uidvalidity=self.uidvalidity
            )
        # Equal counts prove nothing was removed only when we hold every message of the folder:
        # not with a history window (older mail was left out) nor with a UID still to retry.
        complete = self.account.sync_since is None and not self.blocked
        if complete and server_count is not None and server_count == len(ours):
            return server_count
        on_server = set(self.conn.all_uids())
        gone = ours - on_server
        if gone:
            with self._session() as session:
                self.summary.expunged += mailstore.mark_expunged(
                    session=session, folder_id=self.folder_id, uidvalidity=self.uidvalidity, uids=gone
                )
        return len(on_server)

    def _refresh_flags(self, since: int | None, full_scan: bool) -> None:
        if since is None and not full_scan:
            return
        if not full_scan and not self.conn.has("CONDSTORE"):
            return
        changed = self.conn.all_flags() if full_scan else self.conn.changed_flags(since or 0)
        if changed:
            with self._session() as session:
                mailstore.update_flags(
                    session=session, folder_id=self.folder_id, uidvalidity=self.uidvalidity, flags=changed
                )
