"""Decide which CRM records (contacts, companies, deals) one synced message belongs to.

Why a pure module: the linking rules are the part of crm-inbox users argue with ("why is this
email on that deal?"), so they live in one place that takes plain values and returns plain
values, with every proposed link carrying the reason and the address/domain/deal behind it. The
store gathers what the rules need into a `Directory` (use `lookup_keys` to know which contacts
and domains to load), calls `decide_links`, and persists the result; nothing here touches a
database or the network.

Rules, in short:

* A message links to every contact whose address is in From/To/Cc (plus Bcc of outbound mail;
  a Bcc header on inbound mail is ignored), matched case-insensitively, and to those contacts'
  companies (same reason as the contact).
* When the sender's address matches no contact, the sender's domain (exact, then parent domains,
  never a bare public suffix) links a company, except for free-mail and the tenant's own domains.
* Deals: the candidates are the deals of the participating contacts. If the thread is already
  linked to candidates, only those are linked; otherwise every open candidate is. Closed (won or
  lost) deals are linked only when the thread is already linked to them. Deals the thread is
  linked to are inherited by every later message of the thread (reason THREAD).
* Tenant users, connected accounts and addresses at the tenant's own domains are never contacts.
* Forwards: when the sender is the tenant's own (a user, a connected account, an own domain),
  the original senders of inline-forwarded blocks and of attached message/rfc822 parts are
  linked (reason FORWARD), and by domain when they match no contact.
* BCC dropbox: a message in the dropbox account From a tenant user whose address is not a
  connected account is the user's sent mail: recipients are linked with reason BCC and the
  decision names the user (`attributed_user_id`).
* Sticky unlink: records in `Directory.suppressed` are never proposed.
* Optional leads: inbound mail from an unknown, non-automated, non-own sender yields a
  `LeadProposal`; the caller decides whether to create it.

Each record appears at most once, with its strongest reason. Strength order (strongest first):
MANUAL > FORWARD > BCC > ADDRESS > DEAL_PARTICIPANT > THREAD > DOMAIN. Explicit evidence about a
person beats inference about a person, which beats inference from the conversation, which beats
inference from a domain. MANUAL is never produced here; it exists for the store's user links.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from core.types import Direction
from crm.rules.addresses import checked_address
from crm.rules.domains import (
    FREE_MAIL_DOMAINS,
    domain_candidates,
    domain_of,
    is_free_mail,
    is_public_suffix,
    registrable_domain,
)
from crm.rules.forwards import find_forwarded_senders

__all__ = [
    "FREE_MAIL_DOMAINS",
    "Address",
    "AddressRole",
    "ContactRef",
    "ContactSource",
    "DealRef",
    "DealStatus",
    "Direction",
    "Directory",
    "LeadProposal",
    "LinkDecision",
    "LinkReason",
    "LookupKeys",
    "MessageFacts",
    "ProposedLink",
    "RecordKind",
    "decide_links",
    "domain_candidates",
    "domain_of",
    "is_automated",
    "is_free_mail",
    "is_public_suffix",
    "lookup_keys",
    "normalize_email",
    "registrable_domain",
    "split_name",
]


class RecordKind(enum.StrEnum):
    CONTACT = "contact"
    COMPANY = "company"
    DEAL = "deal"


class LinkReason(enum.StrEnum):
    """Why a message is on a record. Declared strongest first; see `strength`."""

    MANUAL = "manual"
    FORWARD = "forward"
    BCC = "bcc"
    ADDRESS = "address"
    DEAL_PARTICIPANT = "deal_participant"
    THREAD = "thread"
    DOMAIN = "domain"

    @property
    def strength(self) -> int:
        """Higher wins when two rules propose the same record."""
        return _STRENGTH[self]


_STRENGTH: dict[LinkReason, int] = {reason: len(LinkReason) - i for i, reason in enumerate(LinkReason)}


class DealStatus(enum.StrEnum):
    OPEN = "open"
    WON = "won"
    LOST = "lost"


class ContactSource(enum.StrEnum):
    """How a contact came to be."""

    MANUAL = "manual"  # created by a user
    IMPORT = "import"  # a CSV import
    LEAD = "lead"  # created from an unknown inbound sender (when the tenant enabled leads)


class AddressRole(enum.StrEnum):
    """Where an address appears in a message (the `message_address` index)."""

    FROM = "from"
    TO = "to"
    CC = "cc"
    BCC = "bcc"
    FORWARDED = "forwarded"  # the original sender of a forwarded block or attached message


@dataclass(frozen=True, slots=True)
class Address:
    """One mailbox. `email` may be in any case; the rules compare lower-cased."""

    email: str
    name: str = ""


@dataclass(frozen=True, slots=True)
class MessageFacts:
    """What the rules need to know about one message."""

    message_id: int  # the stored message's primary key
    direction: Direction
    account_email: str  # the connected account the message was synced from
    from_: Address | None
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    headers: tuple[tuple[str, str], ...] = ()  # (name, value); names compared case-insensitively
    text_body: str = ""
    attached_message_senders: tuple[Address, ...] = ()  # From of attached message/rfc822 parts
    thread_id: int | None = None
    account_is_bcc_dropbox: bool = False
    # `find_forwarded_senders(text_body)` when the caller has it already (the store scans each
    # body once for the address index and linking both); None: scanned here.
    inline_forwarded: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class ContactRef:
    contact_id: int
    company_id: int | None = None
    owner_user_id: int | None = None


@dataclass(frozen=True, slots=True)
class DealRef:
    deal_id: int
    status: DealStatus = DealStatus.OPEN

    @property
    def is_open(self) -> bool:
        return self.status is DealStatus.OPEN


@dataclass(frozen=True, slots=True)
class Directory:
    """A read-only snapshot of the tenant (and of the message's thread) for the rules.

    Only entries for the message's addresses and domains are needed (see `lookup_keys`). Email
    and domain keys are lower-cased on construction, so callers may pass them in any case.
    """

    contacts_by_email: Mapping[str, ContactRef] = field(default_factory=dict)
    company_ids_by_domain: Mapping[str, int] = field(default_factory=dict)
    deals_by_contact_id: Mapping[int, tuple[DealRef, ...]] = field(default_factory=dict)
    own_domains: frozenset[str] = frozenset()
    user_ids_by_email: Mapping[str, int] = field(default_factory=dict)
    connected_account_emails: frozenset[str] = frozenset()
    thread_deal_ids: frozenset[int] = frozenset()  # deals the message's thread is linked to
    suppressed: frozenset[tuple[RecordKind, int]] = frozenset()  # unlinked by a user for the thread

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise keys once, at construction
        set_(self, "contacts_by_email", {k.lower(): v for k, v in self.contacts_by_email.items()})
        set_(self, "company_ids_by_domain", {k.lower(): v for k, v in self.company_ids_by_domain.items()})
        set_(self, "own_domains", frozenset(d.lower().strip(".") for d in self.own_domains))
        set_(self, "user_ids_by_email", {k.lower(): v for k, v in self.user_ids_by_email.items()})
        set_(self, "connected_account_emails", frozenset(e.lower() for e in self.connected_account_emails))

    def for_thread(
        self, thread_deal_ids: frozenset[int], suppressed: frozenset[tuple[RecordKind, int]]
    ) -> Directory:
        """This directory with one message's thread state. The same as `dataclasses.replace`
        with those two fields, without normalising the (already normalised) maps again: a
        batch asks once per message, and the maps hold every contact the batch names."""
        copy = object.__new__(Directory)
        for name in self.__slots__:
            object.__setattr__(copy, name, getattr(self, name))
        object.__setattr__(copy, "thread_deal_ids", thread_deal_ids)
        object.__setattr__(copy, "suppressed", suppressed)
        return copy


@dataclass(frozen=True, slots=True)
class ProposedLink:
    record_kind: RecordKind
    record_id: int
    reason: LinkReason
    detail: str  # the address, domain or thread that caused the link, for "why is this here"


@dataclass(frozen=True, slots=True)
class LeadProposal:
    """A contact the caller may create for an unknown inbound sender."""

    email: str
    first_name: str | None
    last_name: str | None
    full_name: str | None
    company_id: int | None = None  # company matched by the sender's domain, if any


@dataclass(frozen=True, slots=True)
class LinkDecision:
    links: tuple[ProposedLink, ...] = ()
    attributed_user_id: int | None = None  # the tenant user a BCC-dropbox message is from
    lead_proposal: LeadProposal | None = None

    def record_ids(self, kind: RecordKind) -> tuple[int, ...]:
        return tuple(link.record_id for link in self.links if link.record_kind is kind)

    def link_for(self, kind: RecordKind, record_id: int) -> ProposedLink | None:
        for link in self.links:
            if link.record_kind is kind and link.record_id == record_id:
                return link
        return None


@dataclass(frozen=True, slots=True)
class LookupKeys:
    """What the store must load into a `Directory` for one message."""

    emails: frozenset[str]
    domains: frozenset[str]


# --------------------------------------------------------------------------- addresses, domains


def normalize_email(raw: str) -> str | None:
    """Lower-cased, trimmed address, or None when email-validator refuses it (see
    `crm.rules.addresses`)."""
    return checked_address(raw)


# ------------------------------------------------------------------------------- automated mail

_AUTOMATED_LOCAL_PARTS = frozenset(
    {"mailerdaemon", "postmaster", "noreply", "donotreply", "dontreply", "notifications", "notification"}
)
_AUTOMATED_LOCAL_PREFIXES = ("bounce", "noreply", "donotreply", "mailerdaemon")
_BULK_PRECEDENCE = frozenset({"bulk", "list", "junk", "auto_reply"})
_PRESENCE_HEADERS = frozenset({"list-id", "x-autoreply", "x-autorespond", "x-auto-response-suppress"})


def is_automated(headers: Iterable[tuple[str, str]], from_email: str) -> bool:
    """Is this machine-sent mail (auto-replies, bounces, lists, notifications)?

    Signals: Auto-Submitted with any value other than "no"; List-Id, X-Autoreply, X-Autorespond
    or X-Auto-Response-Suppress present; Precedence bulk/list/junk/auto_reply; a sender local
    part such as mailer-daemon, postmaster, no-reply, noreply, do-not-reply, donotreply,
    notifications or bounce* (separators and +tags ignored).
    """
    for name, value in headers:
        key = name.strip().lower()
        folded = value.strip().lower()
        if key == "auto-submitted" and folded.partition(";")[0].strip() != "no":
            return True
        if key in _PRESENCE_HEADERS:
            return True
        if key == "precedence" and folded in _BULK_PRECEDENCE:
            return True
    local = from_email.strip().lower().rpartition("@")[0].partition("+")[0]
    squashed = re.sub(r"[-_.]", "", local)
    return squashed in _AUTOMATED_LOCAL_PARTS or squashed.startswith(_AUTOMATED_LOCAL_PREFIXES)


# ------------------------------------------------------------------------------------- names


def split_name(name: str) -> tuple[str | None, str | None]:
    """Split a display name into (first, last): "Jane Q. Doe" -> ("Jane Q.", "Doe").

    "Doe, Jane" is read as last-name-first. A single word is a first name. Quotes are dropped,
    and a "name" that is an address yields (None, None).
    """
    cleaned = " ".join(name.replace('"', " ").split()).strip(" '")
    if not cleaned or "@" in cleaned:
        return None, None
    if cleaned.count(",") == 1:
        last, first = (part.strip() for part in cleaned.split(","))
        if first and last:
            return first, last
        cleaned = (first or last).strip()
    parts = cleaned.rsplit(" ", 1)
    if len(parts) == 1:
        return parts[0], None
    return parts[0], parts[1]


# ------------------------------------------------------------------------------------ the rules


class _Links:
    """Collects proposals: one per record, strongest reason wins, suppressed ones dropped."""

    def __init__(self, suppressed: frozenset[tuple[RecordKind, int]]) -> None:
        self._suppressed = suppressed
        self._by_key: dict[tuple[RecordKind, int], ProposedLink] = {}

    def add(self, kind: RecordKind, record_id: int, reason: LinkReason, detail: str) -> None:
        key = (kind, record_id)
        if key in self._suppressed:
            return
        current = self._by_key.get(key)
        if current is None or reason.strength > current.reason.strength:
            self._by_key[key] = ProposedLink(kind, record_id, reason, detail)

    def result(self) -> tuple[ProposedLink, ...]:
        return tuple(self._by_key.values())


def _is_own(email: str, directory: Directory) -> bool:
    if email in directory.user_ids_by_email or email in directory.connected_account_emails:
        return True
    return any(d in directory.own_domains for d in domain_candidates(domain_of(email)))


def _company_by_domain(email: str, directory: Directory) -> tuple[int, str] | None:
    """(company id, matched domain) for an address's domain; never free-mail or own domains."""
    domain = domain_of(email)
    if not domain or is_free_mail(domain):
        return None
    candidates = domain_candidates(domain)
    if any(d in directory.own_domains for d in candidates):
        return None
    for candidate in candidates:
        company_id = directory.company_ids_by_domain.get(candidate)
        if company_id is not None:
            return company_id, candidate
    return None


def _emails(addresses: Iterable[Address]) -> list[str]:
    return [e for e in (normalize_email(a.email) for a in addresses) if e is not None]


def _forwarded_senders(facts: MessageFacts) -> list[str]:
    inline = facts.inline_forwarded
    if inline is None:
        inline = tuple(email for email, _ in find_forwarded_senders(facts.text_body))
    return list(dict.fromkeys([*inline, *_emails(facts.attached_message_senders)]))


def lookup_keys(facts: MessageFacts) -> LookupKeys:
    """Every address and domain `decide_links` may look up for this message."""
    emails = _emails(
        [*((facts.from_,) if facts.from_ else ()), *facts.to, *facts.cc, *facts.bcc]
    ) + _forwarded_senders(facts)
    normalized_account = normalize_email(facts.account_email)
    if normalized_account:
        emails.append(normalized_account)
    domains = {d for e in emails for d in domain_candidates(domain_of(e))}
    return LookupKeys(frozenset(emails), frozenset(domains))


def decide_links(facts: MessageFacts, directory: Directory, *, create_leads: bool) -> LinkDecision:
    """Apply the linking rules (see the module docstring) to one message."""
    links = _Links(directory.suppressed)
    sender = normalize_email(facts.from_.email) if facts.from_ is not None else None
    sender_is_own = sender is not None and _is_own(sender, directory)

    attributed_user_id: int | None = None
    if (
        facts.account_is_bcc_dropbox
        and sender is not None
        and sender in directory.user_ids_by_email
        and sender not in directory.connected_account_emails
    ):
        attributed_user_id = directory.user_ids_by_email[sender]
    dropbox_mode = attributed_user_id is not None

    # (email, reason) for every address the rules consider, in header order.
    participants: list[tuple[str, LinkReason]] = []
    header_reason = LinkReason.BCC if dropbox_mode else LinkReason.ADDRESS
    header_addresses = [*((facts.from_,) if facts.from_ else ()), *facts.to, *facts.cc]
    if facts.direction is Direction.OUTBOUND or dropbox_mode:
        header_addresses.extend(facts.bcc)
    participants.extend((email, header_reason) for email in _emails(header_addresses))
    # Senders whose domain may link a company when they match no contact.
    domain_senders: list[str] = [sender] if sender is not None and not sender_is_own else []
    if sender_is_own:
        forwarded = _forwarded_senders(facts)
        participants.extend((email, LinkReason.FORWARD) for email in forwarded)
        domain_senders.extend(forwarded)

    participating: dict[int, str] = {}  # contact id -> the address that matched it
    for email, reason in participants:
        if _is_own(email, directory):
            continue
        contact = directory.contacts_by_email.get(email)
        if contact is None:
            continue
        links.add(RecordKind.CONTACT, contact.contact_id, reason, email)
        if contact.company_id is not None:
            links.add(RecordKind.COMPANY, contact.company_id, reason, email)
        participating.setdefault(contact.contact_id, email)

    sender_company: tuple[int, str] | None = None
    for email in domain_senders:
        if email in directory.contacts_by_email or _is_own(email, directory):
            continue
        match = _company_by_domain(email, directory)
        if match is not None:
            links.add(RecordKind.COMPANY, match[0], LinkReason.DOMAIN, match[1])
            if email == sender:
                sender_company = match

    _link_deals(links, participating, directory, facts.thread_id)

    lead: LeadProposal | None = None
    if (
        create_leads
        and facts.direction is Direction.INBOUND
        and sender is not None
        and not sender_is_own
        and sender not in directory.contacts_by_email
        and not is_automated(facts.headers, sender)
    ):
        first, last = split_name(facts.from_.name if facts.from_ is not None else "")
        lead = LeadProposal(
            email=sender,
            first_name=first,
            last_name=last,
            full_name=" ".join(part for part in (first, last) if part) or None,
            company_id=sender_company[0] if sender_company else None,
        )

    return LinkDecision(links.result(), attributed_user_id, lead)


def _link_deals(
    links: _Links, participating: Mapping[int, str], directory: Directory, thread_id: int | None
) -> None:
    candidates: dict[int, tuple[DealRef, str]] = {}
    for contact_id, email in participating.items():
        for deal in directory.deals_by_contact_id.get(contact_id, ()):
            candidates.setdefault(deal.deal_id, (deal, email))
    preferred = [deal_id for deal_id in candidates if deal_id in directory.thread_deal_ids]
    # The thread's own deal wins; otherwise every open deal of the people taking part.
    chosen = preferred or [deal_id for deal_id, (deal, _) in candidates.items() if deal.is_open]
    for deal_id in chosen:
        links.add(RecordKind.DEAL, deal_id, LinkReason.DEAL_PARTICIPANT, candidates[deal_id][1])
    thread_detail = f"thread {thread_id}" if thread_id is not None else "thread"
    for deal_id in sorted(directory.thread_deal_ids):
        links.add(RecordKind.DEAL, deal_id, LinkReason.THREAD, thread_detail)
