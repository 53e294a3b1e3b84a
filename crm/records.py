"""Contacts, companies and deals: the tenant's shared address book, as the acting user changes it.

Who may do what: every user of the tenant reads and edits records (a sales CRM: members add the
people they write to); a record of another tenant is never visible (`<kind>_not_found`, the same
answer as for a missing one). Imports write many records at once and are admin-only
(`crm.contact_import`).

Every change that can make already-synced mail belong to a record runs a targeted backfill (only
the mail carrying that address or domain), and removing an address re-decides only the mail that
was linked through it. These single-record backfills touch one address's or one domain's mail
and run in the caller's transaction; bulk changes (imports) are linked afterwards in short
chunks by `crm.backfill`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from email_validator import EmailNotValidError, validate_email
from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import Conflict, InvalidInput, NotFound, not_found
from crm import link_service
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
from crm.rules.linking import ContactSource, DealStatus, LinkReason, is_public_suffix

__all__ = [
    "CompanyView",
    "ContactView",
    "DealView",
    "add_company_domain",
    "add_contact_email",
    "add_deal_contact",
    "check_domain_free",
    "clean_domain",
    "clean_email",
    "create_company",
    "create_contact",
    "create_deal",
    "find_company",
    "get_company",
    "get_contact",
    "get_deal",
    "remove_contact_email",
    "set_deal_status",
    "user_emails",
]


# ---------------------------------------------------------------------------------------------
# Views


@dataclass(frozen=True, slots=True)
class CompanyView:
    id: int
    name: str
    domains: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class ContactView:
    id: int
    full_name: str
    first_name: str
    last_name: str
    phone: str
    company_id: int | None
    owner_user_id: int | None
    source: ContactSource
    emails: tuple[str, ...]
    created_at: datetime


@dataclass(frozen=True, slots=True)
class DealView:
    id: int
    title: str
    stage: str
    amount: float | None
    currency: str
    status: DealStatus
    owner_user_id: int | None
    company_id: int | None
    contact_ids: tuple[int, ...]
    created_at: datetime


def _company_view(session: Session, company: Company) -> CompanyView:
    domains = session.exec(
        select(CompanyDomain.domain)
        .where(CompanyDomain.company_id == company.id)
        .order_by(col(CompanyDomain.domain))
    ).all()
    return CompanyView(company.id or 0, company.name, tuple(domains), company.created_at)


def _contact_view(session: Session, contact: Contact) -> ContactView:
    emails = session.exec(
        select(ContactEmail.email).where(ContactEmail.contact_id == contact.id).order_by(col(ContactEmail.id))
    ).all()
    return ContactView(
        id=contact.id or 0,
        full_name=contact.full_name,
        first_name=contact.first_name,
        last_name=contact.last_name,
        phone=contact.phone,
        company_id=contact.company_id,
        owner_user_id=contact.owner_user_id,
        source=ContactSource(contact.source),
        emails=tuple(emails),
        created_at=contact.created_at,
    )


def _deal_view(session: Session, deal: Deal) -> DealView:
    contact_ids = session.exec(
        select(DealContact.contact_id).where(DealContact.deal_id == deal.id).order_by(col(DealContact.id))
    ).all()
    return DealView(
        id=deal.id or 0,
        title=deal.title,
        stage=deal.stage,
        amount=deal.amount,
        currency=deal.currency,
        status=DealStatus(deal.status),
        owner_user_id=deal.owner_user_id,
        company_id=deal.company_id,
        contact_ids=tuple(contact_ids),
        created_at=deal.created_at,
    )


# ---------------------------------------------------------------------------------------------
# Input checks (pure)


def clean_email(email: str, *, allow_test_domains: bool = True) -> str:
    """A contact address, checked by email-validator and lower-cased (contacts are matched
    case-insensitively against synced mail). `.test` addresses (RFC 2606, never real mail) are
    accepted unless `allow_test_domains` is False; other reserved names (`.local`, `localhost`,
    `.invalid`) never are."""
    try:
        checked = validate_email(
            email.strip().strip("<>").strip(),
            check_deliverability=False,
            test_environment=allow_test_domains,
        )
    except EmailNotValidError as exc:
        raise InvalidInput(
            "invalid_email", f"{email!r} is not an e-mail address: {exc}", email=email
        ) from None
    return checked.normalized.lower()


def clean_domain(domain: str) -> str:
    """A company's mail domain: "https://www.Acme.com/about" -> "acme.com". A public suffix
    ("co.uk", "github.io") is refused: it is shared by unrelated organisations."""
    cleaned = domain.strip().lower().removeprefix("http://").removeprefix("https://").removeprefix("www.")
    cleaned = cleaned.split("/", 1)[0].rstrip(".")
    labels = cleaned.split(".")
    if len(labels) < 2 or not all(labels) or any(not (c.isalnum() or c in "-.") for c in cleaned):
        raise InvalidInput("invalid_domain", f"{domain!r} is not a domain name.", domain=domain)
    if is_public_suffix(cleaned):
        raise InvalidInput(
            "domain_is_public_suffix",
            f"{cleaned} is a public suffix shared by unrelated organisations, not a company's domain.",
            domain=cleaned,
        )
    return cleaned


def parse_deal_status(status: DealStatus | str) -> DealStatus:
    try:
        return DealStatus(status)
    except ValueError:
        raise InvalidInput(
            "invalid_deal_status",
            f"Deal status must be one of {', '.join(DealStatus)}.",
            status=str(status),
            allowed=list(DealStatus),
        ) from None


# ---------------------------------------------------------------------------------------------
# Lookups within the caller's tenant (records are shared by all its users)


def _company_row(session: Session, caller: Caller, company_id: int) -> Company:
    company = session.get(Company, company_id)
    if company is None or company.tenant_id != caller.tenant_id:
        raise not_found("company", company_id)
    return company


def _contact_row(session: Session, caller: Caller, contact_id: int) -> Contact:
    contact = session.get(Contact, contact_id)
    if contact is None or contact.tenant_id != caller.tenant_id:
        raise not_found("contact", contact_id)
    return contact


def _deal_row(session: Session, caller: Caller, deal_id: int) -> Deal:
    deal = session.get(Deal, deal_id)
    if deal is None or deal.tenant_id != caller.tenant_id:
        raise not_found("deal", deal_id)
    return deal


def _require_user(session: Session, caller: Caller, user_id: int | None) -> None:
    if user_id is None:
        return
    user = session.get(User, user_id)
    if user is None or user.tenant_id != caller.tenant_id:
        raise not_found("user", user_id)


def _refuse_taken(session: Session, tenant_id: int, email: str) -> None:
    taken = session.exec(
        select(ContactEmail).where(ContactEmail.tenant_id == tenant_id, ContactEmail.email == email)
    ).first()
    if taken is not None:
        raise Conflict(
            "email_taken",
            f"{email} already belongs to contact {taken.contact_id}.",
            email=email,
            contact_id=taken.contact_id,
        )


def user_emails(session: Session, tenant_id: int) -> dict[str, int]:
    """The tenant's users by lower-cased address (never contacts: their mail would link all)."""
    return {
        email.lower(): user_id or 0
        for email, user_id in session.exec(
            select(User.email, User.id).where(User.tenant_id == tenant_id)
        ).all()
    }


def _refuse_own_addresses(session: Session, tenant_id: int, emails: Sequence[str]) -> None:
    users = user_emails(session, tenant_id)
    for email in emails:
        if email in users:
            raise InvalidInput(
                "email_is_user", f"{email} is a user of this workspace and cannot be a contact.", email=email
            )


# ---------------------------------------------------------------------------------------------
# Companies


def create_company(
    *, session: Session, caller: Caller, name: str, domains: Sequence[str] = ()
) -> CompanyView:
    company = Company(tenant_id=caller.tenant_id, name=name.strip())
    session.add(company)
    session.flush()
    for domain in domains:
        add_company_domain(session=session, caller=caller, company_id=company.id or 0, domain=domain)
    return _company_view(session, company)


def add_company_domain(*, session: Session, caller: Caller, company_id: int, domain: str) -> None:
    """Give a company a mail domain; its (and its subdomains') synced senders are linked now."""
    _company_row(session, caller, company_id)
    domain = clean_domain(domain)
    if check_domain_free(session, caller.tenant_id, company_id, domain):
        return
    session.add(CompanyDomain(tenant_id=caller.tenant_id, company_id=company_id, domain=domain))
    session.flush()
    link_service.backfill_domains(session=session, tenant_id=caller.tenant_id, domains=[domain])


def check_domain_free(session: Session, tenant_id: int, company_id: int, domain: str) -> bool:
    """True when the company already has the domain; `domain_taken` when another one has it."""
    taken = session.exec(
        select(CompanyDomain).where(CompanyDomain.tenant_id == tenant_id, CompanyDomain.domain == domain)
    ).first()
    if taken is None:
        return False
    if taken.company_id == company_id:
        return True
    raise Conflict(
        "domain_taken",
        f"The domain {domain} already belongs to company {taken.company_id}.",
        domain=domain,
        company_id=taken.company_id,
    )


def get_company(*, session: Session, caller: Caller, company_id: int) -> CompanyView:
    return _company_view(session, _company_row(session, caller, company_id))


def find_company(*, session: Session, caller: Caller, name: str) -> CompanyView | None:
    company = session.exec(
        select(Company)
        .where(Company.tenant_id == caller.tenant_id, Company.name == name.strip())
        .order_by(col(Company.id))
    ).first()
    return None if company is None else _company_view(session, company)


# ---------------------------------------------------------------------------------------------
# Contacts


def new_contact_rows(
    session: Session,
    tenant_id: int,
    *,
    emails: Sequence[str],
    first_name: str = "",
    last_name: str = "",
    full_name: str = "",
    phone: str = "",
    company_id: int | None = None,
    owner_user_id: int | None = None,
    source: ContactSource = ContactSource.MANUAL,
) -> Contact:
    """Insert a contact and its (already checked) addresses, without linking any mail."""
    contact = Contact(
        tenant_id=tenant_id,
        first_name=first_name,
        last_name=last_name,
        full_name=full_name or f"{first_name} {last_name}".strip() or (emails[0] if emails else ""),
        phone=phone,
        company_id=company_id,
        owner_user_id=owner_user_id,
        source=source,
    )
    session.add(contact)
    session.flush()
    for email in emails:
        session.add(ContactEmail(tenant_id=tenant_id, contact_id=contact.id or 0, email=email))
    return contact


def create_contact(
    *,
    session: Session,
    caller: Caller,
    emails: Sequence[str],
    first_name: str = "",
    last_name: str = "",
    full_name: str = "",
    phone: str = "",
    company_id: int | None = None,
    owner_user_id: int | None = None,
) -> ContactView:
    """Create a contact; mail already synced with its addresses is linked at once."""
    cleaned = list(dict.fromkeys(clean_email(e) for e in emails))
    if company_id is not None:
        _company_row(session, caller, company_id)
    _require_user(session, caller, owner_user_id)
    _refuse_own_addresses(session, caller.tenant_id, cleaned)
    for email in cleaned:
        _refuse_taken(session, caller.tenant_id, email)
    contact = new_contact_rows(
        session,
        caller.tenant_id,
        emails=cleaned,
        first_name=first_name,
        last_name=last_name,
        full_name=full_name,
        phone=phone,
        company_id=company_id,
        owner_user_id=owner_user_id,
    )
    session.flush()
    link_service.backfill_addresses(session=session, tenant_id=caller.tenant_id, emails=cleaned)
    return _contact_view(session, contact)


def get_contact(*, session: Session, caller: Caller, contact_id: int) -> ContactView:
    return _contact_view(session, _contact_row(session, caller, contact_id))


def add_contact_email(*, session: Session, caller: Caller, contact_id: int, email: str) -> None:
    _contact_row(session, caller, contact_id)
    email = clean_email(email)
    _refuse_own_addresses(session, caller.tenant_id, [email])
    _refuse_taken(session, caller.tenant_id, email)
    session.add(ContactEmail(tenant_id=caller.tenant_id, contact_id=contact_id, email=email))
    session.flush()
    link_service.backfill_addresses(session=session, tenant_id=caller.tenant_id, emails=[email])


def remove_contact_email(*, session: Session, caller: Caller, contact_id: int, email: str) -> int:
    """Remove an address; mail linked to the contact only through it is unlinked. Returns how
    many messages were re-decided."""
    _contact_row(session, caller, contact_id)
    wanted = email.strip().strip("<>").strip().lower()
    row = session.exec(
        select(ContactEmail).where(ContactEmail.contact_id == contact_id, ContactEmail.email == wanted)
    ).first()
    if row is None:
        raise NotFound(
            "contact_email_not_found",
            f"Contact {contact_id} has no address {wanted}.",
            contact_id=contact_id,
            email=wanted,
        )
    session.delete(row)
    session.flush()
    # Only mail that carried this address can lose links; everything else is untouched.
    tenant_id = caller.tenant_id
    affected = link_service.messages_with_addresses(session=session, tenant_id=tenant_id, emails=[wanted])
    linked = set(
        session.exec(
            select(MessageLink.message_pk).where(
                col(MessageLink.message_pk).in_(affected or [0]),
                col(MessageLink.reason) != LinkReason.MANUAL,
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
    caller: Caller,
    title: str,
    contact_ids: Sequence[int],
    stage: str = "new",
    amount: float | None = None,
    currency: str = "EUR",
    status: DealStatus | str = DealStatus.OPEN,
    owner_user_id: int | None = None,
    company_id: int | None = None,
) -> DealView:
    """Create a deal; its contacts' synced mail is linked at once (open deals only)."""
    checked = parse_deal_status(status)
    if company_id is not None:
        _company_row(session, caller, company_id)
    _require_user(session, caller, owner_user_id)
    deal = Deal(
        tenant_id=caller.tenant_id,
        title=title,
        stage=stage,
        amount=amount,
        currency=currency,
        status=checked,
        owner_user_id=owner_user_id,
        company_id=company_id,
    )
    session.add(deal)
    session.flush()
    for contact_id in contact_ids:
        add_deal_contact(session=session, caller=caller, deal_id=deal.id or 0, contact_id=contact_id)
    return _deal_view(session, deal)


def get_deal(*, session: Session, caller: Caller, deal_id: int) -> DealView:
    return _deal_view(session, _deal_row(session, caller, deal_id))


def add_deal_contact(*, session: Session, caller: Caller, deal_id: int, contact_id: int) -> None:
    _deal_row(session, caller, deal_id)
    _contact_row(session, caller, contact_id)
    exists = session.exec(
        select(DealContact).where(DealContact.deal_id == deal_id, DealContact.contact_id == contact_id)
    ).first()
    if exists is None:
        session.add(DealContact(deal_id=deal_id, contact_id=contact_id))
        session.flush()
    emails = session.exec(select(ContactEmail.email).where(ContactEmail.contact_id == contact_id)).all()
    link_service.backfill_addresses(session=session, tenant_id=caller.tenant_id, emails=emails)


def set_deal_status(*, session: Session, caller: Caller, deal_id: int, status: DealStatus | str) -> DealView:
    """Mark a deal open, won or lost (closed deals get no new mail by rule, only by hand)."""
    checked = parse_deal_status(status)
    deal = _deal_row(session, caller, deal_id)
    deal.status = checked
    session.add(deal)
    session.flush()
    return _deal_view(session, deal)
