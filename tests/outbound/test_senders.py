"""Tenant sending modes (item 5) and sender verification (item 6), end to end: the verification
mail goes through the send queue to a real aiosmtpd (the deployment's SMTP), the link in it is
followed; tampered, reused, superseded and expired tokens are refused; resends rate-limited; the
old address kept until the new one is verified."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import NamedTuple

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import Session

from core.db import session_scope
from core.errors import DomainError
from core.secrets import SecretBox
from core.settings import get_settings
from core.types import Security, utcnow
from crm import auth
from crm.models import MailAccount, OutboundAccount
from crm.outbound import senders, system_mail
from crm.outbound.views import MailKind, OutboundState
from devtools.devmail import LocalDovecot
from inbox_api.app import create_app
from sync.send_queue import work_queue
from tests.crm.world import World, build_world
from tests.outbound.smtp import SmtpServer, recording_smtp


class Env(NamedTuple):
    world: World
    system: SmtpServer  # the deployment's SMTP
    own: SmtpServer  # account A's SMTP


@pytest.fixture
def env(sqlite_db: Engine, dovecot: LocalDovecot) -> Iterator[Env]:
    """SQLite only: the queue's claims are covered on both databases by test_queue/test_limits."""
    db = sqlite_db
    w = build_world(db)
    with (
        recording_smtp(dovecot, Security.TLS) as system,
        recording_smtp(dovecot, Security.STARTTLS) as own,
    ):
        settings = get_settings()
        settings.system_smtp_host, settings.system_smtp_port = "127.0.0.1", system.port
        settings.system_smtp_security, settings.system_smtp_ca_file = "tls", str(dovecot.ca_file)
        settings.system_smtp_username, settings.system_smtp_password = (
            system.username,
            SecretStr(system.password),
        )
        settings.system_from_address = "notifications@crm-inbox.test"
        settings.public_url = "https://crm.example.test"
        with session_scope(db) as s:
            row = s.get_one(MailAccount, w.accounts["A"])
            row.smtp_host, row.smtp_port, row.smtp_security = "127.0.0.1", own.port, Security.STARTTLS
            row.smtp_username = own.username
            row.smtp_secret_encrypted = SecretBox.from_settings().encrypt(SecretStr(own.password))
            row.ca_file = str(dovecot.ca_file)
            s.add(OutboundAccount(account_id=w.accounts["A"], server_saves_sent=False))
        yield Env(w, system, own)


def _parsed(data: bytes) -> EmailMessage:
    parsed = message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _token(smtp: SmtpServer, index: int = -1) -> str:
    body = _parsed(smtp.recorder.received[index].data).get_body(("plain",))
    assert body is not None
    found = re.search(r"/verify-sender\?token=([\w.-]+)", body.get_content())
    assert found is not None
    return found.group(1)


def _request(db: Engine, env: Env, email: str) -> int:
    with session_scope(db) as s:
        view = senders.request_verification(session=s, caller=env.world.caller("admin"), email=email)
    work_queue(db=db, settings=get_settings())
    return view.id


def _confirm(db: Engine, token: str, **kw: object) -> str:
    with session_scope(db) as s:
        return senders.confirm(session=s, token=token, **kw).email  # type: ignore[arg-type]


def _refused(db: Engine, token: str, **kw: object) -> str:
    with pytest.raises(DomainError) as caught:
        _confirm(db, token, **kw)
    return caught.value.code


def _from(db: Engine, tenant_id: int) -> str:
    with Session(db) as s:
        return system_mail.sender_of(s, tenant_id).email


def test_verification_link_then_branded_sender(sqlite_db: Engine, env: Env) -> None:
    db, w = sqlite_db, env.world
    _request(db, env, "News <news@acme.test>")
    (mail,) = env.system.recorder.received
    assert mail.rcpt_tos == ["news@acme.test"]
    head = _parsed(mail.data)
    assert head["From"] == "Acme <notifications@crm-inbox.test>" and "news@acme.test" in head["Subject"]
    token = _token(env.system)
    request_id, secret, mac = token.split(".")
    # Tampering with any part is refused; nothing changes.
    flipped = "0" if mac[0] != "0" else "1"
    assert _refused(db, f"{request_id}.{secret}.{flipped}{mac[1:]}") == "token_invalid"
    assert _refused(db, f"{request_id}.{secret[:-1]}x.{mac}") == "token_invalid"
    assert _refused(db, f"{int(request_id) + 1}.{secret}.{mac}") == "token_invalid"
    assert _refused(db, "garbage") == "token_invalid"
    assert _from(db, w.tenant) == "notifications@crm-inbox.test"
    # The real link works once.
    assert _confirm(db, token) == "news@acme.test"
    assert _refused(db, token) == "token_used"
    with Session(db) as s:
        view = system_mail.get_sending(session=s, caller=w.caller("admin"))
    assert (view.mode, view.from_email, view.effective_from) == (
        "branded",
        "news@acme.test",
        "news@acme.test",
    )
    # Notification mail now comes from the verified address, through the deployment's SMTP.
    with session_scope(db) as s:
        sent = system_mail.enqueue(
            session=s,
            tenant_id=w.tenant,
            kind=MailKind.NOTIFICATION,
            to="ann@acme.test",
            subject="Hi",
            text="x",
        )
    work_queue(db=db, settings=get_settings())
    assert _parsed(env.system.recorder.received[-1].data)["From"] == "Acme <news@acme.test>"
    with Session(db) as s:
        from crm.outbound import queue

        assert (
            queue.get_outbound(session=s, caller=w.caller("admin"), outbound_id=sent.id).state
            is OutboundState.SENT
        )
        # System mail is the admins' business: members do not see it in the log.
        assert queue.mail_log(session=s, caller=w.caller("alice"), kinds=[MailKind.NOTIFICATION]) == ()


def test_change_keeps_old_until_verified_resend_and_expiry(sqlite_db: Engine, env: Env) -> None:
    db, w = sqlite_db, env.world
    _request(db, env, "news@acme.test")
    _confirm(db, _token(env.system))
    request_id = _request(db, env, "hello@acme.test")
    first = _token(env.system)
    assert _from(db, w.tenant) == "news@acme.test"  # the old one until the new one is verified
    with session_scope(db) as s, pytest.raises(DomainError) as soon:
        senders.resend(session=s, caller=w.caller("admin"), request_id=request_id)
    assert soon.value.code == "resend_too_soon" and soon.value.fields["retry_after"] > 0
    later = utcnow() + timedelta(seconds=61)
    with session_scope(db) as s:
        senders.resend(session=s, caller=w.caller("admin"), request_id=request_id, now=later)
    work_queue(db=db, settings=get_settings())
    second = _token(env.system)
    assert second != first
    assert _refused(db, first) == "token_used"  # superseded by the resend
    assert _refused(db, second, now=later + timedelta(hours=24, seconds=1)) == "token_expired"
    assert _from(db, w.tenant) == "news@acme.test"
    assert _confirm(db, second, now=later + timedelta(hours=23)) == "hello@acme.test"
    assert _from(db, w.tenant) == "hello@acme.test"
    # Resends are capped per request.
    other = _request(db, env, "third@acme.test")
    with session_scope(db) as s:
        for i in range(1, senders.MAX_SENDS):
            senders.resend(
                session=s, caller=w.caller("admin"), request_id=other, now=later + timedelta(minutes=2 * i)
            )
        with pytest.raises(DomainError) as capped:
            senders.resend(
                session=s, caller=w.caller("admin"), request_id=other, now=later + timedelta(hours=1)
            )
    assert capped.value.code == "resend_limit_reached"


def test_sending_modes(sqlite_db: Engine, env: Env) -> None:
    db, w = sqlite_db, env.world
    with session_scope(db) as s:
        admin = w.caller("admin")
        with pytest.raises(DomainError) as unverified:
            system_mail.set_sending(session=s, caller=admin, mode=system_mail.SendingMode.BRANDED)
        assert unverified.value.code == "sender_not_verified"
        with pytest.raises(DomainError) as no_smtp:
            system_mail.set_sending(
                session=s, caller=admin, mode=system_mail.SendingMode.OWN, own_account_id=w.accounts["B"]
            )
        assert no_smtp.value.code == "smtp_not_configured"
        with pytest.raises(DomainError) as member:
            system_mail.set_sending(session=s, caller=w.caller("alice"), notifications_enabled=False)
        assert member.value.code == "admin_required"
        own = system_mail.set_sending(
            session=s, caller=admin, mode=system_mail.SendingMode.OWN, own_account_id=w.accounts["A"]
        )
        assert (own.via, own.effective_from, own.effective_name) == ("account", "a@acme.test", "Acme")
        system_mail.enqueue(
            session=s,
            tenant_id=w.tenant,
            kind=MailKind.NOTIFICATION,
            to="ann@acme.test",
            subject="Own",
            text="x",
        )
    summary = work_queue(db=db, settings=get_settings())
    (got,) = env.own.recorder.received  # through the tenant's own SMTP, not the deployment's
    assert _parsed(got.data)["From"] == "Acme <a@acme.test>" and env.system.recorder.received == []
    assert summary.sent == 1 and summary.sent_folder_errors == []  # not filed in Sent


def test_api_and_confirmation_page(sqlite_db: Engine, env: Env) -> None:
    db, w = sqlite_db, env.world
    with session_scope(db) as s:
        token = auth.create_token(
            session=s, caller=w.caller("admin"), user_id=w.users["admin"], name="t"
        ).secret.get_secret_value()
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(), base_url="http://testserver") as client:
        started = client.post("/api/sending/sender", headers=headers, json={"email": "news@acme.test"})
        assert started.status_code == 200, started.text
        assert [v["email"] for v in client.get("/api/sending/sender", headers=headers).json()] == [
            "news@acme.test"
        ]
        work_queue(db=db, settings=get_settings())
        link = _token(env.system)
        page = client.get(f"/verify-sender?token={link}")
        assert page.status_code == 200 and 'method="post"' in page.text  # a GET confirms nothing
        assert "Content-Security-Policy" in page.headers
        assert client.get("/api/sending", headers=headers).json()["from_email"] is None
        tampered = link[:-1] + ("0" if link[-1] != "0" else "1")
        bad = client.post("/api/sending/verify", json={"token": tampered})
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "token_invalid"
        done = client.post("/verify-sender", data={"token": link})
        assert done.status_code == 200 and "news@acme.test" in done.text
        again = client.post("/verify-sender", data={"token": link})
        assert again.status_code == 400 and "already used" in again.text
        state = client.get("/api/sending", headers=headers).json()
        assert (state["mode"], state["from_email"]) == ("branded", "news@acme.test")
        off = client.put("/api/sending", headers=headers, json={"notifications_enabled": False})
        assert off.status_code == 200 and off.json()["notifications_enabled"] is False
