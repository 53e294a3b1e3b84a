"""Sync state around the mail: who syncs an account (leases), where each folder stands
(cursors), what each pass did (runs), and how the account is doing (health, backoff).

Every function works in the caller's transaction. Leases are compare-and-set updates that behave
the same on SQLite and PostgreSQL, so two workers never sync one account at once. A folder's
state is explicit and restartable: a restart resumes from the saved cursor, and a folder whose
UIDVALIDITY keeps changing is paused until an admin resets it (`reset_folder`).

Problems are stored as a code and its parameters (`core.problems`); which `AccountStatus` a code
means is decided here (`STATUS_BY_CODE`), so `sync` raises codes without knowing database enums.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import delete, or_, update
from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import NotFound
from core.secrets import SecretBox, SecretKeyError
from core.types import AccountKind, AccountStatus, FolderRole, FolderSyncStatus, RunStatus, utcnow
from crm import access
from crm.mailstore import BatchResult
from crm.models import FetchFailure, FolderState, ImapUid, MailAccount, OAuthConsent, OAuthGrant, SyncRun
from crm.outbound import notifications


@dataclass(frozen=True, slots=True)
class FolderCursor:
    """Plain copy of a folder's saved state, for the pure planner."""

    folder_id: int
    name: str
    uidvalidity: int | None
    highest_uid: int
    uidnext: int | None
    highestmodseq: int | None
    messages: int | None
    uidvalidity_resyncs: int
    unstable: bool
    initial_sync_done: bool


# ---------------------------------------------------------------------------------------------
# Leases


def claim_account(*, session: Session, account_id: int, owner: str, lease_seconds: int) -> bool:
    """Compare-and-set claim: True when this worker now holds the account. Works the same on
    SQLite and PostgreSQL, so several workers never sync one account at once."""
    now = utcnow()
    result = session.execute(
        update(MailAccount)
        .where(col(MailAccount.id) == account_id)
        .where(
            or_(
                col(MailAccount.lease_owner).is_(None),
                col(MailAccount.lease_owner) == owner,
                col(MailAccount.lease_expires_at) < now,
            )
        )
        .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def break_lease(*, session: Session, account_id: int, owner: str) -> None:
    """Clear a dead worker's claim and close its run as interrupted."""
    session.execute(
        update(MailAccount)
        .where(col(MailAccount.id) == account_id, col(MailAccount.lease_owner) == owner)
        .values(lease_owner=None, lease_expires_at=None)
    )
    session.execute(
        update(SyncRun)
        .where(col(SyncRun.account_id) == account_id, col(SyncRun.status) == RunStatus.RUNNING)
        .values(status=RunStatus.INTERRUPTED, ended_at=utcnow())
    )


def renew_lease(*, session: Session, account_id: int, owner: str, lease_seconds: int) -> bool:
    """Extend our claim; False when the account is no longer ours."""
    result = session.execute(
        update(MailAccount)
        .where(col(MailAccount.id) == account_id, col(MailAccount.lease_owner) == owner)
        .values(lease_expires_at=utcnow() + timedelta(seconds=lease_seconds))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def release_account(*, session: Session, account_id: int, owner: str) -> None:
    session.execute(
        update(MailAccount)
        .where(col(MailAccount.id) == account_id, col(MailAccount.lease_owner) == owner)
        .values(lease_owner=None, lease_expires_at=None)
    )


# ---------------------------------------------------------------------------------------------
# Runs


def start_run(*, session: Session, account_id: int) -> SyncRun:
    run = SyncRun(account_id=account_id)
    session.add(run)
    session.flush()
    return run


def finish_run(
    *,
    session: Session,
    run_id: int,
    status: RunStatus,
    counts: BatchResult,
    quarantined: int,
    expunged: int,
    errors: Sequence[str],
    error_code: str | None = None,
) -> SyncRun:
    run = session.get_one(SyncRun, run_id)
    run.ended_at = utcnow()
    run.status = status
    run.new_messages = counts.new_messages
    run.new_locations = counts.new_locations
    run.skipped = counts.skipped
    run.malformed = counts.malformed
    run.quarantined = quarantined
    run.expunged = expunged
    run.errors = list(errors)
    run.error_status = status_for(error_code) if error_code else None
    session.add(run)
    return run


# ---------------------------------------------------------------------------------------------
# Folder cursors


def _cursor(folder: FolderState) -> FolderCursor:
    assert folder.id is not None
    return FolderCursor(
        folder_id=folder.id,
        name=folder.name,
        uidvalidity=folder.uidvalidity,
        highest_uid=folder.highest_uid,
        uidnext=folder.uidnext,
        highestmodseq=folder.highestmodseq,
        messages=folder.messages,
        uidvalidity_resyncs=folder.uidvalidity_resyncs,
        unstable=folder.status is FolderSyncStatus.UIDVALIDITY_UNSTABLE,
        initial_sync_done=folder.initial_sync_done,
    )


def folder_cursor(*, session: Session, account_id: int, role: FolderRole, name: str) -> FolderCursor:
    """The saved state of (account, role), created on first use. When the role now maps to
    another server folder (Sent found under another name), its UIDs mean nothing here, even if
    the two folders happen to share a UIDVALIDITY: the cursor starts over and the first pass
    re-keys known mail by Message-ID instead of importing it again."""
    folder = session.exec(
        select(FolderState).where(FolderState.account_id == account_id, FolderState.role == role)
    ).first()
    if folder is None:
        folder = FolderState(account_id=account_id, role=role, name=name)
        session.add(folder)
        session.flush()
    elif folder.name != name:
        session.execute(delete(ImapUid).where(col(ImapUid.folder_id) == folder.id))
        session.execute(delete(FetchFailure).where(col(FetchFailure.folder_id) == folder.id))
        folder.name = name
        folder.uidvalidity = None
        folder.highest_uid = 0
        folder.uidnext = None
        folder.messages = None
        folder.highestmodseq = None
        folder.initial_sync_done = False
        session.add(folder)
        session.flush()
    return _cursor(folder)


def begin_initial(*, session: Session, folder_id: int, uidvalidity: int) -> None:
    folder = session.get_one(FolderState, folder_id)
    folder.uidvalidity = uidvalidity
    folder.highest_uid = 0
    session.add(folder)


def flag_unstable(*, session: Session, folder_id: int) -> None:
    """UIDVALIDITY changed too often: stop resyncing (a server that keeps doing this would make
    us loop and download the folder again and again) until an admin resets the folder."""
    folder = session.get_one(FolderState, folder_id)
    folder.status = FolderSyncStatus.UIDVALIDITY_UNSTABLE
    session.add(folder)


def begin_resync(*, session: Session, folder_id: int, uidvalidity: int) -> None:
    """UIDVALIDITY changed: every UID we knew in this folder is void (RFC 3501 2.3.1.1). Drop the
    folder's IMAP bookkeeping and restart its cursor; messages, threads and links stay, and the
    refetch re-keys them by Message-ID instead of importing them again."""
    folder = session.get_one(FolderState, folder_id)
    session.execute(delete(ImapUid).where(col(ImapUid.folder_id) == folder_id))
    session.execute(delete(FetchFailure).where(col(FetchFailure.folder_id) == folder_id))
    folder.uidvalidity = uidvalidity
    folder.uidvalidity_resyncs += 1
    folder.highest_uid = 0
    folder.uidnext = None
    folder.messages = None
    folder.highestmodseq = None
    folder.initial_sync_done = False
    session.add(folder)


@dataclass(frozen=True, slots=True)
class FolderReset:
    """What `reset_folder` changed (a view: no row leaves this module)."""

    account_id: int
    role: FolderRole
    name: str
    status: FolderSyncStatus


def reset_folder(*, session: Session, caller: Caller, account_id: int, role: FolderRole) -> FolderReset:
    """Admin action after an unstable UIDVALIDITY was looked into: allow resyncs again.

    The account is resolved for the caller (missing and not visible alike); a folder never
    synced yet has no state to reset (`folder_not_found`)."""
    access.require_admin(caller, "reset a folder")
    account = access.get_account(session, caller, account_id)
    folder = session.exec(
        select(FolderState).where(FolderState.account_id == account.id, FolderState.role == role)
    ).first()
    if folder is None:
        raise NotFound(
            "folder_not_found",
            f"Account {account_id} has no {role.value} folder state yet.",
            what="folder",
            account_id=account_id,
            role=role,
        )
    folder.status = FolderSyncStatus.OK
    folder.uidvalidity_resyncs = 0
    folder.last_error_code, folder.last_error_params = None, {}
    session.add(folder)
    return FolderReset(account_id=account_id, role=role, name=folder.name, status=folder.status)


def finish_folder_pass(
    *,
    session: Session,
    folder_id: int,
    uidnext: int | None,
    messages: int | None,
    highestmodseq: int | None,
    error_code: str | None = None,
    error_params: Mapping[str, Any] | None = None,
    completed: bool = True,
    pending: bool = False,
    initial_done: bool = True,
) -> None:
    """Save what the server told us once a pass is over. Values a lying server may send (0,
    missing, or a HIGHESTMODSEQ going backwards) never replace good saved ones. `pending`: some
    message below UIDNEXT is still to be retried, so the "unchanged folder" shortcut must not
    apply next time (UIDNEXT is forgotten)."""
    folder = session.get_one(FolderState, folder_id)
    now = utcnow()
    folder.last_synced_at = now
    folder.last_error_code, folder.last_error_params = error_code, dict(error_params or {})
    if completed:
        folder.last_success_at = now
        folder.initial_sync_done = folder.initial_sync_done or initial_done
        if pending:
            folder.uidnext = None
        elif uidnext and uidnext > 0 and (folder.uidnext is None or uidnext >= folder.uidnext):
            folder.uidnext = uidnext
        if messages is not None and messages >= 0:
            folder.messages = messages
        if (
            highestmodseq
            and highestmodseq > 0
            and (folder.highestmodseq is None or highestmodseq >= folder.highestmodseq)
        ):
            folder.highestmodseq = highestmodseq
    session.add(folder)


# ---------------------------------------------------------------------------------------------
# Account health after a run


def backoff_delay(failures: int) -> timedelta:
    """1, 2, 4 ... minutes, capped at an hour: retry soon after a blip, never hammer a server."""
    return timedelta(seconds=min(60 * 2 ** max(failures - 1, 0), 3600))


def record_account_success(*, session: Session, account_id: int) -> None:

    account = session.get_one(MailAccount, account_id)
    account.status = AccountStatus.OK
    account.last_error_code, account.last_error_params = None, {}
    account.last_success_at = utcnow()
    account.consecutive_failures = 0
    account.auth_failures = 0
    account.next_attempt_at = None
    session.add(account)


# Which status an account shows for a stored problem code (`core.problems`). `sync` raises the
# codes; the account's health is decided here, so protocol errors never depend on a database enum.
STATUS_BY_CODE: dict[str, AccountStatus] = {
    "auth_failed": AccountStatus.AUTH_FAILED,
    "auth_stopped": AccountStatus.NEEDS_CREDENTIALS,
    # Not "needs credentials": restoring the old key resumes the account, passwords unchanged.
    "credentials_unreadable": AccountStatus.KEY_MISMATCH,
    "certificate_untrusted": AccountStatus.TLS_ERROR,
    "tls_failed": AccountStatus.TLS_ERROR,
    "smtp_tls_failed": AccountStatus.TLS_ERROR,
    "host_not_found": AccountStatus.HOST_NOT_FOUND,
    "host_blocked": AccountStatus.HOST_NOT_FOUND,
    "connection_refused": AccountStatus.CONNECTION_FAILED,
    "connection_timed_out": AccountStatus.CONNECTION_FAILED,
    "connection_lost": AccountStatus.CONNECTION_FAILED,
    "folder_missing": AccountStatus.FOLDER_MISSING,
    "inbox_missing": AccountStatus.FOLDER_MISSING,
    "sent_folder_missing": AccountStatus.FOLDER_MISSING,
    # OAuth2: the refresh token is dead; nothing is tried until the mailbox is connected again.
    "oauth_reconnect_needed": AccountStatus.NEEDS_RECONNECT,
    "oauth_provider_unavailable": AccountStatus.CONNECTION_FAILED,
    "oauth_refused": AccountStatus.AUTH_FAILED,
}


def status_for(code: str, params: Mapping[str, Any] | None = None) -> AccountStatus:
    """The account status of a problem code; several folder problems show the first one's."""
    if code == "folder_problems":
        first = next(iter((params or {}).get("problems") or ()), None)
        return status_for(str(first.get("code"))) if isinstance(first, Mapping) else AccountStatus.ERROR
    return STATUS_BY_CODE.get(code, AccountStatus.ERROR)


def record_account_failure(
    *,
    session: Session,
    account_id: int,
    code: str,
    params: Mapping[str, Any],
    max_auth_failures: int,
    retry_later: bool = True,
) -> None:
    """Save the problem the user must see (code + params), and when to try again. After
    `max_auth_failures` refused logins in a row the account waits for new credentials
    (`auth_stopped`): retrying a wrong password gets accounts locked by providers."""

    account = session.get_one(MailAccount, account_id)
    now = utcnow()
    status = status_for(code, params)
    if not retry_later:
        account.status = status
        account.last_error_code, account.last_error_params = code, dict(params)
        account.last_error_at = now
        account.last_success_at = now
        account.consecutive_failures = 0
        account.next_attempt_at = None
        session.add(account)
        return
    account.consecutive_failures += 1
    account.last_error_code, account.last_error_params = code, dict(params)
    account.last_error_at = now
    account.status = status
    if code == "auth_failed":
        account.auth_failures += 1
        if account.auth_failures >= max_auth_failures:
            if account.auth_failures == max_auth_failures:
                # Once, when it stops: the admins are told by mail (issue 10, item 8).
                notifications.on_needs_credentials(
                    session=session,
                    tenant_id=account.tenant_id,
                    account_id=account_id,
                    account_email=account.email,
                )
            account.status = AccountStatus.NEEDS_CREDENTIALS
            account.last_error_code = "auth_stopped"
            account.last_error_params = {**params, "failures": account.auth_failures}
    else:
        account.auth_failures = 0
    account.next_attempt_at = now + backoff_delay(account.consecutive_failures)
    session.add(account)


def any_stored_secrets(*, session: Session) -> bool:
    """Does the database hold encrypted passwords (which a new key could never decrypt)?"""
    return session.exec(select(MailAccount.id).limit(1)).first() is not None


def reencrypt_secrets(*, session: Session, old: SecretBox, new: SecretBox) -> int:
    """Every stored password (IMAP and SMTP) decrypted with `old` and encrypted with `new`, in
    the caller's transaction: all or nothing. A secret that `old` cannot decrypt stops it
    (code `secret_undecryptable`, with the accounts): rotating would lose it for good."""
    rows = list(session.exec(select(MailAccount).order_by(col(MailAccount.id))).all())
    unreadable: list[int] = []
    for account in rows:
        for token in (account.secret_encrypted, account.smtp_secret_encrypted):
            if token and not old.can_decrypt(token):
                unreadable.append(account.id or 0)
    if unreadable:
        ids = sorted(set(unreadable))
        raise SecretKeyError(
            "secret_undecryptable",
            f"The passwords of accounts {', '.join(map(str, ids))} cannot be decrypted with the "
            "current key, so the key was not rotated. Restore their key or enter their passwords "
            "again first.",
            account_ids=ids,
        )
    for account in rows:
        account.secret_encrypted = new.encrypt(old.decrypt(account.secret_encrypted))
        if account.smtp_secret_encrypted:
            account.smtp_secret_encrypted = new.encrypt(old.decrypt(account.smtp_secret_encrypted))
        session.add(account)
    # OAuth tokens are secrets like passwords: the same key, rotated with them. An undecryptable
    # token is dropped rather than blocking the rotation: its account just needs reconnecting.
    for grant in session.exec(select(OAuthGrant)).all():
        for name in ("refresh_token_encrypted", "access_token_encrypted"):
            value = getattr(grant, name)
            if value:
                setattr(grant, name, new.encrypt(old.decrypt(value)) if old.can_decrypt(value) else None)
        grant.version += 1  # a refresh in flight must not store tokens under the old key
        session.add(grant)
    session.execute(delete(OAuthConsent))  # consents in flight: a few minutes' worth, started again
    session.flush()
    return len(rows)


def syncable_account_ids(*, session: Session) -> list[tuple[int, int]]:
    """(account id, interval seconds) of every active account, for the scheduler. Forwarding
    accounts have no server: their mail arrives over SMTP (sync/inbound.py)."""
    rows = session.exec(
        select(MailAccount.id, MailAccount.sync_interval_seconds)
        .where(MailAccount.active, MailAccount.kind == AccountKind.IMAP)
        .order_by(col(MailAccount.id))
    ).all()
    return [(int(i), int(s)) for i, s in rows if i is not None]
