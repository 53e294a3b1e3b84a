"""Forwarded mail through the real listener, credited to the customer who wrote it: inline
forwards from the mail clients' formats, attached message/rfc822, automatic forwards; provider
confirmations; tickets for new conversations."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from email.utils import formatdate, make_msgid

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from core.db import session_scope
from core.settings import Settings
from core.types import ConversationStatus, DeliveryOutcome, TicketPriority, TicketStage
from crm import assignment, conversations, forwarding, grants, inbox_views, records
from crm.forwarding import tickets
from crm.models import InboundDelivery, Message, MessageLink, Thread
from tests.sync.inbound_harness import FIXTURES, inbound_settings, listener, mail, make_world, wire

JANE = "jane.doe@acme.example"
JEAN = "jean.dupont@globex.example"


def send(port: int, rcpt: str, raw: bytes, mail_from: str = "bob@ourco.example") -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as client:
        assert client.sendmail(mail_from, [rcpt], raw) == {}


def stored(db: Engine) -> list[tuple[Message, InboundDelivery]]:
    with session_scope(db) as session:
        rows = session.exec(
            select(Message, InboundDelivery).join(
                InboundDelivery,
                InboundDelivery.message_pk == Message.id,  # type: ignore[arg-type]
            )
        ).all()
        return [(m, d) for m, d in rows]


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("gmail_en.txt", JANE),
        ("outlook_en.txt", JANE),
        ("apple_fr.txt", JEAN),
        ("thunderbird_en.txt", JANE),
    ],
)
def test_inline_forwards_credited_to_the_original_sender(
    sqlite_db: Engine, settings: Settings, fixture: str, expected: str
) -> None:
    world = make_world(sqlite_db)
    s = inbound_settings(settings)
    body = (FIXTURES / fixture).read_text(encoding="utf-8")
    raw = mail(
        sender="Bob Seller <bob@ourco.example>", to=world.address, subject="Fwd: Pricing question", body=body
    )
    with listener(s, sqlite_db):
        send(s.inbound_port, world.address, raw)
    [(message, delivery)] = stored(sqlite_db)
    assert message.from_email == expected
    assert message.direction.value == "inbound"
    assert message.headers["x-crm-forwarded-by"] == "bob@ourco.example"
    assert delivery.forwarded_by == "bob@ourco.example" and not delivery.unattributed
    assert delivery.credited_from == expected
    with session_scope(sqlite_db) as session:  # what the conversation shows
        view = inbox_views.get_message(session=session, caller=world.admin, message_pk=message.id or 0)
    assert view.sender is not None and view.sender.email == expected
    assert view.forwarded_by == "bob@ourco.example" and not view.forward_unattributed


def test_attached_forward_and_thread_with_the_customers_conversation(
    sqlite_db: Engine, settings: Settings
) -> None:
    """Jane wrote to sales@ (forwarded automatically: her headers kept); Bob later forwards
    another mail of hers as an attachment: both land in her conversation, linked to her."""
    world = make_world(sqlite_db)
    with session_scope(sqlite_db) as session:
        contact = records.create_contact(
            session=session, caller=world.admin, emails=[JANE], first_name="Jane"
        )
    s = inbound_settings(settings)
    first = mail(
        subject="Pricing question",
        headers={
            "X-Forwarded-For": f"sales@ourco.example {world.address}",
            "Delivered-To": "sales@ourco.example",
        },
    )
    inner = EmailMessage()
    inner["From"] = f"Jane Doe <{JANE}>"
    inner["To"] = "sales@ourco.example"
    inner["Subject"] = "Re: Pricing question"
    inner["Date"] = formatdate()
    inner["Message-ID"] = make_msgid(domain="acme.example")
    inner.set_content("And for 80 seats?\n")
    outer = EmailMessage()
    outer["From"] = "Bob Seller <bob@ourco.example>"
    outer["To"] = world.address
    outer["Subject"] = "Fwd: Re: Pricing question"
    outer["Date"] = formatdate()
    outer["Message-ID"] = make_msgid(domain="ourco.example")
    outer.set_content("See attached.\n")
    outer.add_attachment(inner)
    with listener(s, sqlite_db):
        send(s.inbound_port, world.address, first, mail_from="srs0=x@ourco.example")
        send(s.inbound_port, world.address, wire(outer))
    rows = stored(sqlite_db)
    assert [m.from_email for m, _ in rows] == [JANE, JANE]
    automatic, attached = (d for _, d in rows)
    assert automatic.forwarded_by == "sales@ourco.example" and "automatic" in automatic.detail
    assert attached.forwarded_by == "bob@ourco.example" and "attached" in attached.detail
    assert len({m.thread_id for m, _ in rows}) == 1  # one conversation with Jane
    with session_scope(sqlite_db) as session:
        linked = session.exec(
            select(MessageLink.message_pk).where(
                MessageLink.record_kind == "contact", MessageLink.record_id == contact.id
            )
        ).all()
    assert sorted(linked) == sorted(m.id or 0 for m, _ in rows)


@pytest.mark.parametrize(
    "headers",
    [
        {"Resent-From": "sales@ourco.example", "Resent-To": "x"},
        {"X-Original-From": f"Jane Doe <{JANE}>"},
    ],
)
def test_automatic_forward_headers(sqlite_db: Engine, settings: Settings, headers: dict[str, str]) -> None:
    world = make_world(sqlite_db)
    s = inbound_settings(settings)
    sender = "'Jane Doe' via Sales <sales@ourco.example>" if "X-Original-From" in headers else JANE
    raw = mail(sender=sender, headers={k: (world.address if v == "x" else v) for k, v in headers.items()})
    with listener(s, sqlite_db):
        send(s.inbound_port, world.address, raw, mail_from="sales@ourco.example")
    [(message, delivery)] = stored(sqlite_db)
    assert message.from_email == JANE and message.direction.value == "inbound"
    assert delivery.forwarded_by == "sales@ourco.example"


def test_forward_without_an_original_is_flagged(sqlite_db: Engine, settings: Settings) -> None:
    world = make_world(sqlite_db)
    s = inbound_settings(settings)
    raw = mail(sender="bob@ourco.example", subject="Fwd: lunch", body="no header block here\n")
    with listener(s, sqlite_db):
        send(s.inbound_port, world.address, raw)
    [(message, delivery)] = stored(sqlite_db)
    assert message.from_email == "bob@ourco.example"
    assert delivery.unattributed and message.headers["x-crm-credit"] == "unattributed"
    with session_scope(sqlite_db) as session:
        view = inbox_views.get_message(session=session, caller=world.admin, message_pk=message.id or 0)
    assert view.forward_unattributed


GMAIL_CONFIRMATION = """\
bob.seller@gmail.com has requested to automatically forward mail to your email
address {address}.
Confirmation code: 912345678

To allow bob.seller@gmail.com to automatically forward mail to your address,
please click the link below to confirm the request:

https://mail-settings.google.com/mail/vf-%5BANGjdJ8abc%5D-QkX_1a2b3c

If you click the link and it appears to be broken, please copy and paste it
into a new browser window.
"""


def test_gmail_confirmation_shown_to_the_admin(sqlite_db: Engine, settings: Settings) -> None:
    world = make_world(sqlite_db)
    s = inbound_settings(settings)
    raw = mail(
        sender="Gmail Team <forwarding-noreply@google.com>",
        to=world.address,
        subject="(#912345678) Gmail Forwarding Confirmation - Receive Mail from bob.seller@gmail.com",
        body=GMAIL_CONFIRMATION.format(address=world.address),
    )
    with listener(s, sqlite_db):
        send(s.inbound_port, world.address, raw, mail_from="forwarding-noreply@google.com")
    with session_scope(sqlite_db) as session:
        [found] = forwarding.list_confirmations(
            session=session, caller=world.admin, channel_id=world.channel_id
        )
        assert session.exec(select(Thread)).first() is None  # no conversation
    assert found.provider == "gmail" and found.code == "912345678"
    assert found.link == "https://mail-settings.google.com/mail/vf-%5BANGjdJ8abc%5D-QkX_1a2b3c"
    assert found.requested_by == "bob.seller@gmail.com"


def test_send_a_test_comes_back_through_the_forward(sqlite_db: Engine, settings: Settings) -> None:
    world = make_world(sqlite_db)
    with session_scope(sqlite_db) as session:
        test = forwarding.start_test(session=session, caller=world.admin, channel_id=world.channel_id)
    assert test.to == "sales@ourco.example" and test.channel.test_received_at is None
    s = inbound_settings(settings)
    # What the provider forwards: our test as delivered to sales@, From our channel.
    raw = mail(sender=world.address, to="sales@ourco.example", subject=test.subject)
    with listener(s, sqlite_db):
        send(s.inbound_port, world.address, raw, mail_from="srs0=y@ourco.example")
    with session_scope(sqlite_db) as session:
        channel = forwarding.get_channel(session=session, caller=world.admin, channel_id=world.channel_id)
        assert session.exec(select(Message)).first() is None
        [delivery] = forwarding.list_deliveries(
            session=session, caller=world.admin, channel_id=world.channel_id
        )
    assert channel.test_received_at is not None and delivery.outcome is DeliveryOutcome.TEST


def test_tickets_for_new_conversations_with_defaults(db: Engine, settings: Settings) -> None:
    world = make_world(db, create_tickets=True)
    with session_scope(db) as session:
        forwarding.update_channel(
            session=session,
            caller=world.admin,
            channel_id=world.channel_id,
            ticket_stage=TicketStage.WAITING,
            ticket_priority=TicketPriority.HIGH,
        )
        grants.grant_access(
            session=session, caller=world.admin, account_id=world.account_id, user_id=world.admin_id
        )
        assignment.set_rule(
            session=session,
            caller=world.admin,
            account_id=world.account_id,
            mode=assignment.AssignMode.ROUND_ROBIN,
            user_ids=[world.admin_id],
        )
    s = inbound_settings(settings)
    first = mail(message_id="<q1@acme.example>")
    reply = mail(
        subject="Re: Pricing question",
        message_id="<q2@acme.example>",
        headers={"In-Reply-To": "<q1@acme.example>"},
    )
    other = mail(sender="jean.dupont@globex.example", subject="Broken login")
    with listener(s, db):
        for raw in (first, reply, other):
            send(s.inbound_port, world.address, raw, mail_from="sales@ourco.example")
    with session_scope(db) as session:
        found = tickets.list_tickets(session=session, caller=world.admin)
        # Two conversations (the reply joined the first), numbered per tenant, with the
        # defaults, owned by whom the assignment rule chose.
        assert [(t.number, t.stage, t.priority, t.owner_user_id) for t in found] == [
            (2, TicketStage.WAITING, TicketPriority.HIGH, world.admin_id),
            (1, TicketStage.WAITING, TicketPriority.HIGH, world.admin_id),
        ]
        closed = tickets.update_ticket(
            session=session, caller=world.admin, ticket_id=found[1].id, stage=TicketStage.CLOSED
        )
        assert closed.closed_at is not None
        report = tickets.ticket_report(session=session, caller=world.admin)
        # Closing the other conversation closes its ticket too.
        conversations.set_status(
            session=session,
            caller=world.admin,
            thread_id=found[0].thread_id,
            status=ConversationStatus.CLOSED,
        )
        assert tickets.get_ticket(session=session, caller=world.admin, ticket_id=found[0].id).closed_at
    assert (report.opened, report.closed, report.open_now) == (2, 1, 1)
    assert report.average_hours_to_close is not None


def test_send_a_test_and_replies_leave_by_smtp_and_are_stored(sqlite_db: Engine, settings: Settings) -> None:
    """The whole circle: "send a test" queues a mail from the channel through its SMTP server
    (aiosmtpd here) to the team's original address; the provider forwards it back to the
    hosted address; the channel shows the test received. The sent copy is stored in the
    channel's virtual Sent folder (no IMAP server to append to)."""
    from pydantic import SecretStr

    from core.secrets import SecretBox
    from core.types import Security
    from crm.outbound import smtp_setup
    from sync.send_queue import work_queue
    from sync.smtp_setup import make_test_sender
    from tests.outbound.smtp import recording_smtp
    from tests.sync.test_checks import SMTP_PASSWORD, SMTP_USER

    world = make_world(sqlite_db)
    with recording_smtp(None, Security.PLAIN) as smtp:  # type: ignore[arg-type]  # no TLS: no CA
        smtp_setup.save_smtp_settings(
            sessions=lambda: session_scope(sqlite_db),
            caller=world.admin,
            account_id=world.account_id,
            given=smtp_setup.SmtpSettingsIn(
                host="127.0.0.1",
                port=smtp.port,
                security=Security.PLAIN,
                username=SMTP_USER,
                password=SecretStr(SMTP_PASSWORD),
                test_to="check@ourco.example",
            ),
            box=SecretBox.from_settings(),
            send_test=make_test_sender(),
        )
        smtp.recorder.received.clear()  # the set-up's test mail
        with session_scope(sqlite_db) as session:
            test = forwarding.send_test(session=session, caller=world.admin, channel_id=world.channel_id)
        summary = work_queue(db=sqlite_db, settings=settings)
        assert (summary.sent, summary.stored, summary.sent_folder_errors) == (1, 1, [])
        [sent] = smtp.recorder.received
    assert sent.rcpt_tos == ["sales@ourco.example"]
    with session_scope(sqlite_db) as session:
        copy = session.exec(select(Message)).one()
        assert copy.direction.value == "outbound" and test.token in copy.subject
    s = inbound_settings(settings)
    with listener(s, sqlite_db):  # the provider forwards what reached sales@
        send(s.inbound_port, world.address, sent.data, mail_from="srs0=z@ourco.example")
    with session_scope(sqlite_db) as session:
        channel = forwarding.get_channel(session=session, caller=world.admin, channel_id=world.channel_id)
    assert channel.test_received_at is not None
    # The test proves the forward, not the team's address as a sender: replies keep the hosted
    # address until a custom sender's emailed link is followed (tests/outbound/test_channel_sender.py).
    assert channel.sender_address == world.address and not channel.sender_verified
    from crm.outbound.compose import Draft, send_mail

    with session_scope(sqlite_db) as session:
        forwarding.update_channel(
            session=session,
            caller=world.admin,
            channel_id=world.channel_id,
            sender_name=forwarding.SenderName.COMPANY,
        )
        queued = send_mail(
            session=session,
            caller=world.admin,
            draft=Draft(html="<p>Hello</p>", to=("jane.doe@acme.example",), subject="Your order"),
            account_id=world.account_id,
            undo_seconds=0,
        )
    assert queued.mail is not None
    assert (queued.mail.from_email, queued.mail.from_name) == (world.address, "OurCo")
