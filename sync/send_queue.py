"""The send queue's worker: what the scheduler (or `crm-inbox send --now`) calls.

One pass: recover rows of dead workers, then for each due mail: claim it (short transaction),
talk to the SMTP server with no session open, record the outcome (short transaction). A sent
mail is then appended to the account's Sent folder over IMAP (unless the account's server files
sent mail itself) and stored in the conversation through `crm.mailstore.apply_batch` at the
UID the server gave it (APPENDUID), in the Sent folder's bookkeeping: the next sync sees that
UID as known and does not store the message twice.

State transitions and the crash rules are `crm.outbound.queue`'s.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field

from pydantic import SecretStr
from sqlalchemy import Engine

from core.connection import BearerToken, Credential
from core.db import get_engine, session_scope
from core.errors import DomainError
from core.secrets import SecretBox
from core.settings import Settings, get_settings
from core.types import FolderRole, Security, utcnow
from crm import mailstore
from crm.outbound import queue
from crm.outbound.views import OutboundState
from sync import errors, imap, oauth_tokens
from sync.message_data import to_message_data
from sync.parse import parse_message
from sync.smtp_check import SmtpEndpoint
from sync.smtp_send import SendOutcome, send_message

log = logging.getLogger(__name__)


@dataclass(slots=True)
class QueueSummary:
    recovered: int = 0
    sent: int = 0
    deferred: int = 0
    failed: int = 0
    stored: int = 0
    sent_folder_errors: list[str] = field(default_factory=list)


def _worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:send"


def _holder_is_dead(owner: str) -> bool:
    """True when a lease owner ("host:pid:...") is a process of this host that is gone (the
    same rule as the sync's account leases)."""
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


def _sent_copy(job: queue.SendJob) -> bytes:
    """The copy filed in Sent keeps the Bcc the recipients never saw (addresses were checked
    when the mail was composed: no line breaks can be in them)."""
    if not job.bcc:
        return job.raw
    return f"Bcc: {', '.join(job.bcc)}\r\n".encode("ascii") + job.raw


def work_queue(
    *,
    db: Engine | None = None,
    settings: Settings | None = None,
    worker_id: str | None = None,
    limit: int = 50,
    lease_seconds: int = 300,
) -> QueueSummary:
    """One pass over the due mail. Safe to run from several processes at once."""
    db = db or get_engine()
    settings = settings or get_settings()
    owner = worker_id or _worker_id()
    box = SecretBox.from_settings(settings)
    summary = QueueSummary()
    with session_scope(db) as session:
        for outbound_id, holder in queue.leases_held(session=session):
            if holder != owner and _holder_is_dead(holder):
                queue.break_lease(session=session, outbound_id=outbound_id, owner=holder)
        summary.recovered = queue.recover_expired(session=session)
        due = queue.due_ids(session=session, limit=limit)
    for outbound_id in due:
        with session_scope(db) as session:
            job = queue.claim(
                session=session, outbound_id=outbound_id, owner=owner, lease_seconds=lease_seconds
            )
        if job is None:
            continue
        outcome = _send(db, settings, box, job, owner)
        state: OutboundState | None = None
        with session_scope(db) as session:
            if outcome.ok:
                queue.record_sent(
                    session=session,
                    outbound_id=job.id,
                    owner=owner,
                    code=outcome.code or 250,
                    reply=outcome.reply,
                )
            elif outcome.error_code == "lease_lost":
                continue
            else:
                state = queue.record_failure(
                    session=session,
                    outbound_id=job.id,
                    owner=owner,
                    transient=outcome.transient,
                    error_code=outcome.error_code or "send_failed",
                    params=outcome.params,
                    code=outcome.code,
                    reply=outcome.reply,
                )
        if outcome.ok:
            summary.sent += 1
            if _file_sent(db, settings, box, job, summary):
                summary.stored += 1
        elif state is OutboundState.DEFERRED:
            summary.deferred += 1
        elif state is OutboundState.FAILED:
            summary.failed += 1
    # Filing left over by a worker that died after sending (or found IMAP down): the append
    # looks for the Message-ID first, so a copy that did land is not appended twice.
    with session_scope(db) as session:
        leftover = queue.filing_due_ids(session=session, limit=limit)
    for outbound_id in leftover:
        with session_scope(db) as session:
            job = queue.claim_filing(
                session=session, outbound_id=outbound_id, owner=owner, lease_seconds=lease_seconds
            )
        if job is not None and _file_sent(db, settings, box, job, summary):
            summary.stored += 1
    return summary


def _system_endpoint(settings: Settings) -> tuple[SmtpEndpoint, SecretStr] | None:
    """The deployment's own SMTP (settings), for system mail of tenants without their own."""
    if not settings.system_smtp_host:
        return None
    endpoint = SmtpEndpoint(
        host=settings.system_smtp_host,
        port=settings.system_smtp_port,
        security=Security(settings.system_smtp_security),
        username=settings.system_smtp_username,
        ca_file=settings.system_smtp_ca_file,
        timeout=settings.connect_timeout_seconds,
        allow_private_hosts=settings.allow_private_hosts,
    )
    return endpoint, settings.system_smtp_password or SecretStr("")


def _send(db: Engine, settings: Settings, box: SecretBox, job: queue.SendJob, owner: str) -> SendOutcome:
    if job.account_id is None:
        system = _system_endpoint(settings)
        if system is None:
            return SendOutcome(ok=False, error_code="system_smtp_not_configured")
        endpoint, password = system
    else:
        password = SecretStr("")  # unused: the account's credential comes from with_credential
        if not job.smtp_host or not job.smtp_port or job.smtp_security is None:
            return SendOutcome(
                ok=False, error_code="smtp_not_configured", params={"account_id": job.account_id}
            )
        endpoint = SmtpEndpoint(
            host=job.smtp_host,
            port=job.smtp_port,
            security=job.smtp_security,
            username=job.smtp_username,
            ca_file=job.ca_file,
            timeout=settings.connect_timeout_seconds,
            allow_private_hosts=settings.allow_private_hosts,
        )

    def before_data() -> bool:
        with session_scope(db) as session:
            return queue.enter_data_phase(session=session, outbound_id=job.id, owner=owner)

    def send(credential: Credential) -> SendOutcome:
        outcome = send_message(
            endpoint,
            credential,
            sender=job.from_email,
            recipients=job.recipients,
            raw=job.raw,
            before_data=before_data,
        )
        if outcome.error_code == "auth_failed" and isinstance(credential, BearerToken):
            # Refused at AUTH, before MAIL: nothing was sent, so trying once more with a
            # refreshed token cannot send the mail twice.
            raise errors.AuthFailed(endpoint.host, endpoint.username)
        return outcome

    if job.account_id is None:
        return send(password)
    source = oauth_tokens.TokenSource(db, box, settings, owner=owner)
    oauth_account = oauth_tokens.is_oauth(db, job.account_id)
    try:
        return oauth_tokens.with_credential(
            source, job.account_id, oauth_account, job.smtp_secret_encrypted, send
        )
    except errors.AuthFailed as exc:
        return SendOutcome(ok=False, transient=False, error_code=exc.code, params=dict(exc.fields))
    except DomainError as exc:
        transient = exc.transient if isinstance(exc, errors.SyncError) else False
        # An OAuth account waiting to be reconnected: the mail waits too (retried with backoff,
        # without asking the provider again) and leaves once someone reconnects the mailbox.
        transient = transient or exc.code == "oauth_reconnect_needed"
        return SendOutcome(ok=False, transient=transient, error_code=exc.code, params=dict(exc.fields))


def _imap_endpoint(settings: Settings, job: queue.SendJob) -> imap.ImapEndpoint:
    return imap.ImapEndpoint(
        host=job.imap_host,
        port=job.imap_port,
        security=job.imap_security,
        username=job.imap_username,
        ca_file=job.ca_file,
        connect_timeout=settings.connect_timeout_seconds,
        read_timeout=settings.read_timeout_seconds,
        allow_private_hosts=settings.allow_private_hosts,
    )


def _file_sent(
    db: Engine, settings: Settings, box: SecretBox, job: queue.SendJob, summary: QueueSummary
) -> bool:
    """Append to Sent and store in the conversation. A failure here never un-sends the mail: it
    is logged, the row keeps `sent_folder_done` false and its lease, and a later pass takes it
    up again once the lease has run out (`queue.claim_filing`)."""
    if job.server_saves_sent:
        with session_scope(db) as session:
            queue.record_stored(session=session, outbound_id=job.id, sent_folder_done=True)
        return False
    if job.sent_folder is None or job.sent_folder_id is None or job.account_id is None:
        summary.sent_folder_errors.append(f"{job.message_id}: the account has no known Sent folder yet")
        return False
    copy = _sent_copy(job)
    now = utcnow()
    where: tuple[int, int] | None
    if job.virtual_sent:
        # A forwarding address (crm.forwarding) has no IMAP server: the copy goes straight to
        # its virtual Sent folder, located by the outbound id (UIDVALIDITY 1).
        where = (1, job.id)
    else:
        endpoint = _imap_endpoint(settings, job)
        source = oauth_tokens.TokenSource(db, box, settings)
        try:
            oauth_account = oauth_tokens.is_oauth(db, job.account_id)
            conn = oauth_tokens.with_credential(
                source,
                job.account_id,
                oauth_account,
                job.imap_secret_encrypted,
                lambda credential: imap.connect(endpoint, credential),
            )
            with conn:
                where = imap.append_message(conn, job.sent_folder, copy, message_id=job.message_id, when=now)
        except (errors.SyncError, DomainError) as exc:
            log.warning("sent mail %s not appended to Sent: %s", job.id, exc.code)
            summary.sent_folder_errors.append(f"{job.message_id}: {exc.code}")
            return False
    if where is None:
        # No UIDPLUS: the next sync of Sent meets it by its Message-ID and stores it then.
        with session_scope(db) as session:
            queue.record_stored(session=session, outbound_id=job.id, sent_folder_done=True)
        return False
    uidvalidity, uid = where
    data = to_message_data(parse_message(copy, internal_date=now), raw=None)
    with session_scope(db) as session:
        identities = mailstore.tenant_identities(session=session, tenant_id=job.tenant_id)
        mailstore.apply_batch(
            session=session,
            tenant_id=job.tenant_id,
            account_id=job.account_id,
            folder_id=job.sent_folder_id,
            folder_role=FolderRole.SENT,
            uidvalidity=uidvalidity,
            items=[mailstore.NewMail(location=mailstore.Location(uid, ("\\Seen",), now), data=data)],
            identities=identities,
            cursor=None,
        )
        stored = queue.record_stored(session=session, outbound_id=job.id, sent_folder_done=True)
    return stored is not None
