"""The message-to-record linking rules, one table per rule."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from crm.rules.linking import (
    Address,
    ContactRef,
    DealRef,
    DealStatus,
    Direction,
    Directory,
    LeadProposal,
    LinkDecision,
    LinkReason,
    MessageFacts,
    ProposedLink,
    RecordKind,
    decide_links,
    domain_candidates,
    domain_of,
    is_automated,
    is_free_mail,
    is_public_suffix,
    lookup_keys,
    normalize_email,
    registrable_domain,
    split_name,
)

FORWARDS = Path(__file__).resolve().parent.parent / "fixtures" / "forwards"

C, CO, D = RecordKind.CONTACT, RecordKind.COMPANY, RecordKind.DEAL
JANE, JOE, JEAN, FRED, BOGUS_USER, BOGUS_OWN = 10, 11, 12, 13, 99, 98
ACME, GLOBEX, GMAIL_CO, OURCO, SUFFIX, INITECH = 100, 200, 300, 400, 500, 600
ACME_OPEN, ACME_WON, JOE_OPEN, JEAN_LOST, OTHER_DEAL = 1000, 1001, 1002, 1003, 1004
BOB, ALICE, CAROL = 1, 2, 3

DIRECTORY = Directory(
    contacts_by_email={
        "jane@acme.example": ContactRef(JANE, company_id=ACME, owner_user_id=BOB),
        "Joe@Acme.example": ContactRef(JOE, company_id=ACME),
        "jean@globex.example": ContactRef(JEAN),
        "fred@gmail.com": ContactRef(FRED),
        # Bad data: a tenant user and an own-domain address stored as contacts.
        "bob@ourco.example": ContactRef(BOGUS_USER),
        "info@ourco.example": ContactRef(BOGUS_OWN),
    },
    company_ids_by_domain={
        "acme.example": ACME,
        "globex.example": GLOBEX,
        "gmail.com": GMAIL_CO,
        "ourco.example": OURCO,
        "co.uk": SUFFIX,
        "initech.co.uk": INITECH,
    },
    deals_by_contact_id={
        JANE: (DealRef(ACME_OPEN), DealRef(ACME_WON, DealStatus.WON)),
        JOE: (DealRef(JOE_OPEN),),
        JEAN: (DealRef(JEAN_LOST, DealStatus.LOST),),
    },
    own_domains=frozenset({"OurCo.example"}),
    user_ids_by_email={"bob@ourco.example": BOB, "alice@ourco.example": ALICE, "carol@ourco.example": CAROL},
    connected_account_emails=frozenset({"sales@ourco.example", "bob@ourco.example", "dropbox@ourco.example"}),
)

# The forward fixtures quote Jane as jane.doe@acme.example.
JANE_DOE_DIRECTORY = replace(
    DIRECTORY,
    contacts_by_email={
        **DIRECTORY.contacts_by_email,
        "jane.doe@acme.example": ContactRef(JANE, company_id=ACME),
    },
)


def facts(
    sender: str | None,
    *,
    to: tuple[str, ...] = ("sales@ourco.example",),
    cc: tuple[str, ...] = (),
    bcc: tuple[str, ...] = (),
    direction: Direction = Direction.INBOUND,
    name: str = "",
    headers: tuple[tuple[str, str], ...] = (),
    body: str = "",
    attached: tuple[str, ...] = (),
    account: str = "sales@ourco.example",
    dropbox: bool = False,
) -> MessageFacts:
    return MessageFacts(
        message_id=7,
        direction=direction,
        account_email=account,
        from_=Address(sender, name) if sender is not None else None,
        to=tuple(Address(a) for a in to),
        cc=tuple(Address(a) for a in cc),
        bcc=tuple(Address(a) for a in bcc),
        headers=headers,
        text_body=body,
        attached_message_senders=tuple(Address(a) for a in attached),
        thread_id=55,
        account_is_bcc_dropbox=dropbox,
    )


def decide(message: MessageFacts, directory: Directory = DIRECTORY, *, leads: bool = False) -> LinkDecision:
    return decide_links(message, directory, create_leads=leads)


def keyed(decision: LinkDecision) -> dict[tuple[RecordKind, int], tuple[LinkReason, str]]:
    out = {(link.record_kind, link.record_id): (link.reason, link.detail) for link in decision.links}
    assert len(out) == len(decision.links), "a record was proposed twice"
    return out


# ------------------------------------------------------------------------- addresses and companies


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        pytest.param(
            facts("JANE@ACME.EXAMPLE"),
            {
                (C, JANE): (LinkReason.ADDRESS, "jane@acme.example"),
                (CO, ACME): (LinkReason.ADDRESS, "jane@acme.example"),
                (D, ACME_OPEN): (LinkReason.DEAL_PARTICIPANT, "jane@acme.example"),
            },
            id="case-insensitive-sender-with-company-and-open-deal",
        ),
        pytest.param(
            facts("sales@ourco.example", to=("joe@ACME.example",), direction=Direction.OUTBOUND),
            {
                (C, JOE): (LinkReason.ADDRESS, "joe@acme.example"),
                (CO, ACME): (LinkReason.ADDRESS, "joe@acme.example"),
                (D, JOE_OPEN): (LinkReason.DEAL_PARTICIPANT, "joe@acme.example"),
            },
            id="outbound-recipient-mixed-case-directory-key",
        ),
        pytest.param(
            facts("jean@globex.example", cc=("fred@gmail.com",)),
            {
                (C, JEAN): (LinkReason.ADDRESS, "jean@globex.example"),
                (C, FRED): (LinkReason.ADDRESS, "fred@gmail.com"),
            },
            id="contact-without-company-gets-no-domain-company-and-no-closed-deal",
        ),
        pytest.param(
            facts("new.person@globex.example"),
            {(CO, GLOBEX): (LinkReason.DOMAIN, "globex.example")},
            id="unknown-sender-company-by-domain",
        ),
        pytest.param(
            facts("new.person@mail.eu.Globex.example"),
            {(CO, GLOBEX): (LinkReason.DOMAIN, "globex.example")},
            id="unknown-sender-company-by-parent-domain",
        ),
        pytest.param(
            facts("someone@sales.initech.co.uk"),
            {(CO, INITECH): (LinkReason.DOMAIN, "initech.co.uk")},
            id="parent-domain-under-cctld-registry",
        ),
        pytest.param(facts("someone@unknown.co.uk"), {}, id="bare-public-suffix-never-matched"),
        pytest.param(facts("someone@gmail.com"), {}, id="free-mail-never-company"),
        pytest.param(facts("someone@yahoo.co.uk"), {}, id="free-mail-cctld-variant"),
        pytest.param(facts("someone@ourco.example"), {}, id="own-domain-never-company"),
        pytest.param(facts("someone@support.ourco.example"), {}, id="own-subdomain-never-company"),
        pytest.param(
            facts("jane@acme.example", to=("bob@ourco.example", "info@ourco.example")),
            {
                (C, JANE): (LinkReason.ADDRESS, "jane@acme.example"),
                (CO, ACME): (LinkReason.ADDRESS, "jane@acme.example"),
                (D, ACME_OPEN): (LinkReason.DEAL_PARTICIPANT, "jane@acme.example"),
            },
            id="users-and-own-addresses-never-contacts",
        ),
        pytest.param(
            facts("jean@globex.example", bcc=("joe@acme.example",)),
            {(C, JEAN): (LinkReason.ADDRESS, "jean@globex.example")},
            id="bcc-ignored-on-inbound",
        ),
        pytest.param(
            facts(
                "bob@ourco.example",
                to=("jean@globex.example",),
                bcc=("joe@acme.example",),
                direction=Direction.OUTBOUND,
            ),
            {
                (C, JEAN): (LinkReason.ADDRESS, "jean@globex.example"),
                (C, JOE): (LinkReason.ADDRESS, "joe@acme.example"),
                (CO, ACME): (LinkReason.ADDRESS, "joe@acme.example"),
                (D, JOE_OPEN): (LinkReason.DEAL_PARTICIPANT, "joe@acme.example"),
            },
            id="bcc-considered-on-outbound",
        ),
        pytest.param(
            facts("bob@ourco.example", to=("new@globex.example",), direction=Direction.OUTBOUND),
            {},
            id="domain-rule-is-for-the-sender-only",
        ),
        pytest.param(facts(None, to=("sales@ourco.example",)), {}, id="no-from-header"),
        pytest.param(facts("not-an-address", to=("",)), {}, id="garbage-addresses"),
    ],
)
def test_address_rules(
    message: MessageFacts, expected: dict[tuple[RecordKind, int], tuple[LinkReason, str]]
) -> None:
    decision = decide(message)
    assert keyed(decision) == expected
    assert decision.attributed_user_id is None
    assert decision.lead_proposal is None


def test_links_keep_header_order() -> None:
    decision = decide(facts("jean@globex.example", to=("sales@ourco.example", "jane@acme.example")))
    assert [(link.record_kind, link.record_id) for link in decision.links] == [
        (C, JEAN),
        (C, JANE),
        (CO, ACME),
        (D, ACME_OPEN),
    ]


def test_a_record_reached_several_ways_appears_once() -> None:
    decision = decide(
        facts("jane@acme.example", to=("joe@acme.example", "JANE@acme.example"), cc=("jane@acme.example",))
    )
    assert decision.record_ids(C) == (JANE, JOE)
    assert decision.record_ids(CO) == (ACME,)
    assert decision.link_for(CO, ACME) == ProposedLink(CO, ACME, LinkReason.ADDRESS, "jane@acme.example")


# ----------------------------------------------------------------------------------------- deals


@pytest.mark.parametrize(
    ("participants", "thread_deals", "expected"),
    [
        pytest.param(
            ("jane@acme.example",),
            frozenset[int](),
            {ACME_OPEN: (LinkReason.DEAL_PARTICIPANT, "jane@acme.example")},
            id="open-deal-only-won-excluded",
        ),
        pytest.param(
            ("jane@acme.example", "joe@acme.example"),
            frozenset[int](),
            {
                ACME_OPEN: (LinkReason.DEAL_PARTICIPANT, "jane@acme.example"),
                JOE_OPEN: (LinkReason.DEAL_PARTICIPANT, "joe@acme.example"),
            },
            id="several-open-deals-all-linked",
        ),
        pytest.param(
            ("jane@acme.example", "joe@acme.example"),
            frozenset({JOE_OPEN}),
            {JOE_OPEN: (LinkReason.DEAL_PARTICIPANT, "joe@acme.example")},
            id="thread-deal-preferred-over-other-open-deals",
        ),
        pytest.param(
            ("jane@acme.example",),
            frozenset({ACME_WON}),
            {ACME_WON: (LinkReason.DEAL_PARTICIPANT, "jane@acme.example")},
            id="closed-deal-kept-when-thread-already-linked",
        ),
        pytest.param(("jean@globex.example",), frozenset[int](), {}, id="lost-deal-never-linked"),
        pytest.param(
            ("jane@acme.example",),
            frozenset({OTHER_DEAL}),
            {
                ACME_OPEN: (LinkReason.DEAL_PARTICIPANT, "jane@acme.example"),
                OTHER_DEAL: (LinkReason.THREAD, "thread 55"),
            },
            id="thread-deal-inherited-even-without-participants",
        ),
        pytest.param(
            ("new@nowhere.example",),
            frozenset({ACME_WON}),
            {ACME_WON: (LinkReason.THREAD, "thread 55")},
            id="thread-deal-inherited-by-unknown-sender",
        ),
    ],
)
def test_deal_rules(
    participants: tuple[str, ...],
    thread_deals: frozenset[int],
    expected: dict[int, tuple[LinkReason, str]],
) -> None:
    directory = replace(DIRECTORY, thread_deal_ids=thread_deals)
    decision = decide(facts(participants[0], cc=participants[1:]), directory)
    assert {k[1]: v for k, v in keyed(decision).items() if k[0] is D} == expected


# ----------------------------------------------------------------------------------- suppression


@pytest.mark.parametrize(
    ("message", "suppressed", "thread_deals", "absent", "still_present"),
    [
        pytest.param(
            facts("jane@acme.example"), {(C, JANE)}, frozenset[int](), (C, JANE), (CO, ACME), id="contact"
        ),
        pytest.param(
            facts("jane@acme.example"), {(CO, ACME)}, frozenset[int](), (CO, ACME), (C, JANE), id="company"
        ),
        pytest.param(
            facts("jane@acme.example"),
            {(D, ACME_OPEN)},
            frozenset[int](),
            (D, ACME_OPEN),
            (C, JANE),
            id="deal",
        ),
        pytest.param(
            facts("jane@acme.example"),
            {(D, ACME_WON)},
            frozenset({ACME_WON}),
            (D, ACME_WON),
            (C, JANE),
            id="thread-deal",
        ),
        pytest.param(
            facts("x@globex.example"),
            {(CO, GLOBEX)},
            frozenset[int](),
            (CO, GLOBEX),
            None,
            id="domain-company",
        ),
        pytest.param(
            facts("bob@ourco.example", body=(FORWARDS / "gmail_en.txt").read_text(encoding="utf-8")),
            {(C, JANE)},
            frozenset[int](),
            (C, JANE),
            (CO, ACME),
            id="forwarded-contact",
        ),
    ],
)
def test_suppressed_links_are_never_proposed(
    message: MessageFacts,
    suppressed: set[tuple[RecordKind, int]],
    thread_deals: frozenset[int],
    absent: tuple[RecordKind, int],
    still_present: tuple[RecordKind, int] | None,
) -> None:
    directory = replace(JANE_DOE_DIRECTORY, suppressed=frozenset(suppressed), thread_deal_ids=thread_deals)
    links = keyed(decide(message, directory))
    assert absent not in links
    assert absent in keyed(decide(message, replace(directory, suppressed=frozenset())))
    if still_present is not None:
        assert still_present in links


# -------------------------------------------------------------------------------------- forwards


def forward_body(name: str) -> str:
    return (FORWARDS / name).read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "fixture",
    [
        "gmail_en.txt",
        "outlook_en.txt",
        "outlook_en_underscores.txt",
        "apple_en.txt",
        "thunderbird_en.txt",
        "quoted_reply.txt",
        "nested.txt",
    ],
)
def test_forward_from_user_links_original_sender(fixture: str) -> None:
    # Bob forwards the customer's mail into the shared sales mailbox.
    message = facts("bob@ourco.example", to=("sales@ourco.example",), body=forward_body(fixture))
    decision = decide(message, JANE_DOE_DIRECTORY)
    assert keyed(decision) == {
        (C, JANE): (LinkReason.FORWARD, "jane.doe@acme.example"),
        (CO, ACME): (LinkReason.FORWARD, "jane.doe@acme.example"),
        (D, ACME_OPEN): (LinkReason.DEAL_PARTICIPANT, "jane.doe@acme.example"),
    }


@pytest.mark.parametrize(
    ("fixture", "company"),
    [
        ("gmail_fr.txt", GLOBEX),
        ("outlook_fr.txt", GLOBEX),
        ("outlook_fr_bold.txt", GLOBEX),
        ("apple_fr.txt", GLOBEX),
        ("thunderbird_fr.txt", GLOBEX),
        ("gmail_es.txt", None),
        ("outlook_de.txt", None),
    ],
)
def test_forwarded_unknown_sender_links_company_by_domain(fixture: str, company: int | None) -> None:
    decision = decide(facts("alice@ourco.example", direction=Direction.OUTBOUND, body=forward_body(fixture)))
    expected = {(CO, company): (LinkReason.DOMAIN, "globex.example")} if company else {}
    assert keyed(decision) == expected


def test_forward_from_sent_folder_of_connected_account() -> None:
    message = facts(
        "sales@ourco.example",
        to=("carol@ourco.example",),
        direction=Direction.OUTBOUND,
        body=forward_body("outlook_en.txt"),
    )
    assert keyed(decide(message, JANE_DOE_DIRECTORY))[(C, JANE)][0] is LinkReason.FORWARD


def test_forward_by_customer_does_not_link_the_third_party() -> None:
    # Jean (a customer) forwards Jane's mail to us: Jean is the party, not Jane.
    decision = decide(facts("jean@globex.example", body=forward_body("gmail_en.txt")), JANE_DOE_DIRECTORY)
    assert decision.record_ids(C) == (JEAN,)


def test_forward_reason_beats_address() -> None:
    message = facts("bob@ourco.example", cc=("jane.doe@acme.example",), body=forward_body("gmail_en.txt"))
    decision = decide(message, JANE_DOE_DIRECTORY)
    assert decision.link_for(C, JANE) == ProposedLink(C, JANE, LinkReason.FORWARD, "jane.doe@acme.example")


def test_forward_as_attached_message() -> None:
    message = facts(
        "bob@ourco.example", body="see attached", attached=("Jane@Acme.example", "new@globex.example")
    )
    assert keyed(decide(message)) == {
        (C, JANE): (LinkReason.FORWARD, "jane@acme.example"),
        (CO, ACME): (LinkReason.FORWARD, "jane@acme.example"),
        (D, ACME_OPEN): (LinkReason.DEAL_PARTICIPANT, "jane@acme.example"),
        (CO, GLOBEX): (LinkReason.DOMAIN, "globex.example"),
    }


def test_forwarded_own_addresses_are_not_contacts() -> None:
    message = facts("alice@ourco.example", body="fyi", attached=("bob@ourco.example", "info@ourco.example"))
    assert decide(message).links == ()


# ------------------------------------------------------------------------------------ BCC dropbox


def test_bcc_dropbox_links_recipients_and_attributes_the_user() -> None:
    message = facts(
        "Carol@OurCo.example",
        to=("jane@acme.example",),
        cc=("jean@globex.example",),
        bcc=("dropbox@ourco.example",),
        account="dropbox@ourco.example",
        dropbox=True,
    )
    decision = decide(message)
    assert decision.attributed_user_id == CAROL
    assert keyed(decision) == {
        (C, JANE): (LinkReason.BCC, "jane@acme.example"),
        (CO, ACME): (LinkReason.BCC, "jane@acme.example"),
        (C, JEAN): (LinkReason.BCC, "jean@globex.example"),
        (D, ACME_OPEN): (LinkReason.DEAL_PARTICIPANT, "jane@acme.example"),
    }


def test_bcc_dropbox_as_delivery_target_without_bcc_header() -> None:
    message = facts(
        "alice@ourco.example", to=("joe@acme.example",), account="dropbox@ourco.example", dropbox=True
    )
    decision = decide(message)
    assert decision.attributed_user_id == ALICE
    assert decision.link_for(C, JOE) == ProposedLink(C, JOE, LinkReason.BCC, "joe@acme.example")


def test_bcc_dropbox_with_forward_into_it() -> None:
    message = facts(
        "alice@ourco.example",
        to=("dropbox@ourco.example",),
        account="dropbox@ourco.example",
        dropbox=True,
        body=forward_body("apple_en.txt"),
    )
    decision = decide(message, JANE_DOE_DIRECTORY)
    assert decision.attributed_user_id == ALICE
    assert decision.link_for(C, JANE) == ProposedLink(C, JANE, LinkReason.FORWARD, "jane.doe@acme.example")


@pytest.mark.parametrize(
    ("sender", "dropbox"),
    [
        pytest.param("bob@ourco.example", True, id="sender-is-a-connected-account"),
        pytest.param("jean@globex.example", True, id="sender-is-not-a-user"),
        pytest.param("carol@ourco.example", False, id="account-is-not-the-dropbox"),
    ],
)
def test_no_bcc_attribution(sender: str, dropbox: bool) -> None:
    message = facts(sender, to=("jane@acme.example",), account="dropbox@ourco.example", dropbox=dropbox)
    decision = decide(message)
    assert decision.attributed_user_id is None
    assert decision.link_for(C, JANE) == ProposedLink(C, JANE, LinkReason.ADDRESS, "jane@acme.example")


# ------------------------------------------------------------------------------------------ leads


def test_lead_proposal_for_unknown_sender() -> None:
    decision = decide(facts("New.Person@mail.globex.example", name="  Nina   Newman "), leads=True)
    assert decision.lead_proposal == LeadProposal(
        email="new.person@mail.globex.example",
        first_name="Nina",
        last_name="Newman",
        full_name="Nina Newman",
        company_id=GLOBEX,
    )


def test_lead_proposal_free_mail_sender_without_name() -> None:
    decision = decide(facts("someone@gmail.com"), leads=True)
    assert decision.lead_proposal == LeadProposal("someone@gmail.com", None, None, None, None)
    assert decision.links == ()


def test_lead_proposal_is_off_by_default_switch() -> None:
    assert decide(facts("new@globex.example"), leads=False).lead_proposal is None


@pytest.mark.parametrize(
    "message",
    [
        pytest.param(facts("jane@acme.example"), id="known-contact"),
        pytest.param(facts("new@ourco.example"), id="own-domain"),
        pytest.param(facts("alice@ourco.example"), id="tenant-user"),
        pytest.param(
            facts("bob@ourco.example", to=("new@globex.example",), direction=Direction.OUTBOUND),
            id="outbound",
        ),
        pytest.param(facts(None), id="no-sender"),
        pytest.param(
            facts("new@globex.example", headers=(("Auto-Submitted", "auto-replied"),)), id="auto-submitted"
        ),
        pytest.param(
            facts("new@globex.example", headers=(("List-Id", "<news.globex.example>"),)), id="list-id"
        ),
        pytest.param(facts("new@globex.example", headers=(("Precedence", "bulk"),)), id="precedence"),
        pytest.param(facts("mailer-daemon@globex.example"), id="mailer-daemon"),
        pytest.param(facts("no-reply@globex.example"), id="no-reply"),
    ],
)
def test_no_lead_proposal(message: MessageFacts) -> None:
    assert decide(message, leads=True).lead_proposal is None


_AUTOMATED_HEADERS = [
    (("Auto-Submitted", "auto-generated"),),
    (("auto-submitted", "auto-replied; owner-email=x@y.example"),),
    (("AUTO-SUBMITTED", ""),),
    (("List-Id", "Announcements <announce.globex.example>"),),
    (("Precedence", "bulk"),),
    (("Precedence", "List"),),
    (("precedence", " junk "),),
    (("X-Autoreply", "yes"),),
    (("X-Auto-Response-Suppress", "All"),),
]


@pytest.mark.parametrize("headers", _AUTOMATED_HEADERS)
def test_automated_headers(headers: tuple[tuple[str, str], ...]) -> None:
    assert is_automated(headers, "jane@acme.example")


@pytest.mark.parametrize(
    "sender",
    [
        "MAILER-DAEMON@mx.globex.example",
        "postmaster@globex.example",
        "no-reply@globex.example",
        "noreply@globex.example",
        "no_reply@globex.example",
        "noreply+tag@globex.example",
        "do-not-reply@globex.example",
        "donotreply@globex.example",
        "notifications@globex.example",
        "bounce@globex.example",
        "bounces+abc=def@globex.example",
        "bounce-12345@globex.example",
    ],
)
def test_automated_senders(sender: str) -> None:
    assert is_automated((), sender)


@pytest.mark.parametrize(
    ("headers", "sender"),
    [
        ((("Auto-Submitted", "no"),), "jane@acme.example"),
        ((("Auto-Submitted", " No "),), "jane@acme.example"),
        ((("Precedence", "first-class"),), "jane@acme.example"),
        ((("Subject", "List-Id"),), "jane@acme.example"),
        ((), "notify-me-not@acme.example"),
        ((), "bob.bounceman@acme.example"),
        ((), "noreen@acme.example"),
    ],
)
def test_human_mail_is_not_automated(headers: tuple[tuple[str, str], ...], sender: str) -> None:
    assert not is_automated(headers, sender)


# ------------------------------------------------------------------------------------- helpers


def test_reason_strength_order() -> None:
    order = sorted(LinkReason, key=lambda reason: reason.strength, reverse=True)
    assert order == [
        LinkReason.MANUAL,
        LinkReason.FORWARD,
        LinkReason.BCC,
        LinkReason.ADDRESS,
        LinkReason.DEAL_PARTICIPANT,
        LinkReason.THREAD,
        LinkReason.DOMAIN,
    ]


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("gmail.com", True),
        ("GoogleMail.com", True),
        ("hotmail.fr", True),
        ("yahoo.co.uk", True),
        ("yahoo.com.br", True),
        ("gmx.de", True),
        ("gmx.at", True),
        ("yandex.ru", True),
        ("yandex.com.tr", True),
        ("outlook.jp", True),
        ("web.de", True),
        ("orange.fr", True),
        ("free.fr", True),
        ("laposte.net", True),
        ("proton.me", True),
        ("mail.ru", True),
        ("qq.com", True),
        ("163.com", True),
        ("icloud.com", True),
        ("acme.example", False),
        ("orange.com", False),
        ("gmail-tools.com", False),
        ("yahoocorp.example", False),
        ("freebies.fr", False),
    ],
)
def test_is_free_mail(domain: str, expected: bool) -> None:
    assert is_free_mail(domain) is expected


@pytest.mark.parametrize(
    ("email", "expected"),
    [
        ("Jane@Mail.Acme.Example", "mail.acme.example"),
        ("jane@acme.example.", "acme.example"),
        ('"odd@local"@acme.example', "acme.example"),
        ("no-at-sign", ""),
    ],
)
def test_domain_of(email: str, expected: str) -> None:
    assert domain_of(email) == expected


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("a.trust1.nhs.uk", ("a.trust1.nhs.uk", "trust1.nhs.uk")),
        ("alice.github.io", ("alice.github.io",)),
        ("mail.eu.globex.example", ("mail.eu.globex.example", "eu.globex.example", "globex.example")),
        ("Globex.Example", ("globex.example",)),
        ("a.initech.co.uk", ("a.initech.co.uk", "initech.co.uk")),
        ("shop.com.au", ("shop.com.au",)),
        ("co.uk", ()),
        ("example", ()),
        ("", ()),
    ],
)
def test_domain_candidates(domain: str, expected: tuple[str, ...]) -> None:
    assert domain_candidates(domain) == expected


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        ("com", True),
        ("co.uk", True),
        ("com.au", True),
        ("globex.example", False),
        ("bbc.co.uk", False),
        # The Public Suffix List, not a guess: registries and hosting platforms are suffixes.
        ("nhs.uk", True),
        ("trust1.nhs.uk", False),
        ("github.io", True),
        ("alice.github.io", False),
        ("", True),
    ],
)
def test_is_public_suffix(domain: str, expected: bool) -> None:
    assert is_public_suffix(domain) is expected


@pytest.mark.parametrize(
    ("domain", "expected"),
    [
        # The guess this replaced mapped these two to "nhs.uk" and "github.io".
        ("trust1.nhs.uk", "trust1.nhs.uk"),
        ("mail.trust1.nhs.uk", "trust1.nhs.uk"),
        ("alice.github.io", "alice.github.io"),
        ("www.alice.github.io", "alice.github.io"),
        ("mail.eu.globex.test", "globex.test"),
        ("Shop.COM.au.", "shop.com.au"),
        ("co.uk", ""),
        ("test", ""),
        ("", ""),
    ],
)
def test_registrable_domain(domain: str, expected: str) -> None:
    assert registrable_domain(domain) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Hank@Globex.TEST", "hank@globex.test"),
        (" <jane@acme.co.uk> ", "jane@acme.co.uk"),
        ("jane@acme.com.", "jane@acme.com"),
        ("no-at-sign", None),
        ("@acme.com", None),
        ("jane@", None),
        ("two words@acme.com", None),
        ("jane..doe@acme.com", None),  # the hand-written check let these through
        ("jane@acme..com", None),
        ("jane@server.local", None),  # reserved names never are contacts
        ("jane@nodot", None),
    ],
)
def test_normalize_email_uses_email_validator(raw: str, expected: str | None) -> None:
    assert normalize_email(raw) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Jane Doe", ("Jane", "Doe")),
        ("Jane Q. Doe", ("Jane Q.", "Doe")),
        ("Doe, Jane", ("Jane", "Doe")),
        ('"Jane Doe"', ("Jane", "Doe")),
        ("'Jane Doe'", ("Jane", "Doe")),
        ("Cher", ("Cher", None)),
        ("jane@acme.example", (None, None)),
        ("   ", (None, None)),
    ],
)
def test_split_name(name: str, expected: tuple[str | None, str | None]) -> None:
    assert split_name(name) == expected


def test_lookup_keys_cover_everything_decide_links_reads() -> None:
    message = facts(
        "Bob@OurCo.example",
        to=("Jane@Acme.example",),
        cc=("x@mail.globex.example",),
        bcc=("joe@acme.example",),
        direction=Direction.OUTBOUND,
        body=forward_body("outlook_fr.txt"),
        attached=("fred@gmail.com",),
    )
    keys = lookup_keys(message)
    assert keys.emails == {
        "bob@ourco.example",
        "jane@acme.example",
        "x@mail.globex.example",
        "joe@acme.example",
        "jean.dupont@globex.example",
        "fred@gmail.com",
        "sales@ourco.example",
    }
    assert keys.domains == {
        "ourco.example",
        "acme.example",
        "mail.globex.example",
        "globex.example",
        "gmail.com",
    }
