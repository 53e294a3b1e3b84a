"""A forwarding channel's custom reply sender is proven by the emailed link of the outbound
issue (crm.outbound.senders): the link mail goes through the send queue to a real aiosmtpd (the
deployment's SMTP), the link is followed on the confirmation page; until then replies leave
with the default sender (the hosted address), and the tenant's notification sender is never
touched."""

from __future__ import annotations

import re
from datetime import timedelta
from email import message_from_bytes, policy

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import Session

from core.caller import Caller, Role
from core.db import session_scope
from core.errors import DomainError
from core.secrets import SecretBox
from core.settings import Settings, get_settings
from core.types import Security, utcnow
from crm import auth, tenants
from crm.outbound import senders, smtp_setup, system_mail
from crm.outbound.compose import Draft, send_mail
from inbox_api.app import create_app
from sync.send_queue import work_queue
from sync.smtp_setup import make_test_sender
from tests.outbound.smtp import SmtpServer, recording_smtp
from tests.sync.inbound_harness import make_world
from tests.sync.test_checks import SMTP_PASSWORD, SMTP_USER

TEAM = "sales@ourco.example"


def _link_token(smtp: SmtpServer) -> str:
    parsed = message_from_bytes(smtp.recorder.received[-1].data, policy=policy.default)
    body = parsed.get_body(("plain",))
    assert body is not None
    found = re.search(r"/verify-sender\?token=([\w.-]+)", body.get_content())
    assert found is not None
    return found.group(1)


def _reply_from(db: Engine, caller: Caller, account_id: int) -> str:
    with session_scope(db) as session:
        queued = send_mail(
            session=session,
            caller=caller,
            draft=Draft(html="<p>Hello</p>", to=("jane.doe@acme.example",), subject="Your order"),
            account_id=account_id,
            undo_seconds=0,
        )
    assert queued.mail is not None
    return queued.mail.from_email


def test_custom_sender_verified_by_the_emailed_link(sqlite_db: Engine, settings: Settings) -> None:
    db = sqlite_db
    world = make_world(db)
    with (
        recording_smtp(None, Security.PLAIN) as system,  # type: ignore[arg-type]  # no TLS: no CA
        recording_smtp(None, Security.PLAIN) as channel_smtp,  # type: ignore[arg-type]
    ):
        live = get_settings()
        live.system_smtp_host, live.system_smtp_port, live.system_smtp_security = (
            "127.0.0.1",
            system.port,
            "plain",
        )
        live.system_smtp_username, live.system_smtp_password = system.username, SecretStr(system.password)
        live.system_from_address = "notifications@crm-inbox.test"
        live.public_url = "https://crm.example.test"
        smtp_setup.save_smtp_settings(
            sessions=lambda: session_scope(db),
            caller=world.admin,
            account_id=world.account_id,
            given=smtp_setup.SmtpSettingsIn(
                host="127.0.0.1",
                port=channel_smtp.port,
                security=Security.PLAIN,
                username=SMTP_USER,
                password=SecretStr(SMTP_PASSWORD),
                test_to="check@ourco.example",
            ),
            box=SecretBox.from_settings(),
            send_test=make_test_sender(),
        )
        channel_smtp.recorder.received.clear()  # the set-up's test mail
        with session_scope(db) as session:
            member = tenants.create_user(session=session, caller=world.admin, email="ann@ourco.example")
            tokens = {
                who: auth.create_token(session=session, caller=caller, user_id=uid, name="t").secret
                for who, caller, uid in (
                    ("admin", world.admin, world.admin_id),
                    (
                        "member",
                        Caller(tenant_id=world.tenant_id, user_id=member.id, role=Role.MEMBER),
                        member.id,
                    ),
                )
            }
        admin = {"Authorization": f"Bearer {tokens['admin'].get_secret_value()}"}
        assert _reply_from(db, world.admin, world.account_id) == world.address  # the default sender

        with TestClient(create_app(), base_url="http://testserver") as client:
            url = f"/api/forwarding/{world.channel_id}/sender"
            hosted = client.post(url, json={"email": world.address}, headers=admin)
            assert hosted.status_code == 422 and hosted.json()["error"]["code"] == "sender_is_hosted_address"
            member_headers = {"Authorization": f"Bearer {tokens['member'].get_secret_value()}"}
            assert client.post(url, json={"email": TEAM}, headers=member_headers).status_code == 404
            asked = client.post(url, json={"email": f"Sales <{TEAM}>"}, headers=admin)
            assert asked.status_code == 200, asked.text
            view = asked.json()
            assert (view["sender_address"], view["sender_verified"], view["sender_pending"]) == (
                world.address,
                False,
                TEAM,
            )
            [waiting] = client.get(url, headers=admin).json()
            assert waiting["email"] == TEAM and waiting["current_from"] is None
            # Not the tenant's notification sender: its own list stays empty.
            assert client.get("/api/sending/sender", headers=admin).json() == []
            work_queue(db=db, settings=live)
            [link_mail] = system.recorder.received
            assert link_mail.rcpt_tos == [TEAM]
            first = _link_token(system)
            # Until the link is followed, replies keep the hosted address.
            assert _reply_from(db, world.admin, world.account_id) == world.address
            # A resend (a minute later) supersedes the first link.
            with session_scope(db) as session:
                senders.resend(
                    session=session,
                    caller=world.admin,
                    request_id=waiting["id"],
                    now=utcnow() + timedelta(seconds=61),
                )
            work_queue(db=db, settings=live)
            second = _link_token(system)
            assert second != first and len(system.recorder.received) == 2
            with session_scope(db) as session, pytest.raises(DomainError) as used:
                senders.confirm(session=session, token=first)
            assert used.value.code == "token_used"
            # Following the link: a GET shows a form (mail scanners confirm nothing), the POST confirms.
            page = client.get(f"/verify-sender?token={second}")
            assert page.status_code == 200 and 'method="post"' in page.text
            assert (
                client.get(f"/api/forwarding/{world.channel_id}", headers=admin).json()["sender_verified"]
                is False
            )
            done = client.post("/verify-sender", data={"token": second})
            assert done.status_code == 200 and TEAM in done.text and "team inbox" in done.text
            after = client.get(f"/api/forwarding/{world.channel_id}", headers=admin).json()
            assert (after["sender_address"], after["sender_verified"], after["sender_pending"]) == (
                TEAM,
                True,
                None,
            )
            again = client.post(url, json={"email": TEAM}, headers=admin)
            assert again.status_code == 409 and again.json()["error"]["code"] == "sender_already_verified"

        # Replies now leave as the verified address, through the channel's SMTP.
        assert _reply_from(db, world.admin, world.account_id) == TEAM
        work_queue(db=db, settings=live)
        # What customers got: the two replies before the link with the hosted address, then this.
        froms = [
            str(message_from_bytes(r.data, policy=policy.default)["From"])
            for r in channel_smtp.recorder.received
        ]
        assert len(froms) == 3 and all(f"<{world.address}>" in f for f in froms[:2]), froms
        assert f"<{TEAM}>" in froms[2]
        # The tenant's own notification sender was never touched.
        with Session(db) as session:
            assert system_mail.sender_of(session, world.tenant_id).email == "notifications@crm-inbox.test"
            assert system_mail.get_sending(session=session, caller=world.admin).mode == "default"
