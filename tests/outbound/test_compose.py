"""Reply, reply-all, forward and compose: the message built, the checks, the collision guard,
undo and the scoping, on SQLite and PostgreSQL (no server: the queue is worked elsewhere)."""

from __future__ import annotations

import email
from datetime import timedelta
from email import policy
from email.message import EmailMessage

import pytest
from sqlalchemy import Engine
from sqlmodel import Session, select

from core.db import session_scope
from core.errors import Conflict, InvalidInput, NotFound
from core.types import utcnow
from crm import grants, signature_service
from crm.models import Message, OutboundAccount, OutboundMail, SenderName, User
from crm.outbound import queue
from crm.outbound.compose import AttachmentIn, ComposeMode, Draft, send_mail
from crm.outbound.headers import parse_address
from crm.outbound.ids import is_our_message_id
from crm.outbound.views import OutboundState, SendResult
from tests.crm.world import World, build_world


@pytest.fixture
def world(db: Engine) -> World:
    w = build_world(db)
    with session_scope(db) as s:
        alice = s.get_one(User, w.users["alice"])
        alice.first_name, alice.last_name = "Alice", "Archer"
    return w


def _send(db: Engine, world: World, who: str = "alice", **kw: object) -> SendResult:
    with session_scope(db) as s:
        return send_mail(session=s, caller=world.caller(who), **kw)  # type: ignore[arg-type]


def _raw(db: Engine, outbound_id: int) -> EmailMessage:
    with Session(db) as s:
        row = s.get_one(OutboundMail, outbound_id)
        parsed = email.message_from_bytes(row.raw, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_reply_continues_the_thread_with_signature_and_text_alternative(db: Engine, world: World) -> None:
    with session_scope(db) as s:
        admin = world.caller("admin")
        sig = signature_service.add_signature(
            session=s, caller=admin, account_id=world.accounts["A"], name="Main",
            html="<p><b>{{ sender.full_name }}</b>, {{ company.name }}</p>",
        )  # fmt: skip
        grants.set_default_signature(
            session=s, caller=admin, account_id=world.accounts["A"], signature_id=sig.signature.id,
            user_id=world.users["alice"],
        )  # fmt: skip
        parent = s.get_one(Message, world.messages["alpha1"])
        parent.references = ["<root@mail.test>"]
        parent.reply_to = [{"email": "orders@globex.test", "name": "Orders"}]
    result = _send(
        db, world, draft=Draft(html="<p>Thanks, <i>we ship today</i>.</p>"),
        mode=ComposeMode.REPLY, message_pk=world.messages["alpha1"],
    )  # fmt: skip
    assert not result.held and result.mail is not None
    mail = result.mail
    assert (mail.kind.value, mail.state, mail.thread_id) == (
        "reply",
        OutboundState.QUEUED,
        world.threads["Alpha"],
    )
    assert [r.email for r in mail.to] == ["orders@globex.test"]  # Reply-To wins over From
    msg = _raw(db, mail.id)
    assert msg["From"] == "Alice Archer <a@acme.test>"
    assert msg["Subject"] == "Re: Alpha"  # no second "Re:"
    assert msg["In-Reply-To"] == "<alpha1@mail.test>"
    assert msg["References"] == "<root@mail.test> <alpha1@mail.test>"
    assert msg["Message-ID"] == mail.message_id and msg["Bcc"] is None
    text = msg.get_body(("plain",))
    html = msg.get_body(("html",))
    assert text is not None and html is not None
    assert "Thanks, we ship today." in text.get_content()
    assert "Alice Archer, Acme" in text.get_content()  # the signature, rendered for the sender
    assert "<b>Alice Archer</b>, Acme" in html.get_content()
    assert "Body of alpha1" in html.get_content()  # the quoted original
    with Session(db) as s:
        assert is_our_message_id(session=s, tenant_id=world.tenant, message_id=mail.message_id)
        forged = mail.message_id.replace(mail.message_id[-20:-12], "deadbeef")
        assert not is_our_message_id(session=s, tenant_id=world.tenant, message_id=forged)
        assert not is_our_message_id(session=s, tenant_id=world.other_tenant, message_id=mail.message_id)
        assert not is_our_message_id(session=s, tenant_id=world.tenant, message_id="<alpha1@mail.test>")
    # Another signature of the account can be chosen, or none at all.
    bare = _send(
        db, world, draft=Draft(html="<p>Hi</p>", no_signature=True), mode=ComposeMode.REPLY,
        message_pk=world.messages["alpha1"],
    )  # fmt: skip
    assert bare.mail is not None
    assert "Alice Archer, Acme" not in _raw(db, bare.mail.id).as_string()


def test_reply_all_forward_compose_and_sender_names(db: Engine, world: World) -> None:
    with session_scope(db) as s:
        parent = s.get_one(Message, world.messages["alpha1"])
        parent.to_addrs = [{"email": "a@acme.test", "name": ""}, {"email": "cat@globex.test", "name": "Cat"}]
        parent.cc_addrs = [{"email": "dan@globex.test", "name": ""}]
        s.add(OutboundAccount(account_id=world.accounts["A"], sender_name=SenderName.USER_AT_COMPANY))
    everyone = _send(
        db, world, draft=Draft(html="x"), mode=ComposeMode.REPLY_ALL, message_pk=world.messages["alpha1"]
    )
    assert everyone.mail is not None
    assert [r.email for r in everyone.mail.to] == ["ann@globex.test"]
    assert [r.email for r in everyone.mail.cc] == ["cat@globex.test", "dan@globex.test"]  # never ourselves
    assert _raw(db, everyone.mail.id)["From"] == "Alice Archer at Acme <a@acme.test>"

    forward = _send(
        db, world, draft=Draft(html="<p>FYI</p>", to=("Boss <boss@initech.test>",)),
        mode=ComposeMode.FORWARD, message_pk=world.messages["alpha1"],
    )  # fmt: skip
    assert forward.mail is not None and forward.mail.kind.value == "forward"
    fwd = _raw(db, forward.mail.id)
    assert fwd["Subject"] == "Fwd: Re: Alpha" and fwd["In-Reply-To"] is None
    assert "Forwarded message" in fwd.as_string()

    new = _send(
        db, world, account_id=world.accounts["A"],
        draft=Draft(
            html="<p>Offer attached</p>", to=("x@globex.test",), bcc=("audit@acme.test",), subject="Offer",
            attachments=(AttachmentIn("offer.pdf", "application/pdf", b"%PDF-1.4 test"),),
        ),
    )  # fmt: skip
    assert new.mail is not None and new.mail.thread_id is None
    msg = _raw(db, new.mail.id)
    assert msg["Bcc"] is None  # the envelope has it, the header does not
    with Session(db) as s:
        assert s.get_one(OutboundMail, new.mail.id).recipients == ["x@globex.test", "audit@acme.test"]
    (part,) = list(msg.iter_attachments())
    assert part.get_filename() == "offer.pdf" and part.get_content() == b"%PDF-1.4 test"


@pytest.mark.parametrize(
    ("draft", "field", "code"),
    [
        (
            Draft(html="x", to=("x@globex.test",), subject="Hi\r\nBcc: victim@evil.test"),
            "subject",
            "header_invalid",
        ),
        (Draft(html="x", to=("x@globex.test",), subject="Hi\x00"), "subject", "header_invalid"),
        (Draft(html="x", to=("Eve\n <x@globex.test>",), subject="Hi"), "to", "header_invalid"),
        (
            Draft(html="x", to=("x@globex.test",), cc=("not an address",), subject="Hi"),
            "cc",
            "address_invalid",
        ),
        (Draft(html="x", to=("a@b.test, c@d.test",), subject="Hi"), "to", "address_invalid"),
        (Draft(html="x", to=("x@globex.test",), bcc=("x@",), subject="Hi"), "bcc", "address_invalid"),
        (Draft(html="x", subject="Hi"), "to", "recipients_required"),
        (
            Draft(
                html="x",
                to=("x@globex.test",),
                attachments=(AttachmentIn("a\r\n.pdf", "application/pdf", b"1"),),
            ),
            "attachment filename",
            "header_invalid",
        ),
    ],
)
def test_header_injection_and_bad_addresses_are_refused_with_the_field(
    db: Engine, world: World, draft: Draft, field: str, code: str
) -> None:
    with pytest.raises(InvalidInput) as caught:
        _send(db, world, account_id=world.accounts["A"], draft=draft)
    assert (caught.value.code, caught.value.fields["field"]) == (code, field)
    with Session(db) as s:
        assert s.exec(select(OutboundMail)).first() is None


def test_size_limit(db: Engine, world: World) -> None:
    big = Draft(
        html="x",
        to=("x@globex.test",),
        attachments=(AttachmentIn("big.bin", "application/x", b"0" * 50_000),),
    )
    with pytest.raises(InvalidInput) as caught:
        _send(db, world, account_id=world.accounts["A"], draft=big, max_bytes=40_000)
    assert caught.value.code == "message_too_large" and caught.value.fields["limit"] == 40_000


def test_collision_guard_holds_a_reply_when_mail_arrived_since_the_draft_was_opened(
    db: Engine, world: World
) -> None:
    with Session(db) as s:
        arrived = s.get_one(Message, world.messages["shared1"]).created_at
    opened = arrived - timedelta(minutes=5)
    held = _send(
        db, world, draft=Draft(html="ok"), mode=ComposeMode.REPLY, message_pk=world.messages["shared1"],
        opened_at=opened,
    )  # fmt: skip
    assert held.held and held.mail is None
    # Alice sees shared1 (in A) but not shared2 (only in B): only what she may see is shown.
    assert [m.id for m in held.new_messages] == [world.messages["shared1"]]
    with Session(db) as s:
        assert s.exec(select(OutboundMail)).first() is None
    fresh = _send(
        db, world, draft=Draft(html="ok"), mode=ComposeMode.REPLY, message_pk=world.messages["shared1"],
        opened_at=utcnow(),
    )  # fmt: skip
    assert not fresh.held
    confirmed = _send(
        db, world, draft=Draft(html="ok"), mode=ComposeMode.REPLY, message_pk=world.messages["shared1"],
        opened_at=opened, confirm=True,
    )  # fmt: skip
    assert not confirmed.held and confirmed.mail is not None


def test_scoping_members_send_only_from_what_they_see(db: Engine, world: World) -> None:
    with pytest.raises(NotFound):  # a message of account B
        _send(db, world, draft=Draft(html="x"), mode=ComposeMode.REPLY, message_pk=world.messages["beta1"])
    with pytest.raises(NotFound):
        _send(db, world, account_id=world.accounts["B"], draft=Draft(html="x", to=("x@globex.test",)))
    with pytest.raises(NotFound):
        _send(
            db,
            world,
            who="other_admin",
            account_id=world.accounts["A"],
            draft=Draft(html="x", to=("x@g.test",)),
        )
    # A signature of an account the sender cannot see is not found either.
    with session_scope(db) as s:
        sig = signature_service.add_signature(
            session=s, caller=world.caller("admin"), account_id=world.accounts["B"], name="B", html="<p>B</p>"
        )
    with pytest.raises(NotFound):
        _send(
            db, world, account_id=world.accounts["A"],
            draft=Draft(html="x", to=("x@globex.test",), signature_id=sig.signature.id),
        )  # fmt: skip


def test_undo_within_the_delay_and_send_later(db: Engine, world: World) -> None:
    now = utcnow()
    sent = _send(
        db, world, account_id=world.accounts["A"], draft=Draft(html="x", to=("x@globex.test",)), now=now
    )
    assert sent.mail is not None and sent.mail.next_attempt_at == now + timedelta(seconds=10)
    later = _send(
        db, world, account_id=world.accounts["A"], draft=Draft(html="y", to=("x@globex.test",)),
        send_at=now + timedelta(days=1), now=now,
    )  # fmt: skip
    assert later.mail is not None and later.mail.next_attempt_at == now + timedelta(days=1)
    with Session(db) as s:
        # Nothing is due before the undo delay is over.
        assert queue.due_ids(session=s, now=now + timedelta(seconds=9)) == []
        assert queue.due_ids(session=s, now=now + timedelta(seconds=10)) == [sent.mail.id]
    with pytest.raises(NotFound), session_scope(db) as s:  # bob cannot recall alice's mail
        queue.cancel(session=s, caller=world.caller("bob"), outbound_id=sent.mail.id)
    with session_scope(db) as s:
        cancelled = queue.cancel(session=s, caller=world.caller("alice"), outbound_id=sent.mail.id)
        assert cancelled.state is OutboundState.CANCELLED
        queue.cancel(session=s, caller=world.caller("admin"), outbound_id=later.mail.id)
    with Session(db) as s:
        assert queue.due_ids(session=s, now=now + timedelta(days=2)) == []
    # Once a worker holds it, it is too late.
    again = _send(
        db,
        world,
        account_id=world.accounts["A"],
        draft=Draft(html="z", to=("x@globex.test",)),
        undo_seconds=0,
    )
    assert again.mail is not None
    with session_scope(db) as s:
        assert queue.claim(session=s, outbound_id=again.mail.id, owner="w1", lease_seconds=60) is not None
    with pytest.raises(Conflict) as caught, session_scope(db) as s:
        queue.cancel(session=s, caller=world.caller("alice"), outbound_id=again.mail.id)
    assert caught.value.code == "too_late_to_cancel"


def test_address_parsing() -> None:
    assert parse_address("to", "Ann <Ann@Globex.TEST>") == ("Ann@globex.test", "Ann")
    assert parse_address("to", '"Smith, Ann" <a@x.test>') == ("a@x.test", "Smith, Ann")
    for bad in ("alice@example.com <bob@evil.test>", "x", "a@b", "<>", "a@@b.test"):
        with pytest.raises(InvalidInput):
            parse_address("to", bad)
