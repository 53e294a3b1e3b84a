"""Daily sending limits (issue 10, item 9): provider defaults, mail held in `waiting_for_limit`
with the time it goes, released when the rolling 24 h window frees room; against aiosmtpd."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine, update
from sqlmodel import Session, col, select
from typer.testing import CliRunner

from core.db import session_scope
from core.errors import DomainError
from core.secrets import SecretBox
from core.settings import get_settings
from core.types import Security, utcnow
from crm import auth
from crm.models import LimitUnit, MailAccount, OutboundAccount, OutboundMail
from crm.outbound import limits, queue
from crm.outbound.compose import Draft, send_mail
from crm.outbound.views import OutboundState
from crm_inbox.cli import app as cli_app
from devtools.devmail import LocalDovecot
from inbox_api.app import create_app
from sync.send_queue import work_queue
from tests.crm.world import World, build_world
from tests.outbound.smtp import SmtpServer, recording_smtp


def _account(email: str, smtp_host: str | None) -> MailAccount:
    return MailAccount(
        tenant_id=1,
        email=email,
        imap_host="imap.test",
        imap_port=993,
        imap_security=Security.TLS,
        username=email,
        secret_encrypted="x",
        smtp_host=smtp_host,
    )


def test_provider_defaults() -> None:
    gmail = limits.provider_default(_account("ann@gmail.com", "smtp.gmail.com"))
    workspace = limits.provider_default(_account("ann@acme.test", "smtp.gmail.com"))
    m365 = limits.provider_default(_account("ann@acme.test", "smtp.office365.com"))
    other = limits.provider_default(_account("ann@acme.test", "mail.acme.test"))
    assert (gmail.per_day, gmail.unit, gmail.provider) == (500, LimitUnit.RECIPIENTS, "gmail")
    assert (workspace.per_day, workspace.unit) == (2000, LimitUnit.MESSAGES)
    assert (m365.per_day, m365.unit, m365.provider) == (10_000, LimitUnit.RECIPIENTS, "microsoft_365")
    assert other.per_day is None


@contextlib.contextmanager
def _world(db: Engine, dovecot: LocalDovecot) -> Iterator[tuple[World, SmtpServer]]:
    w = build_world(db)
    with recording_smtp(dovecot, Security.STARTTLS) as smtp, session_scope(db) as s:
        row = s.get_one(MailAccount, w.accounts["A"])
        row.smtp_host, row.smtp_port, row.smtp_security = "127.0.0.1", smtp.port, Security.STARTTLS
        row.smtp_username = smtp.username
        row.smtp_secret_encrypted = SecretBox.from_settings().encrypt(SecretStr(smtp.password))
        row.ca_file = str(dovecot.ca_file)
        # The server files sent mail itself: this test is about sending, not the Sent folder.
        s.add(OutboundAccount(account_id=w.accounts["A"], server_saves_sent=True))
        s.commit()
        yield w, smtp


@pytest.fixture
def world(db: Engine, dovecot: LocalDovecot) -> Iterator[tuple[World, SmtpServer]]:
    """Both databases: the limit is decided under the account row's lock."""
    with _world(db, dovecot) as found:
        yield found


@pytest.fixture
def sqlite_world(sqlite_db: Engine, dovecot: LocalDovecot) -> Iterator[tuple[World, SmtpServer]]:
    with _world(sqlite_db, dovecot) as found:
        yield found


def _queue(db: Engine, w: World, *to: str) -> int:
    with session_scope(db) as s:
        result = send_mail(
            session=s,
            caller=w.caller("alice"),
            draft=Draft(html="<p>Hi</p>", to=to, subject="Hello"),
            account_id=w.accounts["A"],
            undo_seconds=0,
        )
    assert result.mail is not None
    return result.mail.id


def _state(db: Engine, outbound_id: int) -> OutboundMail:
    with Session(db) as s:
        return s.get_one(OutboundMail, outbound_id)


def test_limit_holds_mail_and_releases_it(db: Engine, world: tuple[World, SmtpServer]) -> None:
    w, smtp = world
    with session_scope(db) as s:
        limits.set_limit(
            session=s,
            caller=w.caller("admin"),
            account_id=w.accounts["A"],
            per_day=3,
            unit=LimitUnit.RECIPIENTS,
        )
    first = _queue(db, w, "a@globex.test", "b@globex.test")
    second = _queue(db, w, "c@globex.test")
    third = _queue(db, w, "d@globex.test")
    too_big = _queue(db, w, "e@globex.test", "f@globex.test", "g@globex.test", "h@globex.test")
    work_queue(db=db, settings=get_settings())
    assert [_state(db, i).state for i in (first, second)] == [OutboundState.SENT] * 2
    held = _state(db, third)
    assert held.state is OutboundState.WAITING_LIMIT
    sent_at = _state(db, first).sent_at
    assert sent_at is not None and held.next_attempt_at == sent_at + limits.WINDOW  # when it goes
    assert _state(db, too_big).state is OutboundState.FAILED
    assert _state(db, too_big).error_code == "over_daily_limit"
    assert sorted(r for m in smtp.recorder.received for r in m.rcpt_tos) == [
        "a@globex.test",
        "b@globex.test",
        "c@globex.test",
    ]
    # Shown in the queue and the limit's view with the time it will go.
    with Session(db) as s:
        view = limits.get_limit(session=s, caller=w.caller("alice"), account_id=w.accounts["A"])
        waiting = queue.mail_log(session=s, caller=w.caller("alice"), states=[OutboundState.WAITING_LIMIT])
    assert (view.per_day, view.used_last_24h, view.waiting, view.source) == (3, 3, 1, "custom")
    assert [m.id for m in waiting] == [third] and waiting[0].next_attempt_at == held.next_attempt_at
    # Not before its time...
    work_queue(db=db, settings=get_settings())
    assert _state(db, third).state is OutboundState.WAITING_LIMIT
    # ...then the rolling window moves on (the first send is 24 h old): it goes, once.
    with session_scope(db) as s:
        past = utcnow() - limits.WINDOW - timedelta(minutes=1)
        s.execute(
            update(OutboundMail).where(col(OutboundMail.id) == first).values(sent_at=past, updated_at=past)
        )
        s.execute(update(OutboundMail).where(col(OutboundMail.id) == third).values(next_attempt_at=past))
    work_queue(db=db, settings=get_settings())
    assert _state(db, third).state is OutboundState.SENT
    work_queue(db=db, settings=get_settings())
    assert [r for m in smtp.recorder.received for r in m.rcpt_tos].count("d@globex.test") == 1
    with Session(db) as s:
        assert s.exec(select(OutboundMail.state).where(OutboundMail.id == third)).one() is OutboundState.SENT


def test_no_limit_and_default(sqlite_db: Engine, sqlite_world: tuple[World, SmtpServer]) -> None:
    db, (w, _) = sqlite_db, sqlite_world
    with session_scope(db) as s:
        view = limits.set_limit(session=s, caller=w.caller("admin"), account_id=w.accounts["A"], per_day=0)
        assert view.per_day is None and view.source == "custom"
        back = limits.set_limit(session=s, caller=w.caller("admin"), account_id=w.accounts["A"], per_day=None)
        assert back.source == "provider_default" and back.provider == "other"
        with pytest.raises(DomainError) as member:
            limits.set_limit(session=s, caller=w.caller("alice"), account_id=w.accounts["A"], per_day=5)
        assert member.value.code == "admin_required"
        with pytest.raises(DomainError) as negative:
            limits.set_limit(session=s, caller=w.caller("admin"), account_id=w.accounts["A"], per_day=-1)
        assert negative.value.code == "daily_limit_invalid"


def test_api_and_cli(sqlite_db: Engine, sqlite_world: tuple[World, SmtpServer]) -> None:
    db, (w, _) = sqlite_db, sqlite_world
    with session_scope(db) as s:
        token = auth.create_token(
            session=s, caller=w.caller("admin"), user_id=w.users["admin"], name="t"
        ).secret.get_secret_value()
    headers = {"Authorization": f"Bearer {token}"}
    url = f"/api/accounts/{w.accounts['A']}/daily-limit"
    with TestClient(create_app(), base_url="http://testserver") as client:
        put = client.put(url, headers=headers, json={"per_day": 50, "unit": "messages"})
        assert put.status_code == 200, put.text
        got = client.get(url, headers=headers).json()
        assert (got["per_day"], got["unit"], got["source"]) == (50, "messages", "custom")
        assert client.put(url, headers=headers, json={"per_day": -3}).status_code == 422
    done = CliRunner().invoke(
        cli_app, ["daily-limit", str(w.accounts["A"]), "--tenant", str(w.tenant), "--default", "--json"]
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["source"] == "provider_default"
