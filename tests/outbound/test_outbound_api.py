"""Outgoing mail over the HTTP API: reply (and its collision guard), compose, undo, the queue and
the mail log, each scoped to the caller."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from core.db import session_scope
from crm import auth
from crm.models import Message
from inbox_api.app import create_app
from tests.crm.world import World, build_world


@pytest.fixture
def world(db: Engine) -> World:
    return build_world(db)


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(), base_url="http://testserver") as c:
        yield c


def _bearer(db: Engine, world: World, who: str) -> dict[str, str]:
    with session_scope(db) as s:
        created = auth.create_token(session=s, caller=world.caller(who), user_id=world.users[who], name="t")
    return {"Authorization": f"Bearer {created.secret.get_secret_value()}"}


def test_reply_held_then_confirmed_then_undone(db: Engine, world: World, client: TestClient) -> None:
    alice = _bearer(db, world, "alice")
    with Session(db) as s:
        arrived = s.get_one(Message, world.messages["alpha1"]).created_at
    url = f"/api/messages/{world.messages['alpha1']}/reply"
    opened = (arrived - timedelta(minutes=1)).isoformat()
    held = client.post(url, headers=alice, json={"html": "<p>Yes</p>", "opened_at": opened})
    assert held.status_code == 200, held.text
    body = held.json()
    assert body["held"] is True and body["mail"] is None
    assert [m["id"] for m in body["new_messages"]] == [world.messages["alpha1"]]
    sent = client.post(url, headers=alice, json={"html": "<p>Yes</p>", "opened_at": opened, "confirm": True})
    mail = sent.json()["mail"]
    assert (mail["state"], mail["kind"], mail["to"]) == (
        "queued",
        "reply",
        [{"email": "ann@globex.test", "name": "Ann"}],
    )
    queue = client.get("/api/outbound", headers=alice).json()
    assert [m["id"] for m in queue] == [mail["id"]]
    assert client.get("/api/outbound", headers=_bearer(db, world, "bob")).json() == []
    undone = client.post(f"/api/outbound/{mail['id']}/cancel", headers=alice)
    assert undone.status_code == 200 and undone.json()["state"] == "cancelled"
    again = client.post(f"/api/outbound/{mail['id']}/cancel", headers=alice)
    assert again.status_code == 409 and again.json()["error"]["code"] == "too_late_to_cancel"
    log = client.get("/api/mail-log", params={"state": "cancelled"}, headers=alice).json()
    assert [m["id"] for m in log] == [mail["id"]]
    admin_log = client.get(
        "/api/mail-log", params={"kind": "reply"}, headers=_bearer(db, world, "admin")
    ).json()
    assert [m["id"] for m in admin_log] == [mail["id"]]
    assert client.get("/api/mail-log", headers=_bearer(db, world, "other_admin")).json() == []


def test_compose_with_attachment_and_refusals(db: Engine, world: World, client: TestClient) -> None:
    alice = _bearer(db, world, "alice")
    ok = client.post(
        "/api/outbound",
        headers=alice,
        json={
            "account_id": world.accounts["A"],
            "to": ["Ann <ann@globex.test>"],
            "subject": "Offer",
            "html": "<p>Attached.</p>",
            "attachments": [
                {
                    "filename": "o.txt",
                    "content_type": "text/plain",
                    "data_base64": base64.b64encode(b"hi").decode(),
                }
            ],
            "send_at": "2030-01-01T09:00:00Z",
        },
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["mail"]["next_attempt_at"] == "2030-01-01T09:00:00Z"
    injected = client.post(
        "/api/outbound",
        headers=alice,
        json={
            "account_id": world.accounts["A"],
            "to": ["ann@globex.test"],
            "subject": "Hi\r\nBcc: x@evil.test",
        },
    )
    assert injected.status_code == 422
    assert (injected.json()["error"]["code"], injected.json()["error"]["fields"]["field"]) == (
        "header_invalid",
        "subject",
    )
    hidden = client.post(
        "/api/outbound", headers=alice, json={"account_id": world.accounts["B"], "to": ["a@b.test"]}
    )
    assert hidden.status_code == 404
