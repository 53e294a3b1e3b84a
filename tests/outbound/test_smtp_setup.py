"""SMTP settings saved only after a test mail was accepted (issue 10, item 4), against a real
aiosmtpd: plain + AUTH, STARTTLS and implicit TLS; every refusal explained by its cause, nothing
saved, the attempt in the mail log."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import Session
from typer.testing import CliRunner

from core.db import session_scope
from core.errors import DomainError
from core.secrets import SecretBox
from core.settings import get_settings
from core.types import Security
from crm import auth
from crm.models import MailAccount
from crm.outbound import queue
from crm.outbound.smtp_setup import SmtpSaved, SmtpSettingsIn, SmtpTestFailed, save_smtp_settings
from crm.outbound.views import MailKind, OutboundState
from crm_inbox.cli import app as cli_app
from devtools.devmail import LocalDovecot
from inbox_api.app import create_app
from sync.smtp_setup import Cause, make_test_sender
from tests.crm.world import World, build_world
from tests.outbound.smtp import SmtpServer, recording_smtp
from tests.sync.test_checks import SMTP_PASSWORD, SMTP_USER

M365_DISABLED = (
    "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant."
)


@pytest.fixture
def world(sqlite_db: Engine, dovecot: LocalDovecot) -> World:
    w = build_world(sqlite_db)
    with session_scope(sqlite_db) as s:
        row = s.get_one(MailAccount, w.accounts["A"])
        row.ca_file = str(dovecot.ca_file)
    return w


def _save(
    db: Engine,
    world: World,
    smtp: SmtpServer,
    *,
    security: Security | None = None,
    password: str = SMTP_PASSWORD,
    test_to: str = "check@globex.test",
    who: str = "admin",
) -> SmtpSaved:
    return save_smtp_settings(
        sessions=lambda: session_scope(db),
        caller=world.caller(who),
        account_id=world.accounts["A"],
        given=SmtpSettingsIn(
            host="127.0.0.1",
            security=security or smtp.security,
            port=smtp.port,
            username=SMTP_USER,
            password=SecretStr(password),
            test_to=test_to,
        ),
        box=SecretBox.from_settings(),
        send_test=make_test_sender(),
    )


def _refused(db: Engine, world: World, smtp: SmtpServer, **kw: object) -> SmtpTestFailed:
    with pytest.raises(SmtpTestFailed) as caught:
        _save(db, world, smtp, **kw)  # type: ignore[arg-type]
    with Session(db) as s:
        account = s.get_one(MailAccount, world.accounts["A"])
        assert account.smtp_host is None and account.smtp_secret_encrypted is None  # nothing saved
    (logged,) = queue.mail_log(session=Session(db), caller=world.caller("admin"), kinds=[MailKind.TEST])
    assert logged.state is OutboundState.FAILED and logged.id == caught.value.fields["outbound_id"]
    assert SMTP_PASSWORD not in caught.value.message and "wrong-password" not in caught.value.message
    return caught.value


@pytest.mark.parametrize("security", [Security.PLAIN, Security.STARTTLS, Security.TLS])
def test_saved_after_the_test_mail_was_accepted(
    sqlite_db: Engine, world: World, dovecot: LocalDovecot, security: Security
) -> None:
    with recording_smtp(dovecot, security) as smtp:
        saved = _save(sqlite_db, world, smtp)
    (got,) = smtp.recorder.received
    assert got.rcpt_tos == ["check@globex.test"] and got.mail_from == "a@acme.test"
    assert b"Subject: crm-inbox: test mail from a@acme.test" in got.data
    assert (saved.host, saved.port, saved.security) == ("127.0.0.1", smtp.port, security)
    assert saved.test.kind is MailKind.TEST and saved.test.state is OutboundState.SENT
    assert saved.test.last_response_code == 250
    with Session(sqlite_db) as s:
        account = s.get_one(MailAccount, world.accounts["A"])
        assert (account.smtp_host, account.smtp_port, account.smtp_security) == (
            "127.0.0.1",
            smtp.port,
            security,
        )
        assert account.smtp_secret_encrypted and SMTP_PASSWORD not in account.smtp_secret_encrypted
        assert (
            SecretBox.from_settings().decrypt(account.smtp_secret_encrypted).get_secret_value()
            == SMTP_PASSWORD
        )
    # Not a mail of the queue: never picked up for sending or filing in Sent.
    with Session(sqlite_db) as s:
        assert queue.due_ids(session=s) == [] and queue.filing_due_ids(session=s) == []


def test_wrong_password_says_app_password(sqlite_db: Engine, world: World, dovecot: LocalDovecot) -> None:
    with recording_smtp(dovecot, Security.STARTTLS) as smtp:
        error = _refused(sqlite_db, world, smtp, password="wrong-password")
    assert error.fields["cause"] == Cause.AUTHENTICATION
    assert "app password" in error.message and "not saved" in error.message
    assert error.fields["server_code"] == 535
    assert smtp.recorder.received == []


def test_microsoft_365_smtp_auth_disabled(sqlite_db: Engine, world: World, dovecot: LocalDovecot) -> None:
    with recording_smtp(dovecot, Security.STARTTLS, auth_refusal=M365_DISABLED) as smtp:
        error = _refused(sqlite_db, world, smtp, password="wrong-password")
    assert error.fields["cause"] == Cause.AUTH_DISABLED
    assert "Authenticated SMTP" in error.message and "5.7.139" in error.fields["server_reply"]
    # The server's own words are kept for the mail log, not put in the sentence.
    assert "SmtpClientAuthentication" not in error.message


def test_certificate_not_trusted(sqlite_db: Engine, world: World, dovecot: LocalDovecot) -> None:
    with session_scope(sqlite_db) as s:
        s.get_one(MailAccount, world.accounts["A"]).ca_file = None
    with recording_smtp(dovecot, Security.TLS) as smtp:
        error = _refused(sqlite_db, world, smtp)
    assert error.fields["cause"] == Cause.CERTIFICATE and "not trusted" in error.message


def test_implicit_tls_against_a_starttls_port(sqlite_db: Engine, world: World, dovecot: LocalDovecot) -> None:
    with recording_smtp(dovecot, Security.STARTTLS) as smtp:
        error = _refused(sqlite_db, world, smtp, security=Security.TLS)
    assert error.fields["cause"] == Cause.PORT_MISMATCH
    assert "does not speak implicit TLS" in error.message and "587" in error.message


def test_starttls_against_an_implicit_tls_port(
    sqlite_db: Engine, world: World, dovecot: LocalDovecot
) -> None:
    get_settings().connect_timeout_seconds = 1.0  # the server waits for a handshake that never comes
    with recording_smtp(dovecot, Security.TLS) as smtp:
        error = _refused(sqlite_db, world, smtp, security=Security.STARTTLS)
    assert error.fields["cause"] == Cause.PORT_MISMATCH
    assert "expects implicit TLS" in error.message and "465" in error.message


def test_relay_denied(sqlite_db: Engine, world: World, dovecot: LocalDovecot) -> None:
    with recording_smtp(dovecot, Security.STARTTLS) as smtp:
        smtp.recorder.refuse["check@globex.test"] = "554 5.7.1 <check@globex.test>: Relay access denied"
        error = _refused(sqlite_db, world, smtp)
    assert error.fields["cause"] == Cause.RELAY_DENIED and "relay" in error.message


def test_sender_refused(sqlite_db: Engine, world: World, dovecot: LocalDovecot) -> None:
    with recording_smtp(dovecot, Security.STARTTLS) as smtp:
        smtp.recorder.refuse_senders["a@acme.test"] = "553 5.7.1 Sender address rejected: not owned by user"
        error = _refused(sqlite_db, world, smtp)
    assert error.fields["cause"] == Cause.SENDER_REFUSED and "send as a@acme.test" in error.message


def test_message_too_large(sqlite_db: Engine, world: World, dovecot: LocalDovecot) -> None:
    with recording_smtp(dovecot, Security.STARTTLS) as smtp:
        smtp.recorder.data_replies.append("552 5.3.4 Message size exceeds fixed maximum message size")
        error = _refused(sqlite_db, world, smtp)
    assert error.fields["cause"] == Cause.TOO_LARGE and "too large" in error.message


def test_bad_input_refused_before_any_connection(
    sqlite_db: Engine, world: World, dovecot: LocalDovecot
) -> None:
    with recording_smtp(dovecot, Security.STARTTLS) as smtp:
        with pytest.raises(DomainError) as bad_address:
            _save(sqlite_db, world, smtp, test_to="not an address")
        with pytest.raises(DomainError) as injected:
            _save(sqlite_db, world, smtp, test_to="x@globex.test\r\nBcc: victim@evil.test")
        with pytest.raises(DomainError) as member:
            _save(sqlite_db, world, smtp, who="alice")
    assert bad_address.value.code == "address_invalid"
    assert injected.value.code == "header_invalid" and injected.value.fields["field"] == "test address"
    assert member.value.code == "admin_required"
    assert smtp.recorder.received == []


@pytest.fixture
def api_world(db: Engine, dovecot: LocalDovecot) -> World:
    w = build_world(db)
    with session_scope(db) as s:
        s.get_one(MailAccount, w.accounts["A"]).ca_file = str(dovecot.ca_file)
    return w


@pytest.fixture
def client(api_world: World) -> Iterator[TestClient]:
    with TestClient(create_app(), base_url="http://testserver") as c:
        yield c


def test_api_saves_or_explains(
    db: Engine, api_world: World, client: TestClient, dovecot: LocalDovecot
) -> None:
    with session_scope(db) as s:
        token = auth.create_token(
            session=s, caller=api_world.caller("admin"), user_id=api_world.users["admin"], name="t"
        ).secret.get_secret_value()
    headers = {"Authorization": f"Bearer {token}"}
    url = f"/api/accounts/{api_world.accounts['A']}/smtp"
    with recording_smtp(dovecot, Security.STARTTLS) as smtp:
        body = {"host": "127.0.0.1", "port": smtp.port, "security": "starttls", "username": SMTP_USER}
        wrong = client.put(
            url, headers=headers, json={**body, "password": "nope", "test_to": "me@globex.test"}
        )
        ok = client.put(
            url, headers=headers, json={**body, "password": SMTP_PASSWORD, "test_to": "me@globex.test"}
        )
    assert wrong.status_code == 409, wrong.text
    problem = wrong.json()["error"]
    assert "nope" not in wrong.text and problem["code"] == "smtp_test_failed"
    assert problem["fields"]["cause"] == "authentication" and "app password" in problem["message"]
    assert ok.status_code == 200, ok.text
    assert ok.json()["test"]["state"] == "sent" and SMTP_PASSWORD not in ok.text
    log = client.get("/api/mail-log", headers=headers, params={"kind": "test"}).json()
    assert [m["state"] for m in log] == ["sent", "failed"]
    assert len(smtp.recorder.received) == 1


def test_api_connect_with_smtp_creates_the_account_only_after_an_accepted_test_mail(
    db: Engine, api_world: World, client: TestClient, dovecot: LocalDovecot
) -> None:
    """POST /api/accounts with SMTP: the same test mail as the set-up; refused, nothing at all is
    created (409 with the cause; `force` and `check: false` do not skip it)."""
    with session_scope(db) as s:
        token = auth.create_token(
            session=s, caller=api_world.caller("admin"), user_id=api_world.users["admin"], name="t"
        ).secret.get_secret_value()
    headers = {"Authorization": f"Bearer {token}"}
    get_settings().connect_timeout_seconds = 1.0  # the mismatch waits for a greeting that never comes
    before = client.get("/api/accounts", headers=headers).json()
    body = {
        "email": "new@acme.test",
        "imap_host": "imap.acme.test",
        "username": "new@acme.test",
        "password": "imap-pw",
        "check": False,  # no IMAP server here: the IMAP login is not what this test is about
        "force": True,
        "smtp_host": "127.0.0.1",
        "smtp_username": SMTP_USER,
        "smtp_password": SMTP_PASSWORD,
        "smtp_test_to": "me@globex.test",
    }

    def post(**kw: object) -> Any:
        return client.post("/api/accounts", headers=headers, json=body | kw)

    with recording_smtp(dovecot, Security.TLS) as tls:
        no_address = post(smtp_port=tls.port, smtp_security="tls", smtp_test_to=None)
        mismatch = post(smtp_port=tls.port, smtp_security="plain")
        # The server's certificate comes from the suite's private CA: not trusted, never skipped.
        untrusted = post(smtp_port=tls.port, smtp_security="tls")
    assert no_address.status_code == 422 and no_address.json()["error"]["code"] == "test_address_required"
    causes = [(r.status_code, r.json()["error"]["fields"].get("cause")) for r in (mismatch, untrusted)]
    assert causes == [(409, "port_encryption_mismatch"), (409, "certificate")]
    problem = mismatch.json()["error"]
    assert "The account was not created" in problem["message"] and SMTP_PASSWORD not in mismatch.text
    assert client.get("/api/accounts", headers=headers).json() == before and tls.recorder.received == []
    with recording_smtp(dovecot, Security.PLAIN) as smtp:
        created = post(smtp_port=smtp.port, smtp_security="plain")
    assert created.status_code == 201, created.text
    account = created.json()["account"]
    assert account["smtp"] == f"127.0.0.1:{smtp.port} (plain)"
    [test_mail] = smtp.recorder.received
    assert test_mail.rcpt_tos == ["me@globex.test"] and test_mail.mail_from == "new@acme.test"
    log = client.get("/api/mail-log", headers=headers, params={"kind": "test"}).json()
    assert [(m["account_id"], m["state"]) for m in log] == [
        (account["id"], "sent"),
        (None, "failed"),
        (None, "failed"),
    ]


def test_cli_smtp_setup(
    sqlite_db: Engine, world: World, dovecot: LocalDovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMTP_PW", SMTP_PASSWORD)
    get_settings().connect_timeout_seconds = 1.0
    runner = CliRunner()
    base = [
        "smtp-setup", str(world.accounts["A"]), "--tenant", str(world.tenant), "--host", "127.0.0.1",
        "--username", SMTP_USER, "--test-to", "me@globex.test",
    ]  # fmt: skip
    with recording_smtp(dovecot, Security.TLS) as smtp:
        mismatch = runner.invoke(
            cli_app, [*base, "--port", str(smtp.port), "--security", "plain", "--password-env", "SMTP_PW"]
        )
        done = runner.invoke(
            cli_app,
            [*base, "--port", str(smtp.port), "--security", "tls", "--password-env", "SMTP_PW", "--json"],
        )
    assert (
        mismatch.exit_code == 1
        and "not saved" in mismatch.output
        and "mail-log --kind test" in mismatch.output
    )
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["test"]["state"] == "sent"
