"""Forwarding addresses, tickets and their report over the HTTP API (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import select

from core.db import session_scope
from core.settings import reset_settings
from crm import auth
from crm.models import OutboundMail
from inbox_api.app import create_app
from tests.crm.world import World, build_world


@pytest.fixture
def world(db: Engine) -> World:
    return build_world(db)


@pytest.fixture
def client(world: World, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("CRM_INBOX_INBOUND_DOMAIN", "in.example.com")
    reset_settings()
    with TestClient(create_app(), base_url="http://testserver") as c:
        yield c


def bearer(db: Engine, world: World, who: str) -> dict[str, str]:
    with session_scope(db) as s:
        created = auth.create_token(session=s, caller=world.caller(who), user_id=world.users[who], name="t")
    return {"Authorization": f"Bearer {created.secret.get_secret_value()}"}


def test_channel_lifecycle_over_the_api(db: Engine, world: World, client: TestClient) -> None:
    admin = bearer(db, world, "admin")
    created = client.post(
        "/api/forwarding",
        json={"name": "Sales EMEA", "original_address": "sales@acme.test", "create_tickets": True},
        headers=admin,
    )
    assert created.status_code == 201, created.text
    channel = created.json()
    local, _, domain = channel["address"].partition("@")
    assert (
        domain == "in.example.com"
        and local.startswith("sales-emea-")
        and len(local) == len("sales-emea-") + 6
    )
    assert not channel["activated"] and channel["ticket_priority"] == "medium"
    # The local part can change until activation, the suffix never.
    renamed = client.patch(
        f"/api/forwarding/{channel['id']}", json={"local_part": "emea"}, headers=admin
    ).json()
    assert renamed["address"] == f"emea-{local.rpartition('-')[2]}@in.example.com"
    assert client.post(f"/api/forwarding/{channel['id']}/activate", headers=admin).json()["activated"]
    refused = client.patch(f"/api/forwarding/{channel['id']}", json={"local_part": "x"}, headers=admin)
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "channel_activated"
    # It is an account like the others: listed with its kind, counted in the quota.
    accounts = client.get("/api/accounts", headers=admin).json()
    [account] = [a for a in accounts if a["id"] == channel["account_id"]]
    assert account["kind"] == "forwarding" and account["imap"] == "none: a hosted forwarding address"
    # Send a test: queued from the channel to the team's original address.
    test = client.post(f"/api/forwarding/{channel['id']}/test", headers=admin)
    assert test.status_code == 200, test.text
    assert test.json()["to"] == "sales@acme.test"
    with session_scope(db) as s:
        queued = s.exec(select(OutboundMail).where(OutboundMail.account_id == channel["account_id"])).one()
        assert test.json()["token"] in queued.subject and queued.recipients == ["sales@acme.test"]
    # Members without a grant do not see it; nothing to report yet.
    alice = bearer(db, world, "alice")
    assert client.get(f"/api/forwarding/{channel['id']}", headers=alice).status_code == 404
    assert client.get("/api/forwarding", headers=alice).json() == []
    assert client.get("/api/tickets", headers=admin).json() == []
    report = client.get("/api/tickets/report", headers=admin).json()
    assert report["opened"] == 0 and report["average_hours_to_close"] is None
    # Members cannot create one; bad local parts are refused with a code.
    assert client.post("/api/forwarding", json={"name": "X"}, headers=alice).status_code == 403
    bad = client.post("/api/forwarding", json={"name": "X", "local_part": "!!!"}, headers=admin)
    assert bad.status_code == 422 and bad.json()["error"]["code"] == "local_part_invalid"
