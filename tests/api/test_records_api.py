"""Records over the API: lists, edits, deletion, CSV import, timelines with per-account sharing
levels, reports as CSV, and the incremental export of linked mail, each scoped to the caller."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from core.caller import Caller
from core.db import session_scope
from crm import auth, records
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


@pytest.fixture
def ben(db: Engine, world: World) -> int:
    """A contact whose mail (beta1, beta2) lives in account B only: bob's personal mailbox."""
    with session_scope(db) as s:
        contact = records.create_contact(
            session=s, caller=Caller.operator(world.tenant), emails=["ben@initech.test"], first_name="Ben"
        )
    return contact.id


def test_timeline_sharing_levels(db: Engine, world: World, client: TestClient, ben: int) -> None:
    alice, bob, admin = (_headers(db, world, w) for w in ("alice", "bob", "admin"))
    url = f"/api/contacts/{ben}/timeline"
    mine = client.get(url, headers=bob).json()["items"]
    assert [i["level"] for i in mine] == ["full", "full"] and all(i["message_pk"] for i in mine)
    # B has one user (bob): a personal mailbox shares who and when only.
    theirs = client.get(url, headers=alice).json()["items"]
    assert [i["level"] for i in theirs] == ["metadata", "metadata"]
    assert all(i["subject"] is None and i["snippet"] is None and i["message_pk"] is None for i in theirs)
    assert theirs[0]["sender"]["email"] == "ben@initech.test"
    level = client.get(f"/api/accounts/{world.accounts['B']}/sharing", headers=bob).json()
    assert level == {"account_id": world.accounts["B"], "level": "metadata", "explicit": False}
    assert (
        client.put(
            f"/api/accounts/{world.accounts['B']}/sharing", json={"level": "subject"}, headers=bob
        ).status_code
        == 403
    )
    set_level = client.put(
        f"/api/accounts/{world.accounts['B']}/sharing", json={"level": "subject"}, headers=admin
    )
    assert set_level.json()["explicit"] is True
    shared = client.get(url, headers=alice).json()["items"]
    assert [i["subject"] for i in shared] == ["Re: Beta", "Re: Beta"] and shared[0]["snippet"] is None
    client.put(f"/api/accounts/{world.accounts['B']}/sharing", json={"level": "hidden"}, headers=admin)
    assert client.get(url, headers=alice).json()["items"] == []
    assert len(client.get(url, headers=admin).json()["items"]) == 2  # admins see everything
    # Keyset pages.
    first = client.get(f"{url}?limit=1", headers=bob).json()
    second = client.get(f"{url}?limit=1&cursor={first['next_cursor']}", headers=bob).json()
    assert (
        first["items"][0]["message_pk"] != second["items"][0]["message_pk"] and second["next_cursor"] is None
    )


def test_lists_edits_and_deletes(db: Engine, world: World, client: TestClient, ben: int) -> None:
    alice, admin = _headers(db, world, "alice"), _headers(db, world, "admin")
    created = client.post(
        "/api/contacts", json={"emails": ["zoe@umbrella.test"], "first_name": "Zoë"}, headers=alice
    )
    assert created.status_code == 201, created.text
    found = client.get("/api/contacts?q=UMBRELLA", headers=alice).json()
    assert [c["first_name"] for c in found["items"]] == ["Zoë"]
    edited = client.patch(f"/api/contacts/{ben}", json={"phone": "+49 30 1234"}, headers=alice)
    assert edited.json()["phone"] == "+49 30 1234"
    taken = client.post("/api/contacts", json={"emails": ["ben@initech.test"]}, headers=alice)
    assert taken.status_code == 409 and taken.json()["error"]["code"] == "email_taken"
    company = client.post(
        "/api/companies", json={"name": "Initech", "domains": ["initech.test"]}, headers=alice
    ).json()
    deal = client.post(
        "/api/deals", json={"title": "Initech renewal", "contact_ids": [ben], "amount": 12000}, headers=alice
    )
    assert deal.status_code == 201
    won = client.patch(
        f"/api/deals/{deal.json()['id']}", json={"status": "won", "stage": "signed"}, headers=alice
    )
    assert won.json()["status"] == "won" and won.json()["stage"] == "signed"
    assert client.get("/api/deals?status=won", headers=alice).json()["items"][0]["title"] == "Initech renewal"
    refused = client.delete(f"/api/companies/{company['id']}", headers=alice)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_required"
    assert client.delete(f"/api/contacts/{ben}", headers=admin).status_code == 204
    assert client.get(f"/api/contacts/{ben}", headers=alice).status_code == 404
    assert client.get(f"/api/contacts/{ben}/timeline", headers=admin).status_code == 404
    # Pages by id.
    for i in range(3):
        client.post("/api/contacts", json={"emails": [f"p{i}@page.test"]}, headers=alice)
    page = client.get("/api/contacts?limit=2", headers=alice).json()
    rest = client.get(f"/api/contacts?limit=2&after={page['next_cursor']}", headers=alice).json()
    assert len(page["items"]) == 2 and {c["id"] for c in page["items"]}.isdisjoint(
        {c["id"] for c in rest["items"]}
    )


def test_csv_import_is_for_admins(db: Engine, world: World, client: TestClient) -> None:
    data = b"Email,First Name,Last Name\nann@globex.test,Ann,Smith\nnot-an-address,Bad,Row\n"
    files = {"file": ("export.csv", data, "text/csv")}
    refused = client.post("/api/contacts/import", files=files, headers=_headers(db, world, "alice"))
    assert refused.status_code == 403
    strict = client.post("/api/contacts/import", files=files, headers=_headers(db, world, "admin")).json()
    assert strict["created"] == 0 and strict["errors"][0]["code"] == "invalid_email"  # .test is reserved
    report = client.post(
        "/api/contacts/import?allow_test_domains=true", files=files, headers=_headers(db, world, "admin")
    )
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["created"] == 1 and [e["line"] for e in body["errors"]] == [3]
    # The import's backfill linked Ann's synced mail (alpha1 in A).
    ann = client.get("/api/contacts?q=ann@globex", headers=_headers(db, world, "alice")).json()["items"][0]
    timeline = client.get(f"/api/contacts/{ann['id']}/timeline", headers=_headers(db, world, "alice")).json()
    assert [i["subject"] for i in timeline["items"]] == ["Re: Alpha"]


def test_export_and_reports_are_scoped(db: Engine, world: World, client: TestClient, ben: int) -> None:
    alice, admin = _headers(db, world, "alice"), _headers(db, world, "admin")
    everything = client.get("/api/export/linked-mail", headers=admin).json()
    hers = client.get("/api/export/linked-mail", headers=alice).json()
    kinds = {(i["message_id"], i["record_kind"]) for i in everything["items"]}
    assert ("<beta1@mail.test>", "contact") in kinds
    assert all(i["message_id"] not in ("<beta1@mail.test>", "<beta2@mail.test>") for i in hers["items"])
    again = client.get(f"/api/export/linked-mail?since={everything['cursor']}", headers=admin).json()
    assert again["items"] == [] and again["cursor"] == everything["cursor"]
    csv_report = client.get("/api/reports/last-contact?by=contact&format=csv", headers=admin)
    assert csv_report.headers["content-type"].startswith("text/csv")
    assert (
        csv_report.text.splitlines()[0].startswith("record_id") or "record" in csv_report.text.splitlines()[0]
    )
    json_report = client.get("/api/reports/last-contact?by=contact", headers=alice).json()
    assert all(row["record_id"] != ben for row in json_report)  # alice sees none of ben's mail


def test_link_and_unlink_by_hand(db: Engine, world: World, client: TestClient, ben: int) -> None:
    alice = _headers(db, world, "alice")
    alpha1 = world.messages["alpha1"]
    linked = client.post(
        f"/api/messages/{alpha1}/links", json={"record_kind": "contact", "record_id": ben}, headers=alice
    )
    assert linked.status_code == 200 and linked.json()["messages"] == 1
    why = client.get(f"/api/messages/{alpha1}/links", headers=alice).json()
    assert {"record_kind": "contact", "record_id": ben, "reason": "manual"}.items() <= next(
        w for w in why if w["record_id"] == ben
    ).items()
    unlinked = client.post(
        f"/api/messages/{alpha1}/unlink",
        json={"record_kind": "contact", "record_id": ben, "whole_conversation": True},
        headers=alice,
    )
    assert unlinked.status_code == 200 and unlinked.json()["messages"] >= 1
    assert all(
        w["record_id"] != ben for w in client.get(f"/api/messages/{alpha1}/links", headers=alice).json()
    )
    kinds = [
        e["kind"] for e in client.get(f"/api/threads/{world.threads['Alpha']}/history", headers=alice).json()
    ]
    assert kinds == ["linked", "unlinked"]
    # Bob cannot see alpha1: not found, nothing changed.
    bob = _headers(db, world, "bob")
    hidden = client.post(
        f"/api/messages/{alpha1}/links", json={"record_kind": "contact", "record_id": ben}, headers=bob
    )
    assert hidden.status_code == 404
