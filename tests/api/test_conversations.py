"""Working conversations over the API: assignment, status and snooze, read marks, notes with
mentions, history, the audit log and the sidebar counts."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session

from core.db import session_scope
from core.types import ConversationStatus
from crm import auth, conversations
from crm.models import Thread
from inbox_api.app import create_app
from tests.crm.world import World, build_world


@pytest.fixture
def world(db: Engine) -> World:
    return build_world(db)


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app()) as c:
        yield c


def _headers(db: Engine, world: World, who: str) -> dict[str, str]:
    with session_scope(db) as s:
        created = auth.create_token(session=s, caller=world.caller(who), user_id=world.users[who])
    return {"Authorization": f"Bearer {created.secret.get_secret_value()}"}


def _subjects(client: TestClient, headers: dict[str, str], query: str) -> list[str]:
    response = client.get(f"/api/threads?{query}", headers=headers)
    assert response.status_code == 200, response.text
    return [t["subject"] for t in response.json()["items"]]


def test_assign_and_the_views_that_follow(db: Engine, world: World, client: TestClient) -> None:
    bob = _headers(db, world, "bob")
    shared = world.threads["Shared"]
    assigned = client.post(
        f"/api/threads/{shared}/assign", json={"assignee_user_id": world.users["alice"]}, headers=bob
    )
    assert assigned.status_code == 200 and assigned.json()["assignee_user_id"] == world.users["alice"]
    alice = _headers(db, world, "alice")
    assert _subjects(client, alice, "assignee=me") == ["Shared"]
    assert _subjects(client, bob, "assignee=unassigned") == ["Beta"]
    assert _subjects(client, bob, "assignee=any") == ["Shared"]
    assert _subjects(client, bob, f"assignee={world.users['alice']}") == ["Shared"]
    # Alice cannot see Beta (account B): she cannot be given it.
    refused = client.post(
        f"/api/threads/{world.threads['Beta']}/assign",
        json={"assignee_user_id": world.users["alice"]},
        headers=bob,
    )
    assert refused.status_code == 422 and refused.json()["error"]["code"] == "assignee_cannot_see"
    # A user of another tenant is not found.
    foreign = client.post(
        f"/api/threads/{shared}/assign", json={"assignee_user_id": world.users["other_admin"]}, headers=bob
    )
    assert foreign.status_code == 404 and foreign.json()["error"]["code"] == "user_not_found"
    unassigned = client.post(f"/api/threads/{shared}/assign", json={"assignee_user_id": None}, headers=alice)
    assert unassigned.json()["assignee_user_id"] is None
    kinds = [e["kind"] for e in client.get(f"/api/threads/{shared}/history", headers=alice).json()]
    assert kinds == ["assigned", "unassigned"]


def test_snooze_wakes_up_by_itself(db: Engine, world: World, client: TestClient) -> None:
    admin = _headers(db, world, "admin")
    alpha = world.threads["Alpha"]
    until = datetime.now(UTC) + timedelta(hours=2)
    snoozed = client.post(
        f"/api/threads/{alpha}/status",
        json={"status": "snoozed", "snoozed_until": until.isoformat()},
        headers=admin,
    )
    assert snoozed.status_code == 200 and snoozed.json()["status"] == "snoozed"
    assert _subjects(client, admin, "status=snoozed") == ["Alpha"]
    assert "Alpha" not in _subjects(client, admin, "status=open")
    counts = client.get("/api/views/counts", headers=admin).json()
    assert counts["snoozed"] == 1 and counts["open"] == 3
    # Time passes (the stored end moves into the past): open again, without any job.
    with session_scope(db) as s:
        thread = s.get(Thread, alpha)
        assert thread is not None
        thread.snoozed_until = datetime.now(UTC) - timedelta(seconds=1)
    assert _subjects(client, admin, "status=snoozed") == []
    assert "Alpha" in _subjects(client, admin, "status=open")
    assert client.get(f"/api/threads/{alpha}", headers=admin).json()["status"] == "open"
    for body, code in (
        ({"status": "snoozed"}, "snooze_time_required"),
        ({"status": "snoozed", "snoozed_until": "2020-01-01T00:00:00+00:00"}, "snooze_in_past"),
        ({"status": "closed", "snoozed_until": until.isoformat()}, "snooze_time_unexpected"),
    ):
        response = client.post(f"/api/threads/{alpha}/status", json=body, headers=admin)
        assert response.status_code == 422 and response.json()["error"]["code"] == code
    closed = client.post(f"/api/threads/{alpha}/status", json={"status": "closed"}, headers=admin)
    assert closed.json()["status"] == "closed"
    assert _subjects(client, admin, "status=closed") == ["Alpha"]


def test_read_marks_are_per_user(db: Engine, world: World, client: TestClient) -> None:
    alice, bob = _headers(db, world, "alice"), _headers(db, world, "bob")
    shared = world.threads["Shared"]
    assert _subjects(client, alice, "unread=true") == ["Shared", "Alpha"]
    assert client.post(f"/api/threads/{shared}/read", headers=alice).status_code == 204
    assert _subjects(client, alice, "unread=true") == ["Alpha"]
    assert _subjects(client, alice, "unread=false") == ["Shared"]
    assert _subjects(client, bob, "unread=true") == ["Shared", "Beta"]  # bob's marks are his own
    items = client.get("/api/threads", headers=alice).json()["items"]
    assert {t["subject"]: t["unread"] for t in items} == {"Shared": False, "Alpha": True}
    assert client.delete(f"/api/threads/{shared}/read", headers=alice).status_code == 204
    assert _subjects(client, alice, "unread=true") == ["Shared", "Alpha"]


def test_notes_mention_colleagues(db: Engine, world: World, client: TestClient) -> None:
    bob, alice = _headers(db, world, "bob"), _headers(db, world, "alice")
    shared = world.threads["Shared"]
    note = client.post(
        f"/api/threads/{shared}/notes",
        json={"body": "@alice can you take this? cc @admin@acme.test and @ghost, mail me at x@acme.test"},
        headers=bob,
    )
    assert note.status_code == 201, note.text
    assert sorted(note.json()["mentions"]) == sorted([world.users["alice"], world.users["admin"]])
    notes = client.get(f"/api/threads/{shared}/notes", headers=alice).json()
    assert [n["body"][:6] for n in notes] == ["@alice"]
    mentions = client.get("/api/mentions", headers=alice).json()
    assert [(m["thread_id"], m["data"]["user_id"]) for m in mentions] == [(shared, world.users["alice"])]
    assert client.get("/api/mentions", headers=bob).json() == []
    empty = client.post(f"/api/threads/{shared}/notes", json={"body": "   "}, headers=bob)
    assert empty.status_code == 422 and empty.json()["error"]["code"] == "note_empty"


def test_audit_log_is_for_admins(db: Engine, world: World, client: TestClient) -> None:
    bob, admin = _headers(db, world, "bob"), _headers(db, world, "admin")
    client.post(f"/api/threads/{world.threads['Beta']}/status", json={"status": "pending"}, headers=bob)
    refused = client.get("/api/audit-log", headers=bob)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_required"
    log = client.get("/api/audit-log", headers=admin).json()
    assert [(e["kind"], e["actor_user_id"], e["data"]["status"]) for e in log] == [
        ("status", world.users["bob"], "pending")
    ]
    other = client.get("/api/audit-log", headers=_headers(db, world, "other_admin")).json()
    assert other == []


def test_service_state_is_serializable(db: Engine, world: World) -> None:
    from pydantic_core import to_jsonable_python

    with Session(db) as s:
        state = conversations.get_state(
            session=s, caller=world.caller("admin"), thread_id=world.threads["Alpha"]
        )
    assert state.status is ConversationStatus.OPEN
    assert to_jsonable_python(state)["status"] == "open"


def test_deal_stage_views(db: Engine, world: World, client: TestClient) -> None:
    """The counts list a view per deal stage and the list filters by it; a stage change moves the
    conversation from one view to the other."""
    bob = _headers(db, world, "bob")
    deal = client.post("/api/deals", json={"title": "Big order", "stage": "proposal"}, headers=bob)
    assert deal.status_code == 201, deal.text
    deal_id = deal.json()["id"]
    linked = client.post(
        f"/api/messages/{world.messages['beta1']}/links",
        json={"record_kind": "deal", "record_id": deal_id, "whole_conversation": True},
        headers=bob,
    )
    assert linked.status_code == 200, linked.text
    counts = client.get("/api/views/counts", headers=bob).json()
    assert counts["per_deal_stage"] == {"proposal": 1}
    assert _subjects(client, bob, "status=open&deal_stage=proposal") == ["Beta"]
    assert _subjects(client, bob, "deal_stage=won") == []
    # Alice sees no mail of account B: the stage is listed (the tenant's deals), empty for her.
    alice = _headers(db, world, "alice")
    assert client.get("/api/views/counts", headers=alice).json()["per_deal_stage"] == {"proposal": 0}
    assert _subjects(client, alice, "deal_stage=proposal") == []
    admin = _headers(db, world, "admin")
    moved = client.patch(f"/api/deals/{deal_id}", json={"stage": "won"}, headers=admin)
    assert moved.status_code == 200, moved.text
    assert client.get("/api/views/counts", headers=bob).json()["per_deal_stage"] == {"won": 1}
    assert _subjects(client, bob, "status=open&deal_stage=won") == ["Beta"]
    assert client.get("/api/threads?deal_stage=" + "x" * 101, headers=bob).status_code == 422
