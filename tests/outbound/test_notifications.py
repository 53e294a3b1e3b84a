"""Notification mail (issue 10, item 8): event templates in the sandbox (HTML + text, sanitized),
per-tenant overrides with preview and merge tags checked at save time, per-user preferences, the
tenant's off switch; hooked where the events happen (assignment, @mentions in notes) and sent
through the send queue to a real aiosmtpd."""

from __future__ import annotations

from collections.abc import Iterator
from email import message_from_bytes, policy
from email.message import EmailMessage

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import Session, select

from core.db import session_scope
from core.errors import DomainError
from core.settings import get_settings
from core.types import Security
from crm import auth, conversations
from crm.models import OutboundMail, User
from crm.outbound import notifications, system_mail
from crm.outbound.views import MailKind
from devtools.devmail import LocalDovecot
from inbox_api.app import create_app
from sync.send_queue import work_queue
from tests.crm.world import World, build_world
from tests.outbound.smtp import SmtpServer, recording_smtp


@pytest.fixture
def world(sqlite_db: Engine) -> World:
    w = build_world(sqlite_db)
    with session_scope(sqlite_db) as s:
        for name in ("alice", "bob", "admin"):
            user = s.get_one(User, w.users[name])
            user.first_name = name.capitalize()
    return w


@pytest.fixture
def system_smtp(dovecot: LocalDovecot, sqlite_db: Engine) -> Iterator[SmtpServer]:
    with recording_smtp(dovecot, Security.STARTTLS) as smtp:
        settings = get_settings()
        settings.system_smtp_host, settings.system_smtp_port = "127.0.0.1", smtp.port
        settings.system_smtp_security, settings.system_smtp_ca_file = "starttls", str(dovecot.ca_file)
        settings.system_smtp_username, settings.system_smtp_password = smtp.username, SecretStr(smtp.password)
        settings.system_from_address = "notifications@crm-inbox.test"
        yield smtp


def _notifications(db: Engine) -> list[OutboundMail]:
    with Session(db) as s:
        return list(s.exec(select(OutboundMail).where(OutboundMail.kind == MailKind.NOTIFICATION)).all())


def _parsed(data: bytes) -> EmailMessage:
    parsed = message_from_bytes(data, policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_assignment_and_mention_send_mail(sqlite_db: Engine, world: World, system_smtp: SmtpServer) -> None:
    db, w = sqlite_db, world
    shared = w.threads["Shared"]
    with session_scope(db) as s:
        conversations.assign(
            session=s, caller=w.caller("bob"), thread_id=shared, assignee_user_id=w.users["alice"]
        )
        conversations.assign(
            session=s, caller=w.caller("alice"), thread_id=shared, assignee_user_id=w.users["alice"]
        )
        conversations.add_note(
            session=s, caller=w.caller("alice"), thread_id=shared, body="@bob can you check?"
        )
    rows = _notifications(db)
    assert sorted(r.recipients[0] for r in rows) == [
        "alice@acme.test",
        "bob@acme.test",
    ]  # not the self-assign
    summary = work_queue(db=db, settings=get_settings())
    assert summary.sent == 2
    by_to = {m.rcpt_tos[0]: _parsed(m.data) for m in system_smtp.recorder.received}
    assigned = by_to["alice@acme.test"]
    assert assigned["Subject"].startswith("[Acme] Assigned to you:") and assigned["From"].startswith("Acme <")
    text = assigned.get_body(("plain",))
    html = assigned.get_body(("html",))
    assert text is not None and html is not None
    assert "Bob assigned you the conversation" in text.get_content()
    assert "/inbox#thread-" in html.get_content()
    mention = by_to["bob@acme.test"]
    mention_text = mention.get_body(("plain",))
    assert mention_text is not None and "@bob can you check?" in mention_text.get_content()


def test_preferences_and_tenant_switch(sqlite_db: Engine, world: World) -> None:
    db, w = sqlite_db, world
    alpha = w.threads["Alpha"]
    with session_scope(db) as s:
        prefs = notifications.set_pref(session=s, caller=w.caller("alice"), event="assigned", enabled=False)
        assert {p.event.value: p.enabled for p in prefs}["assigned"] is False
        conversations.assign(
            session=s, caller=w.caller("admin"), thread_id=alpha, assignee_user_id=w.users["alice"]
        )
        with pytest.raises(DomainError) as always:
            notifications.set_pref(session=s, caller=w.caller("alice"), event="password_reset", enabled=False)
        assert always.value.code == "notification_required"
    assert _notifications(db) == []
    with session_scope(db) as s:
        notifications.set_pref(session=s, caller=w.caller("alice"), event="assigned", enabled=True)
        system_mail.set_sending(session=s, caller=w.caller("admin"), notifications_enabled=False)
        conversations.assign(session=s, caller=w.caller("admin"), thread_id=alpha, assignee_user_id=None)
        conversations.assign(
            session=s, caller=w.caller("admin"), thread_id=alpha, assignee_user_id=w.users["alice"]
        )
    assert _notifications(db) == []  # the tenant turned notification mail off
    with session_scope(db) as s:
        system_mail.set_sending(session=s, caller=w.caller("admin"), notifications_enabled=True)
        conversations.assign(session=s, caller=w.caller("admin"), thread_id=alpha, assignee_user_id=None)
        conversations.assign(
            session=s, caller=w.caller("admin"), thread_id=alpha, assignee_user_id=w.users["alice"]
        )
    assert [r.recipients for r in _notifications(db)] == [["alice@acme.test"]]


def test_templates_overrides_preview_and_merge_tags(sqlite_db: Engine, world: World) -> None:
    db, w = sqlite_db, world
    admin = w.caller("admin")
    with session_scope(db) as s:
        with pytest.raises(DomainError) as unknown:
            notifications.save_template(
                session=s, caller=admin, event="assigned", subject="{{ secret_key }}", text="x", html="x"
            )
        assert unknown.value.code == "merge_tag_unknown" and unknown.value.fields["unknown"] == ["secret_key"]
        assert "actor_name" in unknown.value.fields["available"]
        with pytest.raises(DomainError) as syntax:
            notifications.save_template(
                session=s, caller=admin, event="assigned", subject="{{ x", text="", html=""
            )
        assert syntax.value.code == "template_invalid"
        with pytest.raises(DomainError) as sandbox:
            notifications.save_template(
                session=s, caller=admin, event="assigned", subject="x", text="{{ ''.__class__ }}", html="x"
            )
        assert sandbox.value.code == "template_invalid"
        hostile = (
            '<p onclick="x()">Hi {{ recipient_name }}</p><script>alert(1)</script>'
            '<a href="javascript:alert(1)">x</a><a href="{{ conversation_url }}">open</a>'
        )
        saved = notifications.save_template(
            session=s,
            caller=admin,
            event="assigned",
            subject="Yours: {{ conversation_subject }}",
            text="T",
            html=hostile,
        )
        assert saved.customized and "conversation_url" in saved.merge_tags
        shown = notifications.preview(session=s, caller=admin, event="assigned")
        assert shown.subject == "Yours: Quote for 40 chairs"
        assert "<script" not in shown.html and "onclick" not in shown.html and "javascript:" not in shown.html
        assert 'href="https://crm.example/inbox#thread-42"' in shown.html and "Hi Mia Moss" in shown.html
        with pytest.raises(DomainError) as member:
            notifications.preview(session=s, caller=w.caller("alice"), event="assigned")
        assert member.value.code == "admin_required"
        conversations.assign(
            session=s, caller=admin, thread_id=w.threads["Alpha"], assignee_user_id=w.users["alice"]
        )
    (row,) = _notifications(db)
    assert row.subject == "Yours: Alpha"
    with session_scope(db) as s:
        back = notifications.reset_template(session=s, caller=admin, event="assigned")
    assert not back.customized


def test_api(sqlite_db: Engine, world: World) -> None:
    with session_scope(sqlite_db) as s:
        token = auth.create_token(
            session=s, caller=world.caller("admin"), user_id=world.users["admin"], name="t"
        ).secret.get_secret_value()
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(), base_url="http://testserver") as client:
        listed = client.get("/api/notification-templates", headers=headers).json()
        assert {t["event"] for t in listed} == {e.value for e in notifications.Event}
        bad = client.put(
            "/api/notification-templates/mentioned",
            headers=headers,
            json={"subject": "{{ nope }}", "text": "", "html": ""},
        )
        assert bad.status_code == 422 and bad.json()["error"]["code"] == "merge_tag_unknown"
        shown = client.post(
            "/api/notification-templates/mentioned/preview",
            headers=headers,
            json={"subject": "{{ actor_name }}"},
        )
        assert shown.status_code == 200 and shown.json()["subject"] == "Leo Lane"
        assert client.get("/api/notification-templates/nope/x", headers=headers).status_code == 404
        mine = client.put(
            "/api/me/notifications/daily_digest", headers=headers, json={"enabled": True, "digest_hour": 7}
        )
        assert {p["event"]: p["digest_hour"] for p in mine.json()}["daily_digest"] == 7


def test_daily_digest_once_a_day_at_the_users_hour(sqlite_db: Engine, world: World) -> None:
    from datetime import UTC, datetime, timedelta

    db, w = sqlite_db, world
    eight = datetime(2026, 3, 3, 8, 5, tzinfo=UTC)
    with session_scope(db) as s:
        for who in ("bob", "other_admin"):
            notifications.set_pref(session=s, caller=w.caller(who), event="daily_digest", enabled=False)
        notifications.set_pref(
            session=s, caller=w.caller("admin"), event="daily_digest", enabled=True, digest_hour=9
        )
        assert notifications.send_digests(session=s, now=eight - timedelta(hours=1)) == 0  # nobody's hour
        # Alice (hour 8 by default) sees Alpha and Shared, both waiting for an answer.
        assert notifications.send_digests(session=s, now=eight) == 1
        assert notifications.send_digests(session=s, now=eight + timedelta(minutes=10)) == 0  # once a day
    (row,) = _notifications(db)
    assert row.recipients == ["alice@acme.test"] and "conversations waiting for an answer" in row.subject
    with session_scope(db) as s:
        assert notifications.send_digests(session=s, now=eight + timedelta(hours=1)) == 1  # the admin, at 9
        assert notifications.send_digests(session=s, now=eight + timedelta(days=1)) == 1  # alice, next day


def test_account_needing_credentials_tells_the_admins(sqlite_db: Engine, world: World) -> None:
    from crm import sync_state

    db, w = sqlite_db, world
    with session_scope(db) as s:
        for _ in range(4):  # stops at the third refusal; told once
            sync_state.record_account_failure(
                session=s,
                account_id=w.accounts["A"],
                code="auth_failed",
                params={"host": "imap.example.test", "username": "A"},
                max_auth_failures=3,
            )
    (row,) = _notifications(db)
    assert row.recipients == ["admin@acme.test"] and "a@acme.test needs new credentials" in row.subject


def test_new_conversation_in_a_watched_inbox(sqlite_db: Engine, world: World) -> None:
    from crm import assignment
    from crm.models import Message

    db, w = sqlite_db, world
    with session_scope(db) as s:
        assert notifications.watch_inboxes(
            session=s, caller=w.caller("alice"), account_ids=[w.accounts["A"]]
        ) == [w.accounts["A"]]
        notifications.watch_inboxes(session=s, caller=w.caller("admin"), account_ids=[w.accounts["B"]])
        with pytest.raises(DomainError) as hidden:
            notifications.watch_inboxes(session=s, caller=w.caller("bob"), account_ids=[w.accounts["A"]])
        assert hidden.value.code == "account_not_found"
    with session_scope(db) as s:
        first = s.get_one(Message, w.messages["alpha1"])
        assignment.on_new_mail(session=s, tenant_id=w.tenant, account_id=w.accounts["A"], messages=[first])
    (row,) = _notifications(db)
    assert row.recipients == ["alice@acme.test"] and row.subject == "[Acme] New in a@acme.test: Alpha"
    with Session(db) as s:
        assert notifications.watched_inboxes(session=s, caller=w.caller("alice")) == [w.accounts["A"]]
