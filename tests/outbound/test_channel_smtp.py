"""A forwarding channel's SMTP server (`PUT /api/forwarding/{id}/smtp`) goes through the same
test-mail set-up as any account's (issue 10, item 4): saved only once a test mail to the given
address was accepted by a real aiosmtpd, with the channel's own login (a channel has no IMAP
login to fall back on); an empty host removes it. The account route works on a channel too."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from core.db import session_scope
from core.types import Security
from crm import auth, tenants
from crm.models import MailAccount
from inbox_api.app import create_app
from tests.outbound.smtp import recording_smtp
from tests.sync.inbound_harness import make_world
from tests.sync.test_checks import SMTP_PASSWORD, SMTP_USER


def _smtp_of(db: Engine, account_id: int) -> tuple[Any, ...]:
    with Session(db) as session:
        row = session.get_one(MailAccount, account_id)
        return row.smtp_host, row.smtp_port, row.smtp_security, row.smtp_username


def test_a_channels_smtp_is_saved_only_after_an_accepted_test_mail(sqlite_db: Engine) -> None:
    db = sqlite_db
    world = make_world(db)
    with session_scope(db) as session:
        member = tenants.create_user(session=session, caller=world.admin, email="ann@ourco.example")
        secrets = {
            name: auth.create_token(session=session, caller=world.admin, user_id=uid, name="t").secret
            for name, uid in (("admin", world.admin_id), ("member", member.id))
        }
    admin = {"Authorization": f"Bearer {secrets['admin'].get_secret_value()}"}
    url = f"/api/forwarding/{world.channel_id}/smtp"
    with (
        recording_smtp(None, Security.PLAIN) as smtp,  # type: ignore[arg-type]  # no TLS: no CA
        TestClient(create_app(), base_url="http://testserver") as client,
    ):
        body = {
            "host": "127.0.0.1",
            "port": smtp.port,
            "security": "plain",
            "username": SMTP_USER,
            "password": SMTP_PASSWORD,
            "test_to": "check@ourco.example",
        }

        def put(payload: dict[str, Any], headers: dict[str, str] = admin) -> Any:
            return client.put(url, json=payload, headers=headers)

        as_member = {"Authorization": f"Bearer {secrets['member'].get_secret_value()}"}
        assert put(body, as_member).status_code == 404  # missing and forbidden answer the same
        no_address = put({k: v for k, v in body.items() if k != "test_to"})
        assert no_address.status_code == 422 and no_address.json()["error"]["code"] == "test_address_required"
        # The channel's stored secret is a random placeholder, never a login to try.
        no_login = put({k: v for k, v in body.items() if k not in ("username", "password")})
        assert no_login.status_code == 422 and no_login.json()["error"]["code"] == "smtp_login_required"
        refused = put(body | {"password": "not the password"})
        assert refused.status_code == 409, refused.text
        problem = refused.json()["error"]
        assert (problem["code"], problem["fields"]["cause"]) == ("smtp_test_failed", "authentication")
        assert "The SMTP settings were not saved" in problem["message"]
        assert "not the password" not in refused.text
        assert smtp.recorder.received == [] and _smtp_of(db, world.account_id) == (None, None, None, None)

        saved = put(body)
        assert saved.status_code == 200, saved.text
        assert saved.json()["id"] == world.channel_id
        [test_mail] = smtp.recorder.received
        assert (test_mail.mail_from, test_mail.rcpt_tos) == (world.address, ["check@ourco.example"])
        assert _smtp_of(db, world.account_id) == ("127.0.0.1", smtp.port, Security.PLAIN, SMTP_USER)
        log = client.get("/api/mail-log", params={"kind": "test"}, headers=admin).json()
        assert [(m["account_id"], m["state"]) for m in log] == [
            (world.account_id, "sent"),
            (world.account_id, "failed"),
        ]

        # The account route works on the channel too; the saved login is kept (no password given).
        again = client.put(
            f"/api/accounts/{world.account_id}/smtp",
            json={
                "host": "127.0.0.1",
                "port": smtp.port,
                "security": "plain",
                "test_to": "other@ourco.example",
            },
            headers=admin,
        )
        assert again.status_code == 200, again.text
        assert again.json()["username"] == SMTP_USER
        assert smtp.recorder.received[-1].rcpt_tos == ["other@ourco.example"]

        removed = put({"host": None})
        assert removed.status_code == 200
        assert _smtp_of(db, world.account_id) == (None, None, None, None)
