"""Drafts on the server (issue 10, item 2) over the API: one per user and conversation, private
by default, shared with those who see the conversation, changed only by their author."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from core.db import session_scope
from crm import auth
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


def test_drafts_private_shared_one_per_user_and_conversation(
    db: Engine, world: World, client: TestClient
) -> None:
    alice, bob = _bearer(db, world, "alice"), _bearer(db, world, "bob")
    shared_thread, alpha = world.threads["Shared"], world.threads["Alpha"]
    url = f"/api/threads/{shared_thread}/draft"
    first = client.put(url, headers=alice, json={"html": "<p>Draft 1</p>", "to": ["Ann <ann@globex.test>"]})
    assert first.status_code == 200, first.text
    again = client.put(url, headers=alice, json={"html": "<p>Draft 2</p>", "subject": "Re: x"})
    assert again.json()["id"] == first.json()["id"] and again.json()["html"] == "<p>Draft 2</p>"
    # Private by default: bob sees the conversation but not alice's draft.
    assert client.get(f"/api/threads/{shared_thread}/drafts", headers=bob).json() == []
    assert client.get(f"/api/drafts/{first.json()['id']}", headers=bob).status_code == 404
    client.put(url, headers=alice, json={"html": "<p>Draft 3</p>", "shared": True})
    seen = client.get(f"/api/threads/{shared_thread}/drafts", headers=bob).json()
    assert [(d["id"], d["mine"], d["html"]) for d in seen] == [(first.json()["id"], False, "<p>Draft 3</p>")]
    # Shared is read-only for the team.
    draft_id = first.json()["id"]
    assert client.put(f"/api/drafts/{draft_id}", headers=bob, json={"html": "mine now"}).status_code == 404
    assert client.delete(f"/api/drafts/{draft_id}", headers=bob).status_code == 404
    # Bob's own draft in the same conversation is another one.
    own = client.put(url, headers=bob, json={"html": "<p>Bob</p>"}).json()
    assert own["id"] != draft_id
    # A shared draft in a conversation bob cannot see stays out of his sight.
    hidden = client.put(
        f"/api/threads/{alpha}/draft", headers=alice, json={"html": "x", "shared": True}
    ).json()
    assert client.get(f"/api/drafts/{hidden['id']}", headers=bob).status_code == 404
    assert hidden["id"] not in [d["id"] for d in client.get("/api/drafts", headers=bob).json()]
    assert client.put(f"/api/threads/{alpha}/draft", headers=bob, json={"html": "x"}).status_code == 404
    # Header injection and bad addresses are refused with the field named.
    injected = client.put(url, headers=alice, json={"html": "x", "subject": "Hi\r\nBcc: evil@x.test"})
    assert injected.status_code == 422 and injected.json()["error"]["fields"]["field"] == "subject"
    bad = client.put(url, headers=alice, json={"html": "x", "cc": ["not an address"]})
    assert bad.status_code == 422 and bad.json()["error"]["fields"]["field"] == "cc"
    # Drafts of new mail: as many as wanted; listed with mine.
    new = client.post(
        "/api/drafts", headers=alice, json={"html": "<p>New</p>", "account_id": world.accounts["A"]}
    )
    assert new.status_code == 200 and new.json()["thread_id"] is None
    mine = {d["id"] for d in client.get("/api/drafts", headers=alice).json()}
    assert {draft_id, hidden["id"], new.json()["id"]} <= mine and own["id"] not in mine
    assert client.delete(f"/api/drafts/{draft_id}", headers=alice).status_code == 204
    assert client.get(f"/api/drafts/{draft_id}", headers=alice).status_code == 404


def test_sending_the_reply_ends_the_draft(db: Engine, world: World, client: TestClient) -> None:
    alice = _bearer(db, world, "alice")
    thread = world.threads["Alpha"]
    draft = client.put(f"/api/threads/{thread}/draft", headers=alice, json={"html": "<p>Soon</p>"}).json()
    sent = client.post(
        f"/api/messages/{world.messages['alpha1']}/reply", headers=alice, json={"html": "<p>Done</p>"}
    )
    assert sent.status_code == 200, sent.text
    assert client.get(f"/api/drafts/{draft['id']}", headers=alice).status_code == 404
