"""One account's pass: claim it, connect, sync its folders, record how it went.

No scheduling here (see scheduler.py). The account is claimed with a lease (`crm.sync_state`),
so two workers never sync it at once; a worker on this machine that died mid-sync is taken over
at once. A connection or login problem fails the pass and backs the account off; a problem
confined to one folder (no Sent folder, an unstable UIDVALIDITY) is shown on the account while
the other folder keeps syncing. Errors are stored as code + params (`core.problems`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Engine

from core.connection import Credential
from core.db import DatabaseUnavailable, get_engine, session_scope
from core.secrets import SecretBox, SecretKeyError
from core.settings import Settings, get_settings
from core.types import AccountKind, AccountStatus, RunStatus, utcnow
from crm import mailstore, sync_state
from crm.models import MailAccount
from sync import errors, imap, oauth_tokens
from sync.folder_pass import FolderPass
from sync.folders import pick_folders
from sync.pipeline import ParsePool
from sync.types import FolderRole

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, FolderRole, int, int], None]  # account id, role, done, total
BatchCallback = Callable[[int, list[int]], None]  # tenant id, new message pks


@dataclass(frozen=True, slots=True)
class SyncProblem:
    """A sync error as plain values: its code and fields (`core.problems`), its sentence, and
    the folder it is confined to (None: the account, or its folders as a whole)."""

    folder: str | None
    code: str
    params: dict[str, Any]
    message: str

    @classmethod
    def of(cls, folder: str | None, error: errors.SyncError) -> SyncProblem:
        return cls(folder=folder, code=error.code, params=dict(error.fields), message=error.message)


def _folder_problems(found: Sequence[SyncProblem]) -> tuple[str, dict[str, Any]]:
    """What the account stores for its folder problems: the one problem as it is, several as
    `folder_problems` (rendered one after the other, each with its folder)."""
    if len(found) == 1 and found[0].folder is None:
        return found[0].code, found[0].params
    return "folder_problems", {
        "problems": [{"folder": p.folder, "code": p.code, "params": p.params} for p in found]
    }


@dataclass(slots=True)
class SyncSummary:
    account_id: int
    email: str = ""
    status: str = "ok"  # ok | partial | failed | interrupted | skipped
    new_messages: int = 0
    new_locations: int = 0
    skipped: int = 0
    skipped_reasons: dict[str, int] = field(default_factory=dict)  # e.g. too_many_recipients: 3
    malformed: int = 0
    quarantined: int = 0
    expunged: int = 0
    errors: list[str] = field(default_factory=list)
    skip_reason: str = ""
    folders: dict[str, str] = field(default_factory=dict)
    # Problems confined to one folder: the account still synced, no backoff.
    folder_problems: list[SyncProblem] = field(default_factory=list)
    # What failed the whole pass (status "failed"), so a face can add its own hint by code.
    failure: SyncProblem | None = None

    def add(self, result: mailstore.BatchResult) -> None:
        self.new_messages += result.new_messages
        self.new_locations += result.new_locations
        self.skipped += result.skipped
        for reason, count in result.skipped_reasons.items():
            self.skipped_reasons[reason] = self.skipped_reasons.get(reason, 0) + count
        self.malformed += result.malformed


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """What a pass needs from the account row, copied out so no session outlives the read."""

    id: int
    tenant_id: int
    email: str
    endpoint: imap.ImapEndpoint
    secret_encrypted: str
    sync_since: datetime | None
    oauth: bool = False  # logs in with an OAuth2 access token (XOAUTH2) instead of a password


def _holder_is_dead(owner: str) -> bool:
    """True when a lease owner ("host:pid:thread") is a process of this host that is gone."""
    host, _, rest = owner.partition(":")
    pid_text = rest.partition(":")[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _secret_box(db: Engine, settings: Settings) -> SecretBox:
    """The key that decrypts the stored passwords. A key file that disappeared while the
    database holds encrypted passwords is refused: a new key would decrypt none of them and
    hide the real problem (a lost or unmounted file) behind every account failing."""
    path = settings.resolved_key_file
    if not settings.secret_key and not path.exists():
        with session_scope(db) as session:
            if sync_state.any_stored_secrets(session=session):
                raise SecretKeyError(
                    "secret_key_missing",
                    f"The encryption key file {str(path)!r} is missing although the database holds "
                    "encrypted passwords. Restore the key file (or give the key) instead of starting "
                    "with a new key, which could decrypt none of them.",
                    path=str(path),
                )
    return SecretBox.from_settings(settings)


class SyncEngine:
    def __init__(
        self,
        *,
        db: Engine | None = None,
        settings: Settings | None = None,
        worker_id: str | None = None,
        stop_event: threading.Event | None = None,
        progress: ProgressCallback | None = None,
        after_batch: Sequence[BatchCallback] = (),
    ) -> None:
        self.db = db or get_engine()
        self.settings = settings or get_settings()
        self.worker_id = worker_id or f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"
        self.stop_event = stop_event or threading.Event()
        self.progress = progress
        self.after_batch = list(after_batch)
        self._box = _secret_box(self.db, self.settings)
        self.tokens = oauth_tokens.TokenSource(self.db, self._box, self.settings, owner=self.worker_id)
        self.parser = ParsePool(self.settings)  # scheduler threads share one engine and its pool

    def close(self) -> None:
        self.parser.close()

    def __enter__(self) -> SyncEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -----------------------------------------------------------------------------------------
    def sync_account(self, account_id: int, *, ignore_backoff: bool = False) -> SyncSummary:
        """One pass over one account; never raises for a database that is busy or unreachable
        (a transient condition of this account's pass: the next account is still tried)."""
        try:
            return self._sync_account(account_id, ignore_backoff=ignore_backoff)
        except DatabaseUnavailable as exc:
            log.warning("account %s: database unavailable (%s)", account_id, exc.code)
            problem = errors.StorageUnavailable(exc.fields.get("reason") or exc.code)
            summary = SyncSummary(account_id=account_id, status="failed", errors=[str(problem)])
            summary.failure = SyncProblem.of(None, problem)
            return summary

    def _sync_account(self, account_id: int, *, ignore_backoff: bool) -> SyncSummary:
        summary = SyncSummary(account_id=account_id)
        with session_scope(self.db) as session:
            row = session.get(MailAccount, account_id)
            if row is None:
                summary.status, summary.skip_reason = "skipped", "no such account"
                return summary
            summary.email = row.email
            reason = self._why_not(row, ignore_backoff)
            if reason:
                summary.status, summary.skip_reason = "skipped", reason
                return summary
            if row.lease_owner and row.lease_owner != self.worker_id and _holder_is_dead(row.lease_owner):
                # A worker on this machine was killed mid-sync: take over at once instead of
                # waiting for its lease to expire. Its cursor is at the last committed batch.
                sync_state.break_lease(session=session, account_id=account_id, owner=row.lease_owner)
            if not sync_state.claim_account(
                session=session,
                account_id=account_id,
                owner=self.worker_id,
                lease_seconds=self.settings.lease_seconds,
            ):
                summary.status, summary.skip_reason = "skipped", "another worker is syncing this account"
                return summary
            run = sync_state.start_run(session=session, account_id=account_id)
            assert run.id is not None and row.id is not None
            run_id = run.id
            account = AccountInfo(
                id=row.id,
                tenant_id=row.tenant_id,
                email=row.email,
                endpoint=imap.ImapEndpoint(
                    host=row.imap_host,
                    port=row.imap_port,
                    security=row.imap_security,
                    username=row.username,
                    ca_file=row.ca_file,
                    connect_timeout=self.settings.connect_timeout_seconds,
                    read_timeout=self.settings.read_timeout_seconds,
                    allow_private_hosts=self.settings.allow_private_hosts,
                    command_deadline=self.settings.command_deadline_seconds,
                    min_bytes_per_second=self.settings.min_bytes_per_second,
                ),
                secret_encrypted=row.secret_encrypted,
                sync_since=row.sync_since,
                oauth=oauth_tokens.is_oauth(self.db, row.id),
            )
            identities = mailstore.tenant_identities(session=session, tenant_id=row.tenant_id)

        failure: errors.SyncError | None = None
        try:
            self._sync_folders(account, identities, summary)
        except errors.Interrupted:
            pass  # the worker is stopping: the pass ends as interrupted, nothing to back off
        except errors.SyncError as exc:
            failure = exc
            summary.errors.append(str(exc))
        except DatabaseUnavailable as exc:
            failure = errors.StorageUnavailable(exc.fields.get("reason") or exc.code)
            summary.errors.append(str(failure))
        except Exception as exc:  # one account's bug must not stop the others
            log.exception("unexpected error while syncing account %s", account_id)
            failure = errors.UnexpectedError(type(exc).__name__)
            summary.errors.append(str(failure))
        if failure is not None:
            summary.failure = SyncProblem.of(None, failure)
        self._finish(account, run_id, summary, failure)
        return summary

    def _why_not(self, row: MailAccount, ignore_backoff: bool) -> str:
        if not row.active:
            return "account is deactivated"
        if row.kind is AccountKind.FORWARDING:
            return "a forwarding address: its mail arrives over SMTP, there is nothing to sync"
        if row.status is AccountStatus.NEEDS_CREDENTIALS:
            return "account needs new credentials"
        if row.status is AccountStatus.NEEDS_RECONNECT:
            return "account needs to be reconnected (OAuth)"
        if not ignore_backoff and row.next_attempt_at and row.next_attempt_at > utcnow():
            return f"backing off after errors until {row.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC"
        return ""

    def _finish(
        self, account: AccountInfo, run_id: int, summary: SyncSummary, failure: errors.SyncError | None
    ) -> None:
        if failure is not None:
            summary.status = "failed"
        elif self.stop_event.is_set():
            summary.status = "interrupted"
        elif summary.errors:
            summary.status = "partial"
        run_status = {
            "failed": RunStatus.FAILED,
            "interrupted": RunStatus.INTERRUPTED,
            "partial": RunStatus.PARTIAL,
        }.get(summary.status, RunStatus.OK)
        with session_scope(self.db) as session:
            counts = mailstore.BatchResult(
                new_messages=summary.new_messages,
                new_locations=summary.new_locations,
                skipped=summary.skipped,
                malformed=summary.malformed,
            )
            sync_state.finish_run(
                session=session,
                run_id=run_id,
                status=run_status,
                counts=counts,
                quarantined=summary.quarantined,
                expunged=summary.expunged,
                errors=summary.errors,
                error_code=failure.code if failure else None,
            )
            if isinstance(failure, errors.LeaseLost):
                pass  # the worker that took over reports the account's state
            elif failure is not None:
                sync_state.record_account_failure(
                    session=session,
                    account_id=account.id,
                    code=failure.code,
                    params=failure.params,
                    max_auth_failures=self.settings.max_auth_failures,
                )
            elif summary.folder_problems:
                # The connection worked but a folder had a problem (e.g. no Sent folder): show
                # it on the account, without backing off the folders that do sync.
                code, params = _folder_problems(summary.folder_problems)
                sync_state.record_account_failure(
                    session=session,
                    account_id=account.id,
                    code=code,
                    params=params,
                    max_auth_failures=self.settings.max_auth_failures,
                    retry_later=False,
                )
            else:
                sync_state.record_account_success(session=session, account_id=account.id)
            sync_state.release_account(session=session, account_id=account.id, owner=self.worker_id)

    # -----------------------------------------------------------------------------------------
    def _sync_folders(self, account: AccountInfo, identities: frozenset[str], summary: SyncSummary) -> None:
        deadline = time.monotonic() + self.settings.pass_deadline_seconds

        def login(credential: Credential) -> imap.ImapSession:
            # Reconnects within the pass share its deadline.
            return imap.connect(
                account.endpoint,
                credential,
                stop=self.stop_event,
                pass_seconds=max(deadline - time.monotonic(), 0.001),
            )

        def connect() -> imap.ImapSession:
            # An OAuth account asks for its token at every (re)connect: one that expired
            # mid-pass is refreshed before the next login, and one refused is refreshed once.
            return oauth_tokens.with_credential(
                self.tokens, account.id, account.oauth, account.secret_encrypted, login
            )

        conn = connect()
        try:
            folders = pick_folders(conn.list_folders())
            summary.folders = {role.value: name for role, name in folders.items()}
            if FolderRole.SENT not in folders:
                missing = errors.SentFolderMissing()
                summary.folder_problems.append(SyncProblem.of(None, missing))
                summary.errors.append(str(missing))
            for role in (FolderRole.INBOX, FolderRole.SENT):
                if role not in folders or self.stop_event.is_set():
                    continue
                folder_pass = FolderPass(
                    self,
                    conn,
                    account,
                    identities,
                    role,
                    folders[role],
                    summary,
                    reconnect=connect,
                )
                try:
                    folder_pass.run()
                except (errors.ProtocolError, errors.FolderMissing, errors.UidValidityUnstable) as exc:
                    # A folder-level problem: record it and go on with the other folder.
                    self._folder_failed(account, role, folders[role], summary, exc)
                except (errors.SyncError, DatabaseUnavailable):
                    raise  # the connection, the credentials or the database: the whole pass
                except Exception as exc:  # a bug met in one folder never skips the other one
                    log.exception("unexpected error while syncing account %s folder %s", account.id, role)
                    unexpected = errors.FolderUnexpected(type(exc).__name__, folders[role])
                    self._folder_failed(account, role, folders[role], summary, unexpected)
                    # The connection may be mid-response: the next folder gets a fresh one.
                    folder_pass.conn.logout()
                    folder_pass.conn = connect()
                finally:
                    conn = folder_pass.conn  # the pass may have reconnected
        finally:
            conn.logout()

    def _folder_failed(
        self, account: AccountInfo, role: FolderRole, name: str, summary: SyncSummary, exc: errors.SyncError
    ) -> None:
        summary.folder_problems.append(SyncProblem.of(name, exc))
        summary.errors.append(f"{name}: {exc}")
        with session_scope(self.db) as session:
            cursor = sync_state.folder_cursor(session=session, account_id=account.id, role=role, name=name)
            sync_state.finish_folder_pass(
                session=session,
                folder_id=cursor.folder_id,
                uidnext=None,
                messages=None,
                highestmodseq=None,
                error_code=exc.code,
                error_params=exc.params,
                completed=False,
            )
