"""Linking already-synced mail to records added in bulk, in short chunks.

Why chunks: linking takes the tenant's write lock (`crm.locks.lock_tenant`), which every sync
batch of the tenant also takes. Linking the mail of a 10,000-contact import in one transaction
would hold it for as long as the whole import takes and stall every sync batch meanwhile. So
the import only writes its rows and a `BackfillJob` (one transaction, no lock), and the job is
worked off after the commit: each chunk is its own short transaction that takes the lock, links
at most `MESSAGES_PER_CHUNK` messages of at most `KEYS_PER_CHUNK` addresses or domains, records
its progress in the job and commits, letting waiting sync batches in between.

Why nothing is lost: the job is committed with the records, progress is committed with each
chunk's links, and linking is idempotent. A crash (or a stopped process) between two chunks
leaves the job unfinished; `run_pending` (run by the import command before it returns, and safe
to run any time) resumes it from its last committed chunk. Mail synced while the job runs is
linked by its own sync batch: the records were committed before the job's first chunk.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlmodel import Session, col, select

from core.caller import Caller
from core.db import session_scope
from core.errors import not_found
from core.types import utcnow
from crm import access, link_service
from crm.locks import lock_tenant
from crm.models.records import BackfillJob

__all__ = ["KEYS_PER_CHUNK", "MESSAGES_PER_CHUNK", "BackfillResult", "enqueue", "run_job", "run_pending"]

KEYS_PER_CHUNK = 200  # addresses or domains looked up per chunk (one indexed IN per chunk)
MESSAGES_PER_CHUNK = 200  # messages linked per chunk: well under a second of lock on PostgreSQL


@dataclass(frozen=True, slots=True)
class BackfillResult:
    job_id: int
    finished: bool
    chunks: int  # chunks run by this call
    messages_linked: int  # over the job's whole life
    links_added: int
    longest_chunk_seconds: float  # the longest the tenant's write lock was held by this call


def enqueue(*, session: Session, tenant_id: int, emails: Sequence[str], domains: Sequence[str] = ()) -> int:
    """Record mail to link for these addresses and company domains, in the caller's transaction
    (with the records that need it). Returns the job id for `run_job`."""
    job = BackfillJob(
        tenant_id=tenant_id,
        emails=sorted({e.lower() for e in emails}),
        domains=sorted({d.lower() for d in domains}),
    )
    session.add(job)
    session.flush()
    return job.id or 0


def _keys(job: BackfillJob) -> tuple[list[str], list[str]]:
    """The emails and the domains of the job's current chunk (emails first, then domains)."""
    emails = job.emails[job.position : job.position + KEYS_PER_CHUNK]
    start = max(job.position - len(job.emails), 0)
    room = KEYS_PER_CHUNK - len(emails)
    domains = job.domains[start : start + room] if room > 0 else []
    return emails, domains


def _chunk(session: Session, job_id: int) -> bool:
    """One chunk, in the caller's (short) transaction. Returns True when the job is finished."""
    job = session.get(BackfillJob, job_id)
    if job is None or job.finished_at is not None:
        return True
    # The lock first: mail committed by a sync batch before it is seen by the lookup below.
    lock_tenant(session=session, tenant_id=job.tenant_id)
    emails, domains = _keys(job)
    pks: set[int] = set()
    if emails:
        pks |= set(
            link_service.messages_with_addresses(session=session, tenant_id=job.tenant_id, emails=emails)
        )
    if domains:
        pks |= set(
            link_service.messages_with_domains(session=session, tenant_id=job.tenant_id, domains=domains)
        )
    todo = sorted(pk for pk in pks if pk > job.message_cursor)[:MESSAGES_PER_CHUNK]
    if todo:
        stats = link_service.link_messages(session=session, tenant_id=job.tenant_id, message_pks=todo)
        job.messages_linked += stats.messages
        job.links_added += stats.links_added
    if len(todo) == MESSAGES_PER_CHUNK and todo[-1] < max(pks):
        job.message_cursor = todo[-1]  # more mail for these keys: same keys next chunk
    else:
        job.position += len(emails) + len(domains)
        job.message_cursor = 0
    if job.position >= len(job.emails) + len(job.domains):
        job.finished_at = utcnow()
    session.add(job)
    return job.finished_at is not None


def run_job(*, engine: Engine, caller: Caller, job_id: int) -> BackfillResult:
    """Work a job off, chunk by chunk, each chunk its own transaction (the caller must have
    committed the transaction that enqueued it). Safe to call again: resumes, or does nothing."""
    with session_scope(engine) as session:
        job = session.get(BackfillJob, job_id)
        if job is None or job.tenant_id != caller.tenant_id:
            raise not_found("backfill_job", job_id)
    chunks, longest, finished = 0, 0.0, False
    while not finished:
        started = time.monotonic()
        with session_scope(engine) as session:
            finished = _chunk(session, job_id)
        longest = max(longest, time.monotonic() - started)
        chunks += 1
    with session_scope(engine) as session:
        job = session.get_one(BackfillJob, job_id)
        return BackfillResult(
            job_id=job_id,
            finished=job.finished_at is not None,
            chunks=chunks,
            messages_linked=job.messages_linked,
            links_added=job.links_added,
            longest_chunk_seconds=round(longest, 3),
        )


def pending_job_ids(*, session: Session, caller: Caller) -> tuple[int, ...]:
    """The tenant's unfinished jobs, oldest first (left by a crash or a stopped process)."""
    return tuple(
        pk
        for pk in session.exec(
            select(BackfillJob.id)
            .where(BackfillJob.tenant_id == caller.tenant_id, col(BackfillJob.finished_at).is_(None))
            .order_by(col(BackfillJob.id))
        ).all()
        if pk is not None
    )


def run_pending(*, engine: Engine, caller: Caller) -> tuple[BackfillResult, ...]:
    """Resume every unfinished job of the caller's tenant (admin only: imports are)."""
    access.require_admin(caller, "link imported records")
    with session_scope(engine) as session:
        ids = pending_job_ids(session=session, caller=caller)
    return tuple(run_job(engine=engine, caller=caller, job_id=job_id) for job_id in ids)
