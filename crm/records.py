"""Contacts, companies and deals, and the CSV import: the services the CLI and the API call.

Every change that can make already-synced mail belong to a record runs a targeted backfill (only
the mail carrying that address or domain), and removing an address re-decides only the mail that
was linked through it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlmodel import Session, col, select

from crm import link_service
from crm.errors import InvalidInput, NotFound
from crm.models import (
    Company,
    CompanyDomain,
    Contact,
    ContactEmail,
    Deal,
    DealContact,
    MessageLink,
    User,
)
from crm.rules.csv_import import ContactRow, RowError, parse_contacts_csv
from crm.rules.linking import LinkReason, normalize_email

DEAL_STATUSES = ("open", "won", "lost")


def _clean_email(email: str) -> str:
    normalized = normalize_email(email)
    if normalized is None:
        raise InvalidInput(f"{email!r} is not an e-mail address.")
    return normalized


def _clean_domain(domain: str) -> str:
    cleaned = domain.strip().lower().removeprefix("http://").removeprefix("https://").removeprefix("www.")
    cleaned = cleaned.split("/", 1)[0].rstrip(".")
    if "." not in cleaned or " " in cleaned:
        raise InvalidInput(f"{domain!r} is not a domain name.")
    return cleaned


# ---------------------------------------------------------------------------------------------
# Companies


def create_company(
    *, session: Session, tenant_id: int, name: str, domains: list[str] | None = None
) -> Company:
    company = Company(tenant_id=tenant_id, name=name.strip())
    session.add(company)
    session.flush()
    for domain in domains or []:
        add_company_domain(session=session, tenant_id=tenant_id, company_id=company.id or 0, domain=domain)
    return company


def add_company_domain(*, session: Session, tenant_id: int, company_id: int, domain: str) -> None:
    _own_company(session, tenant_id, company_id)
    domain = _clean_domain(domain)
    taken = session.exec(
        select(CompanyDomain).where(CompanyDomain.tenant_id == tenant_id, CompanyDomain.domain == domain)
    ).first()
    if taken is not None:
        if taken.company_id == company_id:
            return
        raise InvalidInput(f"The domain {domain} already belongs to company {taken.company_id}.")
    session.add(CompanyDomain(tenant_id=tenant_id, company_id=company_id, domain=domain))
    session.flush()
    link_service.backfill_domains(session=session, tenant_id=tenant_id, domains=[domain])


def find_company(*, session: Session, tenant_id: int, name: str) -> Company | None:
    return session.exec(
        select(Company).where(Company.tenant_id == tenant_id, Company.name == name.strip())
    ).first()


# ---------------------------------------------------------------------------------------------
# Contacts


def create_contact(
    *,
    session: Session,
    tenant_id: int,
    emails: list[str],
    first_name: str = "",
    last_name: str = "",
    full_name: str = "",
    phone: str = "",
    company_id: int | None = None,
    owner_user_id: int | None = None,
    source: str = "manual",
) -> Contact:
    cleaned = [_clean_email(e) for e in emails]
    _own_company(session, tenant_id, company_id)
    _own_user(session, tenant_id, owner_user_id)
    _refuse_own_addresses(session, tenant_id, cleaned)
    for email in cleaned:
        _refuse_taken(session, tenant_id, email)
    contact = Contact(
        tenant_id=tenant_id,
        first_name=first_name,
        last_name=last_name,
        full_name=full_name or f"{first_name} {last_name}".strip() or (cleaned[0] if cleaned else ""),
        phone=phone,
        company_id=company_id,
        owner_user_id=owner_user_id,
        source=source,
    )
    session.add(contact)
    session.flush()
    for email in cleaned:
        session.add(ContactEmail(tenant_id=tenant_id, contact_id=contact.id or 0, email=email))
    session.flush()
    link_service.backfill_addresses(session=session, tenant_id=tenant_id, emails=cleaned)
    return contact


def _own_company(session: Session, tenant_id: int, company_id: int | None) -> None:
    if company_id is None:
        return
    company = session.get(Company, company_id)
    if company is None or company.tenant_id != tenant_id:
        raise NotFound(f"No company with id {company_id}.")


def _own_user(session: Session, tenant_id: int, user_id: int | None) -> None:
    if user_id is None:
        return
    user = session.get(User, user_id)
    if user is None or user.tenant_id != tenant_id:
        raise NotFound(f"No user with id {user_id}.")


def _refuse_taken(session: Session, tenant_id: int, email: str) -> None:
    taken = session.exec(
        select(ContactEmail).where(ContactEmail.tenant_id == tenant_id, ContactEmail.email == email)
    ).first()
    if taken is not None:
        raise InvalidInput(f"{email} already belongs to contact {taken.contact_id}.")


def _refuse_own_addresses(session: Session, tenant_id: int, emails: list[str]) -> None:
    """The tenant's own users are never contacts (their mail would link everything)."""
    users = set(session.exec(select(User.email).where(User.tenant_id == tenant_id)).all())
    for email in emails:
        if email in users:
            raise InvalidInput(f"{email} is a user of this workspace and cannot be a contact.")


def get_contact(*, session: Session, tenant_id: int, contact_id: int) -> Contact:
    contact = session.get(Contact, contact_id)
    if contact is None or contact.tenant_id != tenant_id:
        raise NotFound(f"No contact with id {contact_id}.")
    return contact


def contact_emails(*, session: Session, contact_id: int) -> list[str]:
    return list(session.exec(select(ContactEmail.email).where(ContactEmail.contact_id == contact_id)).all())


def add_contact_email(*, session: Session, tenant_id: int, contact_id: int, email: str) -> None:
    get_contact(session=session, tenant_id=tenant_id, contact_id=contact_id)
    email = _clean_email(email)
    _refuse_own_addresses(session, tenant_id, [email])
    _refuse_taken(session, tenant_id, email)
    session.add(ContactEmail(tenant_id=tenant_id, contact_id=contact_id, email=email))
    session.flush()
    link_service.backfill_addresses(session=session, tenant_id=tenant_id, emails=[email])


def remove_contact_email(*, session: Session, tenant_id: int, contact_id: int, email: str) -> int:
    """Remove an address; mail linked to the contact only through it is unlinked. Returns how
    many messages were re-decided."""
    get_contact(session=session, tenant_id=tenant_id, contact_id=contact_id)
    email = _clean_email(email)
    row = session.exec(
        select(ContactEmail).where(ContactEmail.contact_id == contact_id, ContactEmail.email == email)
    ).first()
    if row is None:
        raise NotFound(f"Contact {contact_id} has no address {email}.")
    session.delete(row)
    session.flush()
    # Only mail that carried this address can lose links; everything else is untouched.
    affected = link_service.messages_with_addresses(session=session, tenant_id=tenant_id, emails=[email])
    linked = set(
        session.exec(
            select(MessageLink.message_pk).where(
                col(MessageLink.message_pk).in_(affected or [0]),
                col(MessageLink.reason) != LinkReason.MANUAL.value,
            )
        ).all()
    )
    link_service.relink_after_removal(session=session, tenant_id=tenant_id, message_pks=sorted(linked))
    return len(linked)


# ---------------------------------------------------------------------------------------------
# Deals


def create_deal(
    *,
    session: Session,
    tenant_id: int,
    title: str,
    contact_ids: list[int],
    stage: str = "new",
    amount: float | None = None,
    currency: str = "EUR",
    status: str = "open",
    owner_user_id: int | None = None,
    company_id: int | None = None,
) -> Deal:
    if status not in DEAL_STATUSES:
        raise InvalidInput(f"Deal status must be one of {', '.join(DEAL_STATUSES)}.")
    _own_company(session, tenant_id, company_id)
    _own_user(session, tenant_id, owner_user_id)
    deal = Deal(
        tenant_id=tenant_id,
        title=title,
        stage=stage,
        amount=amount,
        currency=currency,
        status=status,
        owner_user_id=owner_user_id,
        company_id=company_id,
    )
    session.add(deal)
    session.flush()
    for contact_id in contact_ids:
        add_deal_contact(session=session, tenant_id=tenant_id, deal_id=deal.id or 0, contact_id=contact_id)
    return deal


def add_deal_contact(*, session: Session, tenant_id: int, deal_id: int, contact_id: int) -> None:
    deal = session.get(Deal, deal_id)
    if deal is None or deal.tenant_id != tenant_id:
        raise NotFound(f"No deal with id {deal_id}.")
    get_contact(session=session, tenant_id=tenant_id, contact_id=contact_id)
    exists = session.exec(
        select(DealContact).where(DealContact.deal_id == deal_id, DealContact.contact_id == contact_id)
    ).first()
    if exists is None:
        session.add(DealContact(deal_id=deal_id, contact_id=contact_id))
        session.flush()
    link_service.backfill_addresses(
        session=session, tenant_id=tenant_id, emails=contact_emails(session=session, contact_id=contact_id)
    )


def set_deal_status(*, session: Session, tenant_id: int, deal_id: int, status: str) -> Deal:
    if status not in DEAL_STATUSES:
        raise InvalidInput(f"Deal status must be one of {', '.join(DEAL_STATUSES)}.")
    deal = session.get(Deal, deal_id)
    if deal is None or deal.tenant_id != tenant_id:
        raise NotFound(f"No deal with id {deal_id}.")
    deal.status = status
    session.add(deal)
    return deal


# ---------------------------------------------------------------------------------------------
# CSV import


@dataclass(slots=True)
class ImportReport:
    created: int = 0
    updated: int = 0
    unchanged: int = 0
    companies_created: int = 0
    errors: list[RowError] = field(default_factory=list)
    encoding: str = ""
    delimiter: str = ""


def import_contacts(
    *, session: Session, tenant_id: int, data: bytes, allow_test_domains: bool = False
) -> ImportReport:
    """Import a CSV export: good rows in, bad rows reported with line and reason. Idempotent:
    re-importing the same file changes nothing."""
    parsed = parse_contacts_csv(data, allow_test_domains=allow_test_domains)
    report = ImportReport(errors=list(parsed.errors), encoding=parsed.encoding, delimiter=parsed.delimiter)
    owners = {u.email: u.id for u in session.exec(select(User).where(User.tenant_id == tenant_id)).all()}
    for row in parsed.rows:
        if row.email in owners:
            report.errors.append(
                RowError(row.line, f"{row.email} is a user of this workspace, not a contact")
            )
            continue
        company_id = _company_for_row(session, tenant_id, row, report)
        owner_id = owners.get(row.owner_email or "") if row.owner_email else None
        existing = session.exec(
            select(Contact)
            .join(ContactEmail, col(ContactEmail.contact_id) == col(Contact.id))
            .where(ContactEmail.tenant_id == tenant_id, ContactEmail.email == row.email)
        ).first()
        if existing is None:
            create_contact(
                session=session,
                tenant_id=tenant_id,
                emails=[row.email],
                first_name=row.first_name or "",
                last_name=row.last_name or "",
                full_name=row.full_name or "",
                phone=row.phone or "",
                company_id=company_id,
                owner_user_id=owner_id,
                source="import",
            )
            report.created += 1
            continue
        changed = False
        for attr, value in (
            ("first_name", row.first_name),
            ("last_name", row.last_name),
            ("full_name", row.full_name),
            ("phone", row.phone),
            ("company_id", company_id),
            ("owner_user_id", owner_id),
        ):
            if value and getattr(existing, attr) != value:
                setattr(existing, attr, value)
                changed = True
        if changed:
            session.add(existing)
            report.updated += 1
        else:
            report.unchanged += 1
    session.flush()
    return report


def _company_for_row(session: Session, tenant_id: int, row: ContactRow, report: ImportReport) -> int | None:
    if not row.company:
        return None
    company = find_company(session=session, tenant_id=tenant_id, name=row.company)
    if company is None:
        domains = []
        if row.company_domain:
            domains.append(row.company_domain)
        company = create_company(session=session, tenant_id=tenant_id, name=row.company)
        report.companies_created += 1
        for domain in domains:
            try:
                add_company_domain(
                    session=session, tenant_id=tenant_id, company_id=company.id or 0, domain=domain
                )
            except InvalidInput as exc:
                report.errors.append(RowError(row.line, str(exc)))
    return company.id
