"""Forgotten passwords end to end: asked over the API, the link mailed through the send queue to a
real aiosmtpd from the tenant's sender, followed from the received mail; single-use, expiring,
hashed at rest; the same answer for unknown addresses; rate-limited; other sessions ended; no
reset for a deactivated user; and the pages (CSRF, the strength rule)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from email import message_from_bytes, policy
from email.message import EmailMessage
from urllib.parse import parse_qs, urlparse

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import Session, select

from core.db import session_scope
from core.errors import DomainError
from core.settings import get_settings
from core.types import Security, utcnow
from crm import auth, password_reset
from crm.models import PasswordReset, User, WebSession
from devtools.devmail import LocalDovecot
from inbox_api.app import create_app
from sync.send_queue import work_queue
from tests.crm.world import World, build_world
from tests.outbound.smtp import SmtpServer, recording_smtp

OLD = "old password 123"
NEW = "brand new password 456"


@pytest.fixture
def world(db: Engine) -> World:
    get_settings().public_url = "http://testserver"  # where the mailed links point
    w = build_world(db)
    with session_scope(db) as s:
        auth.set_password(
            session=s, caller=w.caller("alice"), user_id=w.users["alice"], password=SecretStr(OLD)
        )
        s.get_one(User, w.users["alice"]).first_name = "Alice"
    return w


@pytest.fixture
def system_smtp(dovecot: LocalDovecot) -> Iterator[SmtpServer]:
    with recording_smtp(dovecot, Security.STARTTLS) as smtp:
        settings = get_settings()
        settings.system_smtp_host, settings.system_smtp_port = "127.0.0.1", smtp.port
        settings.system_smtp_security, settings.system_smtp_ca_file = "starttls", str(dovecot.ca_file)
        settings.system_smtp_username, settings.system_smtp_password = smtp.username, SecretStr(smtp.password)
        settings.system_from_address = "notifications@crm-inbox.test"
        yield smtp


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(), base_url="http://testserver") as c:
        yield c


def _parsed(data: bytes) -> EmailMessage:
    parsed = message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def _link_in(mail: EmailMessage) -> str:
    text = mail.get_body(("plain",))
    assert text is not None
    (link,) = re.findall(r"http://testserver/reset-password\?token=\S+", text.get_content())
    return link


def _csrf(page: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page)
    assert found is not None
    return found.group(1)


def _sign_in(client: TestClient, password: str) -> int:
    return client.post("/api/auth/login", json={"email": "alice@acme.test", "password": password}).status_code


def test_reset_by_api_through_the_mailed_link(db: Engine, world: World, system_smtp: SmtpServer) -> None:
    browser = TestClient(create_app(), base_url="http://testserver")  # another signed-in browser
    assert _sign_in(browser, OLD) == 200 and browser.get("/api/me").status_code == 200
    with TestClient(create_app(), base_url="http://testserver") as client:
        known = client.post("/api/auth/password-reset", json={"email": " Alice@ACME.test "})
        unknown = client.post("/api/auth/password-reset", json={"email": "ghost@acme.test"})
        assert known.status_code == unknown.status_code == 202
        assert known.json() == unknown.json() == {"message": password_reset.ANSWER}

        assert work_queue(db=db, settings=get_settings()).sent == 1  # nothing for the unknown address
        (received,) = system_smtp.recorder.received
        assert received.rcpt_tos == ["alice@acme.test"]
        mail = _parsed(received.data)
        assert mail["From"] == "Acme <notifications@crm-inbox.test>"  # the tenant's sender
        assert mail["Subject"] == "[Acme] Reset your password"
        link = _link_in(mail)
        token = parse_qs(urlparse(link).query)["token"][0]
        with Session(db) as s:  # hashed at rest, valid for an hour
            (row,) = s.exec(select(PasswordReset)).all()
            assert row.token_hash == auth.digest(token) and token not in row.token_hash
            assert timedelta(minutes=59) < row.expires_at - row.created_at <= timedelta(hours=1)

        page = client.get(link)  # the link opens the page (a form; nothing changes yet)
        assert page.status_code == 200 and 'id="reset-form"' in page.text and "alice@acme.test" in page.text
        short = client.post("/api/auth/password-reset/confirm", json={"token": token, "password": "short"})
        assert short.status_code == 422 and short.json()["error"]["code"] == "password_too_short"
        done = client.post("/api/auth/password-reset/confirm", json={"token": token, "password": NEW})
        assert done.status_code == 200, done.text
        assert done.json() == {"email": "alice@acme.test", "sessions_ended": 1}
        assert NEW not in done.text

        again = client.post("/api/auth/password-reset/confirm", json={"token": token, "password": NEW + "x"})
        assert again.status_code == 422 and again.json()["error"]["code"] == "reset_link_invalid"
        assert _sign_in(client, OLD) == 401 and _sign_in(client, NEW) == 200
    assert browser.get("/api/me").status_code == 401  # the other browser was signed out
    browser.close()


def test_links_expire_are_single_use_and_refused_when_tampered(
    db: Engine, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(password_reset, "MAX_PER_ADDRESS", 100)  # this test asks many times

    def ask(when_offset: timedelta) -> str:
        with session_scope(db) as s:
            password_reset.request_reset(session=s, email="alice@acme.test", now=utcnow() + when_offset)
            row = s.exec(select(PasswordReset).order_by(PasswordReset.id.desc())).first()  # type: ignore[union-attr]
            assert row is not None
        # The plain token exists only in the mail: take it from the queued notification.
        from crm.models import OutboundMail

        with Session(db) as s:
            mails = s.exec(select(OutboundMail).order_by(OutboundMail.id.desc())).all()  # type: ignore[union-attr]
        return parse_qs(urlparse(_link_in(_parsed(mails[0].raw))).query)["token"][0]

    def refused(token: str, password: str = NEW) -> str:
        with session_scope(db) as s, pytest.raises(DomainError) as caught:
            password_reset.reset_password(session=s, token=token, password=SecretStr(password))
        return caught.value.code

    expired = ask(-timedelta(minutes=61))
    assert refused(expired) == "reset_link_invalid"
    fresh = ask(timedelta(0))
    tampered = fresh[:-1] + ("A" if fresh[-1] != "A" else "B")
    assert refused(tampered) == "reset_link_invalid"
    other = ask(timedelta(0))
    with session_scope(db) as s:
        password_reset.reset_password(session=s, token=fresh, password=SecretStr(NEW))
    assert refused(fresh) == "reset_link_invalid"  # used
    assert refused(other) == "reset_link_invalid"  # the user's other links died with it

    # A deactivated user gets no link, and one asked for before cannot be used.
    before = ask(timedelta(0))
    with session_scope(db) as s:
        s.get_one(User, world.users["alice"]).active = False
    assert refused(before) == "reset_link_invalid"
    with session_scope(db) as s:
        count = len(s.exec(select(PasswordReset)).all())
        password_reset.request_reset(session=s, email="alice@acme.test")
        assert len(s.exec(select(PasswordReset)).all()) == count


def test_asking_is_rate_limited_alike_for_known_and_unknown_addresses(
    db: Engine, world: World, client: TestClient
) -> None:
    for address in ("alice@acme.test", "ghost@acme.test"):
        answers = [
            client.post("/api/auth/password-reset", json={"email": address}).status_code
            for _ in range(password_reset.MAX_PER_ADDRESS + 1)
        ]
        assert answers == [202] * password_reset.MAX_PER_ADDRESS + [429], address
    throttled = client.post("/api/auth/password-reset", json={"email": "ghost@acme.test"})
    assert (
        throttled.json()["error"]["code"] == "reset_throttled" and int(throttled.headers["retry-after"]) > 0
    )
    with Session(db) as s:
        assert len(s.exec(select(PasswordReset)).all()) == password_reset.MAX_PER_ADDRESS
    # Per client address: many addresses from one client stop at the client's limit.
    codes = [
        client.post("/api/auth/password-reset", json={"email": f"user{i}@acme.test"}).status_code
        for i in range(password_reset.MAX_PER_CLIENT)
    ]
    assert codes.count(429) == 2 * password_reset.MAX_PER_ADDRESS + len(codes) - password_reset.MAX_PER_CLIENT


def test_pages_need_their_csrf_token_and_apply_the_rules(
    db: Engine, world: World, client: TestClient
) -> None:
    assert 'href="/forgot-password"' in client.get("/login").text
    form = client.get("/forgot-password")
    assert form.status_code == 200 and "default-src 'none'" in form.headers["content-security-policy"]
    forged = client.post("/forgot-password", data={"email": "alice@acme.test", "csrf": "forged"})
    assert forged.status_code == 403
    with Session(db) as s:
        assert s.exec(select(PasswordReset)).all() == []
    csrf = re.search(r'name="csrf" value="([^"]+)"', forged.text)  # each page render gets a new one
    assert csrf is not None
    sent = client.post("/forgot-password", data={"email": "alice@acme.test", "csrf": csrf.group(1)})
    assert sent.status_code == 200 and password_reset.ANSWER in sent.text
    from crm.models import OutboundMail

    with Session(db) as s:
        (mail,) = s.exec(select(OutboundMail)).all()
    link = _link_in(_parsed(mail.raw)).replace("http://testserver", "")
    token = parse_qs(urlparse(link).query)["token"][0]
    page = client.get(link)
    page_csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert page_csrf is not None
    fields = {"token": token, "csrf": page_csrf.group(1)}
    differ = client.post("/reset-password", data={**fields, "password": NEW, "confirm": NEW + "!"})
    assert differ.status_code == 422 and "The two passwords differ" in differ.text
    fields["csrf"] = _csrf(differ.text)
    short = client.post("/reset-password", data={**fields, "password": "short", "confirm": "short"})
    assert short.status_code == 422 and "at least 10 characters" in short.text
    fields["csrf"] = _csrf(short.text)
    no_csrf = client.post("/reset-password", data={**fields, "csrf": "x", "password": NEW, "confirm": NEW})
    assert no_csrf.status_code == 403
    fresh = re.search(r'name="csrf" value="([^"]+)"', no_csrf.text)
    assert fresh is not None
    fields["csrf"] = fresh.group(1)
    done = client.post("/reset-password", data={**fields, "password": NEW, "confirm": NEW})
    assert done.status_code == 200 and "Your password was changed" in done.text
    assert client.get(link).status_code == 400  # used up
    assert _sign_in(client, NEW) == 200
    with Session(db) as s:
        assert len(s.exec(select(WebSession)).all()) == 1  # the new sign-in only
