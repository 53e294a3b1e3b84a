"""Importing a CSV export of contacts (admin only): rows in one transaction, or streamed in
chunks of their own transactions for big files, mail linked after.

The file is parsed by the pure `crm.rules.csv_import` (per-line errors with codes); this module
writes the good rows in the caller's transaction, without the tenant's write lock, inserting new
contacts in bulk (a 10,000-row file is a few statements, not 20,000). Linking the file's
addresses and new company domains to already-synced mail is recorded as a `crm.backfill` job in
the same transaction and run after the commit in short chunks (`backfill.run_pending`): a crash
between the two leaves a job to resume, never unlinked mail nobody knows about.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import DomainError
from crm import access, backfill
from crm.models import Company, CompanyDomain, Contact, ContactEmail
from crm.records import check_domain_free, clean_domain, user_emails
from crm.rules.csv_import import ContactRow, CsvStream, RowError, RowProblem, open_contacts_csv
from crm.rules.linking import ContactSource

__all__ = ["MAX_CSV_BYTES", "ImportProgress", "ImportReport", "import_contacts", "import_contacts_in_chunks"]


# The largest CSV file an import reads (a 20 MB export holds some 200,000 contacts); faces refuse
# larger files before reading them whole.
MAX_CSV_BYTES = 20 * 1024 * 1024
# Rows per transaction of a chunked import: each commit takes a few tens of milliseconds, so a
# sync waiting for the write lock waits about that long.
CHUNK_ROWS = 1000


@dataclass(frozen=True, slots=True)
class ImportReport:
    created: int
    updated: int
    unchanged: int
    companies_created: int
    errors: tuple[RowError, ...]
    encoding: str
    delimiter: str
    # The addresses of the file whose synced mail still has to be linked (crm.backfill): the
    # last job, and every job (a chunked import records one per chunk).
    backfill_job_id: int | None = None
    backfill_job_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ImportProgress:
    """Where a chunked import is, after a chunk's commit: rows written so far (good ones, bad
    ones), and how much of the file's text was read (`position` of `size` characters)."""

    rows: int
    bad_rows: int
    position: int
    size: int


@dataclass(slots=True)
class _Tally:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    companies_created: int = 0


_UPDATABLE = ("first_name", "last_name", "full_name", "phone", "company_id", "owner_user_id")


def import_contacts(
    *, session: Session, caller: Caller, data: bytes, allow_test_domains: bool = False
) -> ImportReport:
    """Import a CSV export (admin only) in the caller's transaction: good rows in, bad rows
    reported with line and code. Idempotent: re-importing the same file changes nothing.

    Only the rows are written here, without the tenant's write lock (sync batches keep running
    on PostgreSQL; on SQLite the transaction holds the database's write lock, so big files go
    through `import_contacts_in_chunks`). Linking the file's addresses to already-synced mail is
    recorded as a backfill job in the same transaction and run after the commit in short chunks
    (`crm.backfill.run_job`), so a crash between the two leaves a job to resume, never unlinked
    mail that nobody knows about."""
    access.require_admin(caller, "import contacts")
    stream = open_contacts_csv(data, allow_test_domains=allow_test_domains)
    state = _ImportState()
    rows: list[ContactRow] = []
    for entry in stream.entries:
        if isinstance(entry, ContactRow):
            rows.append(entry)
        else:
            state.errors.append(entry)
    _write_chunk(session, caller, rows, state)
    return state.report(stream)


def import_contacts_in_chunks(
    *,
    sessions: Callable[[], AbstractContextManager[Session]],
    caller: Caller,
    data: bytes,
    allow_test_domains: bool = False,
    chunk_rows: int = CHUNK_ROWS,
    progress: Callable[[ImportProgress], None] | None = None,
) -> ImportReport:
    """`import_contacts` for files of any size: the rows are read as a stream and written
    `chunk_rows` at a time, each chunk in a transaction of its own (`sessions()` commits it), with
    its backfill job. Between chunks no lock is held, so a sync (or `account add`) waits for one
    chunk at most instead of failing behind a long import; memory follows a chunk, not the file.

    The file is checked as a whole before anything is written (`CsvImportError`). A failure
    later (the database gone) leaves the chunks already committed: importing the file again
    completes it, since an import is idempotent. `progress` is called after each commit."""
    access.require_admin(caller, "import contacts")
    if chunk_rows < 1:
        raise ValueError("chunk_rows must be at least 1")
    stream = open_contacts_csv(data, allow_test_domains=allow_test_domains)
    state = _ImportState()
    chunk: list[ContactRow] = []
    entries = iter(stream.entries)
    while True:
        entry = next(entries, None)
        if isinstance(entry, RowError):
            state.errors.append(entry)
            continue
        if entry is not None:
            chunk.append(entry)
            if len(chunk) < chunk_rows:
                continue
        if chunk or entry is None:
            with sessions() as session:
                _write_chunk(session, caller, chunk, state)
            state.rows_done += len(chunk)
            chunk = []
            if progress is not None:
                progress(ImportProgress(state.rows_done, len(state.errors), stream.position, stream.size))
        if entry is None:
            return state.report(stream)


@dataclass(slots=True)
class _ImportState:
    """What an import has done so far, across its chunks."""

    errors: list[RowError] = field(default_factory=list)
    tally: _Tally = field(default_factory=lambda: _Tally())
    companies: dict[str, int] = field(default_factory=dict)  # name -> id, committed or in this chunk
    job_ids: list[int] = field(default_factory=list)
    rows_done: int = 0

    def report(self, stream: CsvStream) -> ImportReport:
        return ImportReport(
            created=self.tally.created,
            updated=self.tally.updated,
            unchanged=self.tally.unchanged,
            companies_created=self.tally.companies_created,
            errors=tuple(sorted(self.errors, key=lambda e: e.line)),
            encoding=stream.encoding,
            delimiter=stream.delimiter,
            backfill_job_id=self.job_ids[-1] if self.job_ids else None,
            backfill_job_ids=tuple(self.job_ids),
        )


def _write_chunk(session: Session, caller: Caller, rows: Sequence[ContactRow], state: _ImportState) -> None:
    """Write `rows` in `session` and record their backfill job there (one transaction)."""
    errors, tally, companies = state.errors, state.tally, state.companies
    tenant_id = caller.tenant_id
    users = user_emails(session, tenant_id)
    existing = _contacts_by_email(session, tenant_id, [row.email for row in rows])
    new_domains: list[str] = []
    imported: list[str] = []
    fresh: list[tuple[Contact, str]] = []  # inserted together below: one statement per 1,000 rows
    for row in rows:
        if row.email in users:
            errors.append(
                RowError(
                    row.line,
                    f"{row.email} is a user of this workspace, not a contact",
                    RowProblem.EMAIL_IS_USER,
                )
            )
            continue
        company_id = _company_for_row(session, caller, row, companies, new_domains, tally, errors)
        owner_id = users.get(row.owner_email) if row.owner_email else None
        imported.append(row.email)
        contact = existing.get(row.email)
        if contact is None:
            first, last = row.first_name or "", row.last_name or ""
            fresh.append(
                (
                    Contact(
                        tenant_id=tenant_id,
                        first_name=first,
                        last_name=last,
                        full_name=row.full_name or f"{first} {last}".strip() or row.email,
                        phone=row.phone or "",
                        company_id=company_id,
                        owner_user_id=owner_id,
                        source=ContactSource.IMPORT,
                    ),
                    row.email,
                )
            )
            tally.created += 1
            continue
        changed = False
        values = (row.first_name, row.last_name, row.full_name, row.phone, company_id, owner_id)
        for attr, value in zip(_UPDATABLE, values, strict=True):
            if value and getattr(contact, attr) != value:
                setattr(contact, attr, value)
                changed = True
        if changed:
            session.add(contact)
            tally.updated += 1
        else:
            tally.unchanged += 1
    session.add_all([contact for contact, _ in fresh])
    session.flush()
    session.add_all(
        [
            ContactEmail(tenant_id=tenant_id, contact_id=contact.id or 0, email=email)
            for contact, email in fresh
        ]
    )
    session.flush()
    # Every address of the file, not only the new ones: re-running an import whose linking was
    # interrupted links what it missed (the backfill is idempotent).
    if imported or new_domains:
        state.job_ids.append(
            backfill.enqueue(session=session, tenant_id=tenant_id, emails=imported, domains=new_domains)
        )


def _contacts_by_email(session: Session, tenant_id: int, emails: Sequence[str]) -> dict[str, Contact]:
    found: dict[str, Contact] = {}
    ordered = sorted(set(emails))
    for start in range(0, len(ordered), 500):
        for email, contact in session.exec(
            select(ContactEmail.email, Contact)
            .join(Contact, col(Contact.id) == col(ContactEmail.contact_id))
            .where(
                ContactEmail.tenant_id == tenant_id, col(ContactEmail.email).in_(ordered[start : start + 500])
            )
        ).all():
            found[email] = contact
    return found


def _company_for_row(
    session: Session,
    caller: Caller,
    row: ContactRow,
    companies: dict[str, int],
    new_domains: list[str],
    tally: _Tally,
    errors: list[RowError],
) -> int | None:
    """The row's company by name (created on first sight, with the row's domain)."""
    if not row.company:
        return None
    name = row.company.strip()
    if name in companies:
        return companies[name]
    company = session.exec(
        select(Company)
        .where(Company.tenant_id == caller.tenant_id, Company.name == name)
        .order_by(col(Company.id))
    ).first()
    if company is None:
        company = Company(tenant_id=caller.tenant_id, name=name)
        session.add(company)
        session.flush()
        tally.companies_created += 1
        if row.company_domain:
            try:
                domain = clean_domain(row.company_domain)
                check_domain_free(session, caller.tenant_id, company.id or 0, domain)
            except DomainError as exc:
                errors.append(RowError(row.line, exc.message, exc.code))
            else:
                session.add(
                    CompanyDomain(tenant_id=caller.tenant_id, company_id=company.id or 0, domain=domain)
                )
                session.flush()
                new_domains.append(domain)
    companies[name] = company.id or 0
    return company.id
