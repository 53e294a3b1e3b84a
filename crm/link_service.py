"""The linking engine (internal to `crm`): loads what `crm.rules.linking.decide_links` needs,
applies its decisions, and keeps them up to date when records change. It takes a tenant id, not a
Caller: its callers (the mail store's batch, `crm.records`, `crm.backfill`) have already decided
who may do what. What users call is `crm.links` (manual link, unlink, why).

* `link_messages` runs inside the sync's batch transaction, so mail is never stored without its
  links (a crash loses neither or both).
* Backfills are targeted: a new contact address or company domain finds its mail through the
  `message_address` index, never by scanning all mail.
* `MANUAL` links are the user's (`crm.links`): rules never remove them, and they honour the
  thread-level suppression an unlink writes until a user links again.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, update
from sqlmodel import Session, col, select

from core.errors import not_found
from core.types import utcnow
from crm.bulk import insert_many, select_rows
from crm.locks import lock_tenant
from crm.models import (
    CompanyDomain,
    Contact,
    ContactEmail,
    Deal,
    DealContact,
    ImapUid,
    LinkSuppression,
    MailAccount,
    Message,
    MessageAddress,
    MessageLink,
    Tenant,
    User,
)
from crm.rules import linking
from crm.rules.forwards import find_forwarded_senders
from crm.rules.linking import AddressRole, ContactSource, LinkReason, RecordKind
from crm.stored_mail import MailRow, StoredMessage

_MESSAGE_LINK = MessageLink.__table__  # type: ignore[attr-defined]


def _stronger(a: LinkReason, b: LinkReason) -> bool:
    """True when reason `a` outranks reason `b`."""
    return a.strength > b.strength


# ---------------------------------------------------------------------------------------------
# Address index, written with the message


def inline_forwarded(message: MailRow) -> tuple[str, ...]:
    """Senders of the inline-forwarded blocks of a message's text: scanned once per message (it
    costs as much as the rest of linking) and shared by the address index and the rules."""
    return tuple(email for email, _ in find_forwarded_senders(message.text_body))


def address_rows(message: MailRow, forwarded: tuple[str, ...] | None = None) -> list[dict[str, object]]:
    """`message_address` rows for a newly stored message (bulk-inserted by the store).
    `forwarded`: `inline_forwarded(message)` if the caller has it."""
    assert message.id is not None
    rows: dict[tuple[AddressRole, str], None] = {}
    if message.from_email:
        rows[(AddressRole.FROM, message.from_email.lower())] = None
    for role, addresses in (
        (AddressRole.TO, message.to_addrs),
        (AddressRole.CC, message.cc_addrs),
        (AddressRole.BCC, message.bcc_addrs),
    ):
        for address in addresses:
            if address.get("email"):
                rows[(role, address["email"].lower())] = None
    senders = list(inline_forwarded(message) if forwarded is None else forwarded)
    senders += [a["email"] for a in message.attached_message_senders if a.get("email")]
    for email in senders:
        rows[(AddressRole.FORWARDED, email.lower())] = None
    out: list[dict[str, object]] = []
    for role, email in rows:
        if len(email) <= 320:
            domain = linking.domain_of(email)
            out.append(
                {
                    "tenant_id": message.tenant_id,
                    "message_pk": message.id,
                    "role": role,
                    "email": email,
                    "domain": domain[:255],
                    "base_domain": linking.registrable_domain(domain)[:255],
                }
            )
    return out


# ---------------------------------------------------------------------------------------------
# Directory loading


@dataclass(slots=True)
class _TenantContext:
    tenant: Tenant
    own_domains: frozenset[str]
    users: dict[str, int]
    accounts: dict[int, str]


def _tenant_context(session: Session, tenant_id: int) -> _TenantContext:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise not_found("tenant", tenant_id)
    users = {
        email.lower(): user_id or 0
        for email, user_id in select_rows(
            session, select(User.email, User.id).where(User.tenant_id == tenant_id)
        )
    }
    accounts = {
        account_id or 0: email.lower()
        for account_id, email in select_rows(
            session, select(MailAccount.id, MailAccount.email).where(MailAccount.tenant_id == tenant_id)
        )
    }
    return _TenantContext(tenant, frozenset(d.lower() for d in tenant.own_domains), users, accounts)


def _addr(entry: dict[str, str]) -> linking.Address:
    return linking.Address(email=entry.get("email", ""), name=entry.get("name", ""))


def _facts(
    message: MailRow,
    account_id: int | None,
    ctx: _TenantContext,
    forwarded: tuple[str, ...] | None = None,
) -> linking.MessageFacts:
    assert message.id is not None
    return linking.MessageFacts(
        message_id=message.id,
        direction=linking.Direction(message.direction.value),
        account_email=ctx.accounts.get(account_id or 0, ""),
        from_=linking.Address(message.from_email, message.from_name) if message.from_email else None,
        to=tuple(_addr(a) for a in message.to_addrs),
        cc=tuple(_addr(a) for a in message.cc_addrs),
        bcc=tuple(_addr(a) for a in message.bcc_addrs),
        headers=tuple(message.headers.items()),
        text_body=message.text_body,
        attached_message_senders=tuple(_addr(a) for a in message.attached_message_senders),
        thread_id=message.thread_id,
        account_is_bcc_dropbox=account_id is not None and account_id == ctx.tenant.bcc_account_id,
        inline_forwarded=forwarded,
    )


def _load_directory(
    session: Session, tenant_id: int, ctx: _TenantContext, facts: Sequence[linking.MessageFacts]
) -> linking.Directory:
    emails: set[str] = set()
    domains: set[str] = set()
    for fact in facts:
        keys = linking.lookup_keys(fact)
        emails |= keys.emails
        domains |= keys.domains
    contacts: dict[str, linking.ContactRef] = {}
    for chunk in _chunks(sorted(emails)):
        rows = select_rows(
            session,
            select(ContactEmail.email, Contact.id, Contact.company_id, Contact.owner_user_id)
            .join(Contact, col(Contact.id) == col(ContactEmail.contact_id))
            .where(ContactEmail.tenant_id == tenant_id, col(ContactEmail.email).in_(chunk)),
        )
        for email, contact_id, company_id, owner in rows:
            contacts[email] = linking.ContactRef(contact_id or 0, company_id, owner)
    companies: dict[str, int] = {}
    for chunk in _chunks(sorted(domains)):
        for domain, company_id in select_rows(
            session,
            select(CompanyDomain.domain, CompanyDomain.company_id).where(
                CompanyDomain.tenant_id == tenant_id, col(CompanyDomain.domain).in_(chunk)
            ),
        ):
            companies[domain] = company_id
    deals: dict[int, list[linking.DealRef]] = defaultdict(list)
    contact_ids = sorted({c.contact_id for c in contacts.values()})
    for chunk in _chunks(contact_ids):
        for contact_id, deal_id, status in select_rows(
            session,
            select(DealContact.contact_id, Deal.id, Deal.status)
            .join(Deal, col(Deal.id) == col(DealContact.deal_id))
            .where(col(DealContact.contact_id).in_(chunk)),
        ):
            deals[contact_id].append(linking.DealRef(deal_id or 0, linking.DealStatus(status)))
    return linking.Directory(
        contacts_by_email=contacts,
        company_ids_by_domain=companies,
        deals_by_contact_id={k: tuple(v) for k, v in deals.items()},
        own_domains=ctx.own_domains,
        user_ids_by_email=ctx.users,
        connected_account_emails=frozenset(ctx.accounts.values()),
    )


def _chunks(items: Sequence[object], size: int = 500) -> Iterable[list[object]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _thread_state(
    session: Session, thread_ids: set[int], exclude_pks: frozenset[int] = frozenset()
) -> tuple[dict[int, set[int]], dict[int, set[tuple[RecordKind, int]]]]:
    """Deals each thread is linked to, and its sticky unlinks. `exclude_pks`: messages being
    re-decided, whose own links must not vouch for themselves."""
    deals: dict[int, set[int]] = defaultdict(set)
    suppressed: dict[int, set[tuple[RecordKind, int]]] = defaultdict(set)
    for chunk in _chunks(sorted(thread_ids)):
        for thread_id, deal_id in select_rows(
            session,
            select(Message.thread_id, MessageLink.record_id)
            .join(Message, col(Message.id) == col(MessageLink.message_pk))
            .where(
                col(Message.thread_id).in_(chunk),
                MessageLink.record_kind == RecordKind.DEAL,
                col(MessageLink.message_pk).not_in(sorted(exclude_pks) or [0]),
            ),
        ):
            if thread_id is not None:
                deals[thread_id].add(deal_id)
        for row in session.exec(
            select(LinkSuppression).where(col(LinkSuppression.thread_id).in_(chunk))
        ).all():
            suppressed[row.thread_id].add((row.record_kind, row.record_id))
    return deals, suppressed


def _account_of(session: Session, message_pks: Sequence[int]) -> dict[int, int]:
    """One account per message (the first place it was seen), for BCC-dropbox detection."""
    found: dict[int, int] = {}
    for chunk in _chunks(list(message_pks)):
        for message_pk, account_id in session.exec(
            select(ImapUid.message_pk, ImapUid.account_id)
            .where(col(ImapUid.message_pk).in_(chunk))
            .order_by(col(ImapUid.id))
        ).all():
            if message_pk is not None:
                found.setdefault(message_pk, account_id)
    return found


# ---------------------------------------------------------------------------------------------
# Applying decisions


@dataclass(slots=True)
class LinkStats:
    messages: int = 0
    links_added: int = 0
    links_removed: int = 0
    leads_created: int = 0


def link_messages(
    *,
    session: Session,
    tenant_id: int,
    message_pks: Sequence[int],
    account_id: int | None = None,
    reconcile: bool = False,
    preloaded: Sequence[MailRow] | None = None,
    create_leads: bool = False,
    forwarded: dict[int, tuple[str, ...]] | None = None,
) -> LinkStats:
    """Decide and write the links of these messages. `reconcile` also removes rule-made links
    no longer proposed (after an address was removed); MANUAL links are never touched.
    `preloaded`: the same messages as rows the caller already holds (saves a reload);
    `forwarded`: `inline_forwarded` of each message by id, if the caller has it.
    `create_leads`: only for newly synced mail (when the tenant enabled it); a backfill or a
    re-decide after an address was removed must not turn that address into a lead."""
    stats = LinkStats()
    if not message_pks:
        return stats
    lock_tenant(session=session, tenant_id=tenant_id)
    ctx = _tenant_context(session, tenant_id)
    messages: list[MailRow] = list(preloaded or [])
    if not messages:
        for chunk in _chunks(sorted(set(message_pks))):
            messages += session.exec(
                select(Message).where(col(Message.id).in_(chunk), Message.tenant_id == tenant_id)
            ).all()
    messages.sort(key=lambda m: (m.date is None, m.date, m.id))
    accounts = _account_of(session, [m.id or 0 for m in messages]) if account_id is None else {}
    scanned = forwarded or {}
    facts = [
        _facts(
            m,
            account_id if account_id is not None else accounts.get(m.id or 0),
            ctx,
            scanned.get(m.id or 0),
        )
        for m in messages
    ]
    directory = _load_directory(session, tenant_id, ctx, facts)
    thread_deals, suppressed = _thread_state(
        session,
        {m.thread_id for m in messages if m.thread_id},
        frozenset(m.id or 0 for m in messages) if reconcile else frozenset(),
    )
    # Rows the store inserted in this very transaction have no links yet: nothing to look up.
    fresh = bool(preloaded) and all(isinstance(m, StoredMessage) for m in messages)
    existing = {} if fresh else _existing_links(session, [m.id or 0 for m in messages])
    new_rows: list[dict[str, object]] = []
    attributed: list[dict[str, object]] = []
    for message, fact in zip(messages, facts, strict=True):
        thread = message.thread_id or 0
        per_message = directory.for_thread(
            frozenset(thread_deals.get(thread, ())), frozenset(suppressed.get(thread, ()))
        )
        leads = create_leads and ctx.tenant.auto_create_leads
        decision = linking.decide_links(fact, per_message, create_leads=leads)
        if decision.lead_proposal is not None and leads:
            contact = _create_lead(session, tenant_id, decision.lead_proposal)
            stats.leads_created += 1
            assert isinstance(directory.contacts_by_email, dict)
            directory.contacts_by_email[decision.lead_proposal.email] = linking.ContactRef(
                contact.id or 0, contact.company_id, None
            )
            per_message = dataclasses.replace(per_message, contacts_by_email=directory.contacts_by_email)
            decision = linking.decide_links(fact, per_message, create_leads=False)
        if (
            decision.attributed_user_id is not None
            and message.attributed_user_id != decision.attributed_user_id
        ):
            message.attributed_user_id = decision.attributed_user_id
            if isinstance(message, Message):
                session.add(message)
            else:  # a row of the store's batch, written with Core
                attributed.append({"pk": message.id, "user": decision.attributed_user_id})
        added, removed = _apply(
            session,
            tenant_id,
            message.id or 0,
            decision,
            existing.get(message.id or 0, {}),
            reconcile,
            new_rows,
        )
        stats.links_added += added
        stats.links_removed += removed
        stats.messages += 1
        for link in decision.links:
            if link.record_kind is RecordKind.DEAL:
                thread_deals[thread].add(link.record_id)
    if new_rows:
        if session.autoflush:  # what the ORM's execute of an insert did first
            session.flush()
        insert_many(session.connection(), _MESSAGE_LINK, new_rows)
    if attributed:
        table = Message.__table__  # type: ignore[attr-defined]
        session.connection().execute(
            update(table).where(table.c.id == bindparam("pk")).values(attributed_user_id=bindparam("user")),
            attributed,
        )
    session.flush()
    return stats


def _existing_links(
    session: Session, message_pks: Sequence[int]
) -> dict[int, dict[tuple[RecordKind, int], MessageLink]]:
    found: dict[int, dict[tuple[RecordKind, int], MessageLink]] = defaultdict(dict)
    for chunk in _chunks(list(message_pks)):
        for row in session.exec(select(MessageLink).where(col(MessageLink.message_pk).in_(chunk))).all():
            found[row.message_pk][(row.record_kind, row.record_id)] = row
    return found


def _apply(
    session: Session,
    tenant_id: int,
    message_pk: int,
    decision: linking.LinkDecision,
    existing: dict[tuple[RecordKind, int], MessageLink],
    reconcile: bool,
    new_rows: list[dict[str, object]],
) -> tuple[int, int]:
    added = removed = 0
    proposed = {(link.record_kind, link.record_id): link for link in decision.links}
    now = utcnow()
    for key, link in proposed.items():
        row = existing.get(key)
        if row is None:
            new_rows.append(
                {
                    "tenant_id": tenant_id,
                    "message_pk": message_pk,
                    "record_kind": key[0],
                    "record_id": key[1],
                    "reason": link.reason,
                    "detail": link.detail,
                    "created_at": now,
                }
            )
            added += 1
        elif row.reason != LinkReason.MANUAL and (
            # Re-deciding (after a removal) states today's reason, even a weaker one.
            _stronger(link.reason, LinkReason(row.reason))
            or (reconcile and (row.reason, row.detail) != (link.reason, link.detail))
        ):
            row.reason, row.detail = link.reason, link.detail
            session.add(row)
    if reconcile:
        for key, row in list(existing.items()):
            if key not in proposed and row.reason != LinkReason.MANUAL:
                session.delete(row)
                del existing[key]
                removed += 1
    return added, removed


def _create_lead(session: Session, tenant_id: int, proposal: linking.LeadProposal) -> Contact:
    contact = Contact(
        tenant_id=tenant_id,
        first_name=proposal.first_name or "",
        last_name=proposal.last_name or "",
        full_name=proposal.full_name or proposal.email,
        company_id=proposal.company_id,
        source=ContactSource.LEAD,
    )
    session.add(contact)
    session.flush()
    session.add(ContactEmail(tenant_id=tenant_id, contact_id=contact.id or 0, email=proposal.email))
    session.flush()
    return contact


# ---------------------------------------------------------------------------------------------
# Targeted backfills


def messages_with_addresses(*, session: Session, tenant_id: int, emails: Iterable[str]) -> list[int]:
    emails = sorted({e.lower() for e in emails})
    found: set[int] = set()
    for chunk in _chunks(emails):
        found.update(
            session.exec(
                select(MessageAddress.message_pk).where(
                    MessageAddress.tenant_id == tenant_id, col(MessageAddress.email).in_(chunk)
                )
            ).all()
        )
    return sorted(found)


def messages_with_domains(*, session: Session, tenant_id: int, domains: Iterable[str]) -> list[int]:
    """Mail whose sender (or forwarded original sender) is at one of these domains or their
    subdomains; only those can link a company by domain. The registrable-domain index narrows
    the rows first; the exact/subdomain test then runs on those few."""
    found: set[int] = set()
    for domain in {d.lower() for d in domains}:
        base = linking.registrable_domain(domain)
        if not base:
            continue
        found.update(
            session.exec(
                select(MessageAddress.message_pk).where(
                    MessageAddress.tenant_id == tenant_id,
                    MessageAddress.base_domain == base,
                    col(MessageAddress.role).in_(["from", "forwarded"]),
                    (col(MessageAddress.domain) == domain)
                    | col(MessageAddress.domain).endswith("." + domain),
                )
            ).all()
        )
    return sorted(found)


def backfill_addresses(*, session: Session, tenant_id: int, emails: Iterable[str]) -> LinkStats:
    """Link mail already synced to a contact address added now: only that mail is touched."""
    lock_tenant(session=session, tenant_id=tenant_id)
    pks = messages_with_addresses(session=session, tenant_id=tenant_id, emails=emails)
    return link_messages(session=session, tenant_id=tenant_id, message_pks=pks)


def backfill_domains(*, session: Session, tenant_id: int, domains: Iterable[str]) -> LinkStats:
    """Link mail already synced to a company domain added now (and its subdomains)."""
    lock_tenant(session=session, tenant_id=tenant_id)
    pks = messages_with_domains(session=session, tenant_id=tenant_id, domains=domains)
    return link_messages(session=session, tenant_id=tenant_id, message_pks=pks)


def relink_after_removal(*, session: Session, tenant_id: int, message_pks: Sequence[int]) -> LinkStats:
    """Re-decide mail after an address was removed: what was linked only through it goes."""
    lock_tenant(session=session, tenant_id=tenant_id)
    return link_messages(session=session, tenant_id=tenant_id, message_pks=message_pks, reconcile=True)
