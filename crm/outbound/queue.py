"""The durable send queue: its state machine, the workers' claims, undo, and the mail log.

States (`OutboundState`)::

    queued --(due, claimed)--> sending --(250)--> sent
       |                         |--(4xx, timeout, refused connection)--> deferred --(due)--> sending
       |                         |--(5xx, or attempts exhausted)--> failed
       |--(due, but the account's daily limit is reached)--> waiting_for_limit --(due)--> sending
       `--(cancel before the claim: undo, or a send-later mail)--> cancelled

The daily limit (`crm.outbound.limits`) is decided at the claim, under the account row's lock.

A worker claims one row at a time with a compare-and-set (state and due time in the WHERE), under
a lease, so two workers sharing a database never send the same row. Each step commits on its own:
no transaction stays open while the SMTP server is talked to.

Never twice, never lost: what happens after a crash (kill -9) of a worker in `sending`
    The worker records a `phase` before each step that matters: `claimed` (nothing handed to the
    server yet), then `data` committed just before the DATA command. When a lease expires:

    * phase `claimed`: the server never saw the message -> `deferred`, due at once; sent again.
    * phase `data`: the body may have been accepted (a crash between the server's 250 and our
      commit is indistinguishable from one while the body was on the wire). Sending again could
      deliver twice, which SMTP cannot undo; not sending could lose it silently. We choose
      neither silently: the row becomes `failed` with code `send_uncertain`, kept whole (the
      message and its Message-ID) and shown in the mail log, so a person decides after checking
      the recipient's side. The window is a few round trips wide (the body transfer and one
      reply), so this is rare; it is the documented at-most-once choice.

Retries: 4xx replies, timeouts and refused connections back off (1, 2, 4, ... minutes, at most
an hour) for up to `MAX_ATTEMPTS`; 5xx replies are final at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import Conflict, not_found
from core.types import AccountKind, FolderRole, Security, utcnow
from crm import access
from crm.models import (
    FolderState,
    MailAccount,
    MailKind,
    Message,
    OutboundAccount,
    OutboundMail,
    OutboundState,
    SendPhase,
)
from crm.outbound import limits
from crm.outbound.views import OutboundView, outbound_view

MAX_ATTEMPTS = 8
BASE_BACKOFF = timedelta(minutes=1)
MAX_BACKOFF = timedelta(hours=1)
MAX_RESPONSE_CHARS = 500
_DUE = (OutboundState.QUEUED, OutboundState.DEFERRED, OutboundState.WAITING_LIMIT)


@dataclass(frozen=True, slots=True)
class SendJob:
    """A claimed mail and where it goes, in plain values for the worker (no row, no session)."""

    id: int
    tenant_id: int
    account_id: int | None  # None: system mail, sent through the deployment's SMTP (settings)
    message_id: str
    from_email: str
    recipients: tuple[str, ...]
    bcc: tuple[str, ...]
    raw: bytes
    attempts: int
    smtp_host: str | None
    smtp_port: int | None
    smtp_security: Security | None
    smtp_username: str
    smtp_secret_encrypted: str
    imap_host: str
    imap_port: int
    imap_security: Security
    imap_username: str
    imap_secret_encrypted: str
    ca_file: str | None
    server_saves_sent: bool
    sent_folder_id: int | None
    sent_folder: str | None
    # A forwarding address has no IMAP server: its sent copy is stored, never appended (0020).
    virtual_sent: bool = False


def _clean(reply: str) -> str:
    """A server's answer for the mail log: printable, one line, bounded."""
    return "".join(ch if ch.isprintable() else " " for ch in reply)[:MAX_RESPONSE_CHARS].strip()


def recover_expired(*, session: Session, now: datetime | None = None) -> int:
    """Rows whose worker died in `sending` (lease expired): decided by their phase (module doc)."""
    now = now or utcnow()
    expired = (
        col(OutboundMail.state) == OutboundState.SENDING,
        col(OutboundMail.lease_expires_at) < now,
    )
    retried = session.execute(
        update(OutboundMail)
        .where(*expired, or_(col(OutboundMail.phase).is_(None), col(OutboundMail.phase) == SendPhase.CLAIMED))
        .values(
            state=OutboundState.DEFERRED,
            lease_owner=None,
            lease_expires_at=None,
            next_attempt_at=now,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    uncertain = session.execute(
        update(OutboundMail)
        .where(*expired, col(OutboundMail.phase) == SendPhase.DATA)
        .values(
            state=OutboundState.FAILED,
            error_code="send_uncertain",
            lease_owner=None,
            lease_expires_at=None,
            next_attempt_at=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    return int(getattr(retried, "rowcount", 0) or 0) + int(getattr(uncertain, "rowcount", 0) or 0)


def leases_held(*, session: Session) -> list[tuple[int, str]]:
    """(row, owner) of every mail a worker is sending or filing right now."""
    rows = session.exec(
        select(OutboundMail.id, OutboundMail.lease_owner).where(
            col(OutboundMail.state).in_([OutboundState.SENDING, OutboundState.SENT]),
            col(OutboundMail.lease_owner).is_not(None),
        )
    ).all()
    return [(i, o) for i, o in rows if i is not None and o]


def break_lease(*, session: Session, outbound_id: int, owner: str, now: datetime | None = None) -> None:
    """End the lease of a worker known to be dead (its process is gone) without waiting for it
    to expire; `recover_expired` then decides by the phase, as for any expired lease."""
    now = now or utcnow()
    session.execute(
        update(OutboundMail)
        .where(
            col(OutboundMail.id) == outbound_id,
            col(OutboundMail.lease_owner) == owner,
            col(OutboundMail.state).in_([OutboundState.SENDING, OutboundState.SENT]),
        )
        .values(lease_expires_at=now - timedelta(seconds=1))
        .execution_options(synchronize_session=False)
    )


def due_ids(*, session: Session, now: datetime | None = None, limit: int = 50) -> list[int]:
    now = now or utcnow()
    rows = session.exec(
        select(OutboundMail.id)
        .where(col(OutboundMail.state).in_(_DUE), col(OutboundMail.next_attempt_at) <= now)
        .order_by(col(OutboundMail.next_attempt_at), col(OutboundMail.id))
        .limit(limit)
    ).all()
    return [r for r in rows if r is not None]


def _job(session: Session, row: OutboundMail) -> SendJob:
    if row.account_id is None:
        # System mail: the worker takes the deployment's SMTP from its settings; never filed.
        return SendJob(
            id=row.id or 0,
            tenant_id=row.tenant_id,
            account_id=None,
            message_id=row.message_id,
            from_email=row.from_email,
            recipients=tuple(row.recipients),
            bcc=(),
            raw=row.raw,
            attempts=row.attempts,
            smtp_host=None,
            smtp_port=None,
            smtp_security=None,
            smtp_username="",
            smtp_secret_encrypted="",
            imap_host="",
            imap_port=0,
            imap_security=Security.TLS,
            imap_username="",
            imap_secret_encrypted="",
            ca_file=None,
            server_saves_sent=True,
            sent_folder_id=None,
            sent_folder=None,
        )
    account = session.get_one(MailAccount, row.account_id)
    choice = session.get(OutboundAccount, row.account_id)
    sent = session.exec(
        select(FolderState).where(
            FolderState.account_id == row.account_id, FolderState.role == FolderRole.SENT
        )
    ).first()
    return SendJob(
        id=row.id or 0,
        tenant_id=row.tenant_id,
        account_id=row.account_id,
        message_id=row.message_id,
        from_email=row.from_email,
        recipients=tuple(row.recipients),
        bcc=tuple(a["email"] for a in row.bcc_addrs),
        raw=row.raw,
        attempts=row.attempts,
        smtp_host=account.smtp_host,
        smtp_port=account.smtp_port,
        smtp_security=account.smtp_security,
        smtp_username=account.smtp_username or account.username,
        smtp_secret_encrypted=account.smtp_secret_encrypted or account.secret_encrypted,
        imap_host=account.imap_host,
        imap_port=account.imap_port,
        imap_security=account.imap_security,
        imap_username=account.username,
        imap_secret_encrypted=account.secret_encrypted,
        ca_file=account.ca_file,
        # A row born filed (system mail, test mail) is never appended to Sent.
        server_saves_sent=row.sent_folder_done or (choice.server_saves_sent if choice is not None else False),
        sent_folder_id=sent.id if sent is not None else None,
        sent_folder=sent.name if sent is not None else None,
        virtual_sent=account.kind is AccountKind.FORWARDING,
    )


def claim(
    *, session: Session, outbound_id: int, owner: str, lease_seconds: int, now: datetime | None = None
) -> SendJob | None:
    """Take one due row (compare-and-set); None when another worker or a cancel was first."""
    now = now or utcnow()
    is_due = (
        col(OutboundMail.id) == outbound_id,
        col(OutboundMail.state).in_(_DUE),
        col(OutboundMail.next_attempt_at) <= now,
    )
    found = session.exec(select(OutboundMail.account_id, OutboundMail.recipients).where(*is_due)).first()
    if found is None:
        return None
    verdict = (
        limits.Verdict(go=True)  # the deployment's SMTP: its limits are the operator's business
        if found[0] is None
        else limits.check(session, found[0], list(found[1]), now=now)
    )
    if not verdict.go:
        session.execute(
            update(OutboundMail)
            .where(*is_due)
            .values(
                state=OutboundState.FAILED if verdict.never else OutboundState.WAITING_LIMIT,
                next_attempt_at=verdict.wait_until,
                error_code="over_daily_limit" if verdict.never else None,
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        return None
    result = session.execute(
        update(OutboundMail)
        .where(*is_due)
        .values(
            state=OutboundState.SENDING,
            phase=SendPhase.CLAIMED,
            lease_owner=owner,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            attempts=col(OutboundMail.attempts) + 1,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        return None
    return _job(session, session.get_one(OutboundMail, outbound_id, populate_existing=True))


def filing_due_ids(*, session: Session, now: datetime | None = None, limit: int = 50) -> list[int]:
    """Sent mail whose filing (Sent folder, conversation) is not done and nobody is doing."""
    now = now or utcnow()
    rows = session.exec(
        select(OutboundMail.id)
        .where(
            OutboundMail.state == OutboundState.SENT,
            col(OutboundMail.sent_folder_done).is_(False),
            or_(col(OutboundMail.lease_expires_at).is_(None), col(OutboundMail.lease_expires_at) < now),
        )
        .order_by(col(OutboundMail.id))
        .limit(limit)
    ).all()
    return [r for r in rows if r is not None]


def claim_filing(
    *, session: Session, outbound_id: int, owner: str, lease_seconds: int, now: datetime | None = None
) -> SendJob | None:
    """Take over the filing of a sent mail whose worker died (or could not reach IMAP)."""
    now = now or utcnow()
    result = session.execute(
        update(OutboundMail)
        .where(
            col(OutboundMail.id) == outbound_id,
            col(OutboundMail.state) == OutboundState.SENT,
            col(OutboundMail.sent_folder_done).is_(False),
            or_(col(OutboundMail.lease_expires_at).is_(None), col(OutboundMail.lease_expires_at) < now),
        )
        .values(lease_owner=owner, lease_expires_at=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    if getattr(result, "rowcount", 0) != 1:
        return None
    return _job(session, session.get_one(OutboundMail, outbound_id, populate_existing=True))


def _owned(session: Session, outbound_id: int, owner: str) -> OutboundMail | None:
    row = session.get(OutboundMail, outbound_id, populate_existing=True)
    if row is None or row.state is not OutboundState.SENDING or row.lease_owner != owner:
        return None  # the lease was lost (recovered by another worker): leave the row alone
    return row


def enter_data_phase(*, session: Session, outbound_id: int, owner: str) -> bool:
    """Committed by the worker just before DATA: from here a crash means `send_uncertain`."""
    row = _owned(session, outbound_id, owner)
    if row is None:
        return False
    row.phase = SendPhase.DATA
    session.add(row)
    session.flush()
    return True


def record_sent(
    *,
    session: Session,
    outbound_id: int,
    owner: str,
    code: int,
    reply: str,
    lease_seconds: int = 300,
    now: datetime | None = None,
) -> None:
    """Sent. The worker keeps its lease for the filing step (Sent folder, conversation): a
    worker dying there leaves the row to `claim_filing` once the lease has run out."""
    now = now or utcnow()
    row = _owned(session, outbound_id, owner)
    if row is None:
        # The lease ran out while the server accepted: the mail *was* sent. Record it anyway
        # unless someone else already did (only one worker can have held the DATA phase).
        row = session.get(OutboundMail, outbound_id)
        if row is None or row.state is OutboundState.SENT:
            return
    row.state = OutboundState.SENT
    row.phase = None
    row.sent_at = now
    row.last_response_code = code
    row.last_response = _clean(reply)
    row.error_code = None
    row.error_params = {}
    row.next_attempt_at = None
    row.lease_owner, row.lease_expires_at = owner, now + timedelta(seconds=lease_seconds)
    row.updated_at = now
    session.add(row)
    session.flush()


def record_failure(
    *,
    session: Session,
    outbound_id: int,
    owner: str,
    transient: bool,
    error_code: str,
    params: dict[str, Any],
    code: int | None = None,
    reply: str = "",
    now: datetime | None = None,
) -> OutboundState | None:
    """A failed attempt: deferred with backoff when temporary and attempts remain, else failed."""
    now = now or utcnow()
    row = _owned(session, outbound_id, owner)
    if row is None:
        return None
    row.last_response_code = code
    row.last_response = _clean(reply)
    row.error_code = error_code
    row.error_params = params
    row.phase = None
    row.lease_owner = row.lease_expires_at = None
    row.updated_at = now
    if transient and row.attempts < MAX_ATTEMPTS:
        row.state = OutboundState.DEFERRED
        row.next_attempt_at = now + min(BASE_BACKOFF * 2 ** (row.attempts - 1), MAX_BACKOFF)
    else:
        row.state = OutboundState.FAILED
        row.next_attempt_at = None
    session.add(row)
    session.flush()
    return row.state


def record_stored(*, session: Session, outbound_id: int, sent_folder_done: bool) -> int | None:
    """After the Sent step: link the row to the stored message (by its Message-ID, whoever stored
    it: this worker through the mail store, or a sync that met it in Sent first)."""
    row = session.get_one(OutboundMail, outbound_id)
    found = session.exec(
        select(Message.id).where(Message.tenant_id == row.tenant_id, Message.message_id == row.message_id)
    ).first()
    row.stored_message_pk = found
    row.sent_folder_done = sent_folder_done
    row.lease_owner = row.lease_expires_at = None
    session.add(row)
    session.flush()
    return found


# ---------------------------------------------------------------------------------------------
# The faces' side: scoped to the caller


def _visible(caller: Caller) -> Any:
    """Mail of the accounts the caller may see; system mail (no account) to admins only."""
    of_accounts: Any = col(OutboundMail.account_id).in_(access.visible_account_ids(caller))
    if caller.is_admin:
        of_accounts = or_(of_accounts, col(OutboundMail.account_id).is_(None))
    return (col(OutboundMail.tenant_id) == caller.tenant_id) & of_accounts


def _get(session: Session, caller: Caller, outbound_id: int) -> OutboundMail:
    row = session.exec(select(OutboundMail).where(OutboundMail.id == outbound_id, _visible(caller))).first()
    if row is None:
        raise not_found("outgoing_mail", outbound_id)
    return row


def get_outbound(*, session: Session, caller: Caller, outbound_id: int) -> OutboundView:
    return outbound_view(_get(session, caller, outbound_id))


def cancel(
    *, session: Session, caller: Caller, outbound_id: int, now: datetime | None = None
) -> OutboundView:
    """Undo send (within the delay) or drop a send-later mail: only while no worker has it.
    Members cancel their own mail; admins anyone's."""
    now = now or utcnow()
    row = _get(session, caller, outbound_id)
    if not caller.is_admin and row.user_id != caller.user_id:
        raise not_found("outgoing_mail", outbound_id)
    result = session.execute(
        update(OutboundMail)
        .where(col(OutboundMail.id) == outbound_id, col(OutboundMail.state).in_(_DUE))
        .values(state=OutboundState.CANCELLED, next_attempt_at=None, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    session.refresh(row)
    if getattr(result, "rowcount", 0) != 1:
        raise Conflict(
            "too_late_to_cancel",
            f"The mail can no longer be recalled: it is {row.state.value}.",
            outbound_id=outbound_id,
            state=row.state.value,
        )
    return outbound_view(row)


def mail_log(
    *,
    session: Session,
    caller: Caller,
    states: Sequence[OutboundState] = (),
    kinds: Sequence[MailKind] = (),
    since: datetime | None = None,
    until: datetime | None = None,
    address: str | None = None,
    account_id: int | None = None,
    limit: int = 100,
) -> tuple[OutboundView, ...]:
    """Every outgoing mail the caller may see, newest first; filters by state, kind, date,
    address (sender or a recipient) and account. Also the queue's view (states queued...)."""
    query = select(OutboundMail).where(_visible(caller))
    if account_id is not None:
        access.get_account(session, caller, account_id)
        query = query.where(OutboundMail.account_id == account_id)
    if states:
        query = query.where(col(OutboundMail.state).in_(list(states)))
    if kinds:
        query = query.where(col(OutboundMail.kind).in_(list(kinds)))
    if since is not None:
        query = query.where(col(OutboundMail.created_at) >= since)
    if until is not None:
        query = query.where(col(OutboundMail.created_at) < until)
    rows = session.exec(
        query.order_by(col(OutboundMail.created_at).desc(), col(OutboundMail.id).desc()).limit(
            max(1, min(limit, 1000)) if not address else 10_000
        )
    ).all()
    if address:
        # Recipients are a JSON list: filtered here, portable across both databases.
        wanted = address.strip().lower()
        rows = [r for r in rows if wanted == r.from_email.lower() or wanted in r.recipients][
            : max(1, min(limit, 1000))
        ]
    return tuple(outbound_view(r) for r in rows)
