"""The mail log as a web page: signed in with a browser session, scoped like the API (a member
sees the mail of their accounts only), filters, escaping, the strict CSP."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine

from core.db import session_scope
from crm import auth
from crm.models import MailKind, OutboundMail, OutboundState
from inbox_api.app import create_app
from inbox_api.deps import SESSION_COOKIE
from tests.crm.world import World, build_world


def _signed_in(db: Engine, world: World, who: str) -> str:
    with session_scope(db) as s:
        auth.set_password(
            session=s, caller=world.caller("admin"), user_id=world.users[who], password=SecretStr("pw-" * 5)
        )
    with session_scope(db) as s:
        return auth.sign_in(
            session=s, email=f"{who}@acme.test", password=SecretStr("pw-" * 5)
        ).session_id.get_secret_value()


def test_mail_log_page(sqlite_db: Engine) -> None:
    world = build_world(sqlite_db)
    with session_scope(sqlite_db) as s:
        for key, subject, state in (
            ("A", "<b>Quote</b> for A", OutboundState.SENT),
            ("B", "For B", OutboundState.FAILED),
        ):
            s.add(
                OutboundMail(
                    tenant_id=world.tenant,
                    account_id=world.accounts[key],
                    kind=MailKind.REPLY,
                    state=state,
                    message_id=f"<page-{key}@acme.test>",
                    subject=subject,
                    from_email=f"{key.lower()}@acme.test",
                    recipients=["ann@globex.test"],
                    to_addrs=[{"email": "ann@globex.test", "name": ""}],
                    raw=b"x",
                    last_response_code=250 if state is OutboundState.SENT else 550,
                    last_response="2.0.0 Ok" if state is OutboundState.SENT else "5.1.1 unknown user",
                    created_at=datetime(2026, 3, 2, 10, 0, tzinfo=UTC),
                )
            )
    with TestClient(create_app(), base_url="http://testserver", follow_redirects=False) as client:
        assert client.get("/mail-log").status_code == 303  # not signed in
        client.cookies.set(SESSION_COOKIE, _signed_in(sqlite_db, world, "alice"))
        page = client.get("/mail-log")
        assert page.status_code == 200 and "Content-Security-Policy" in page.headers
        assert "&lt;b&gt;Quote&lt;/b&gt; for A" in page.text and "For B" not in page.text  # alice: A only
        assert "250 2.0.0 Ok" in page.text and 'href="/mail-log"' in page.text
        client.cookies.set(SESSION_COOKIE, _signed_in(sqlite_db, world, "admin"))
        failed = client.get("/mail-log", params={"state": "failed"})
        assert (
            "For B" in failed.text and "550 5.1.1 unknown user" in failed.text and "Quote" not in failed.text
        )
