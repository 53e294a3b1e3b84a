"""The HTTP API through a real HTTP client (Starlette's TestClient) on SQLite and PostgreSQL:
authentication (tokens, sessions, CSRF, throttling, deactivation), error mapping, scoping."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import Engine
from sqlmodel import Session

from core.caller import Caller
from core.db import session_scope
from core.secrets import SecretBox
from core.types import TicketPriority, TicketStage
from crm import auth, forwarding, records
from crm.models import (
    Draft,
    MailKind,
    OutboundMail,
    OutboundState,
    SenderVerification,
    Signature,
    Ticket,
    User,
)
from inbox_api.app import create_app
from tests.crm.world import World, build_world

PASSWORD = "correct horse battery"


@pytest.fixture
def world(db: Engine) -> World:
    return build_world(db)


@pytest.fixture
def client(world: World) -> Iterator[TestClient]:
    with TestClient(create_app(), base_url="http://testserver") as c:
        yield c


def _token(db: Engine, world: World, who: str) -> str:
    with session_scope(db) as s:
        created = auth.create_token(
            session=s, caller=world.caller(who), user_id=world.users[who], name="test"
        )
    return created.secret.get_secret_value()


def _bearer(db: Engine, world: World, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {_token(db, world, who)}"}


def _set_password(db: Engine, world: World, who: str) -> None:
    with session_scope(db) as s:
        auth.set_password(
            session=s, caller=world.caller(who), user_id=world.users[who], password=SecretStr(PASSWORD)
        )


def test_bearer_token_reads_the_callers_conversations(db: Engine, world: World, client: TestClient) -> None:
    response = client.get("/api/threads", headers=_bearer(db, world, "alice"))
    assert response.status_code == 200
    assert [t["subject"] for t in response.json()["items"]] == ["Shared", "Alpha"]
    me = client.get("/api/me", headers=_bearer(db, world, "alice")).json()
    assert me == {"tenant_id": world.tenant, "user_id": world.users["alice"], "role": "member"}


def test_no_or_bad_credentials_are_401(client: TestClient, db: Engine, world: World) -> None:
    assert client.get("/api/threads").json()["error"]["code"] == "not_signed_in"
    for header in ("Bearer crmi_nope", "Bearer ", "Basic abc", "Bearer sometoken"):
        response = client.get("/api/threads", headers={"Authorization": header})
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_credentials"
        assert response.headers["www-authenticate"] == "Bearer"


def test_revoked_token_and_deactivated_user_stop_at_once(
    db: Engine, world: World, client: TestClient
) -> None:
    token = _token(db, world, "alice")
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/me", headers=headers).status_code == 200
    listed = client.get("/api/tokens", headers=headers).json()
    assert [t["name"] for t in listed] == ["test"] and "secret" not in listed[0]
    assert token not in str(listed)
    revoked = client.delete(f"/api/tokens/{listed[0]['id']}", headers=headers)
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    assert client.get("/api/me", headers=headers).status_code == 401

    other = {"Authorization": f"Bearer {_token(db, world, 'bob')}"}
    assert client.get("/api/me", headers=other).status_code == 200
    with session_scope(db) as s:
        user = s.get(User, world.users["bob"])
        assert user is not None
        user.active = False
    assert client.get("/api/me", headers=other).status_code == 401


def test_token_created_over_the_api_is_shown_once(db: Engine, world: World, client: TestClient) -> None:
    headers = _bearer(db, world, "bob")
    created = client.post("/api/tokens", json={"name": "report job"}, headers=headers)
    assert created.status_code == 201
    secret = created.json()["secret"]
    assert secret.startswith("crmi_")
    assert (
        client.get("/api/me", headers={"Authorization": f"Bearer {secret}"}).json()["user_id"]
        == world.users["bob"]
    )
    # bob may not mint a token for alice; an admin may.
    refused = client.post("/api/tokens", json={"user_id": world.users["alice"]}, headers=headers)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_required"
    admin = client.post(
        "/api/tokens", json={"user_id": world.users["alice"]}, headers=_bearer(db, world, "admin")
    )
    assert admin.status_code == 201


def test_browser_session_needs_csrf_for_changes(db: Engine, world: World, client: TestClient) -> None:
    _set_password(db, world, "alice")
    login = client.post("/api/auth/login", json={"email": "ALICE@acme.test", "password": PASSWORD})
    assert login.status_code == 200, login.text
    cookie = login.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie and PASSWORD not in login.text
    csrf = login.json()["csrf_token"]
    assert client.get("/api/threads").status_code == 200  # reads need no CSRF token
    refused = client.post("/api/tokens", json={"name": "x"})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "csrf_failed"
    wrong = client.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": "forged"})
    assert wrong.status_code == 403
    assert client.post("/api/tokens", json={"name": "x"}, headers={"X-CSRF-Token": csrf}).status_code == 201
    assert client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
    assert client.get("/api/threads").status_code == 401


def test_sign_in_is_throttled_per_address(db: Engine, world: World, client: TestClient) -> None:
    _set_password(db, world, "alice")
    for _ in range(auth.MAX_FAILURES):
        bad = client.post("/api/auth/login", json={"email": "alice@acme.test", "password": "wrong password"})
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_credentials"
    locked = client.post("/api/auth/login", json={"email": "alice@acme.test", "password": PASSWORD})
    assert locked.status_code == 429 and int(locked.headers["retry-after"]) > 0
    # An unknown address answers like a wrong password.
    unknown = client.post("/api/auth/login", json={"email": "ghost@acme.test", "password": PASSWORD})
    assert unknown.status_code in (401, 429)


def test_password_rules(db: Engine, world: World) -> None:
    with Session(db) as s:
        with pytest.raises(Exception) as caught:
            auth.set_password(
                session=s,
                caller=world.caller("alice"),
                user_id=world.users["alice"],
                password=SecretStr("short"),
            )
        assert getattr(caught.value, "code", None) == "password_too_short"
        with pytest.raises(Exception) as caught:
            auth.set_password(
                session=s,
                caller=world.caller("alice"),
                user_id=world.users["bob"],
                password=SecretStr(PASSWORD),
            )
        assert getattr(caught.value, "code", None) == "admin_required"


def test_validation_errors_name_the_field(db: Engine, world: World, client: TestClient) -> None:
    response = client.get("/api/threads?limit=0", headers=_bearer(db, world, "admin"))
    assert response.status_code == 422
    body = response.json()["error"]
    assert body["code"] == "invalid_request" and body["fields"]["problems"][0]["field"] == "query.limit"
    bad_cursor = client.get("/api/threads?cursor=xyz", headers=_bearer(db, world, "admin"))
    assert bad_cursor.status_code == 422 and bad_cursor.json()["error"]["code"] == "invalid_cursor"


# ---------------------------------------------------------------------------------------------
# The sweep: every route of the OpenAPI schema, with ids the caller may not see.


# A valid body per route that takes one: the sweep must reach the visibility check, not stop
# at validation.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("post", "/api/threads/{thread_id}/assign"): {"assignee_user_id": None},
    ("post", "/api/threads/{thread_id}/status"): {"status": "closed"},
    ("post", "/api/threads/{thread_id}/notes"): {"body": "hello"},
    ("post", "/api/threads/{thread_id}/presence"): {"state": "viewing"},
    ("put", "/api/accounts/{account_id}/assignment-rule"): {"mode": "none"},
    ("patch", "/api/accounts/{account_id}"): {"display_name": "x", "check": False},
    ("post", "/api/accounts/{account_id}/active"): {"active": False},
    ("post", "/api/accounts/{account_id}/grants"): {"user_id": 1},
    ("put", "/api/accounts/{account_id}/default-signature"): {"signature_id": None},
    ("post", "/api/accounts/{account_id}/signatures"): {"name": "x", "html": "<p>x</p>"},
    ("post", "/api/accounts/{account_id}/signatures/preview"): {"html": "<p>{{ sender.full_name }}</p>"},
    ("patch", "/api/signatures/{signature_id}"): {"name": "y"},
    ("put", "/api/users/{user_id}/default-account"): {"account_id": None},
    ("post", "/api/users/{user_id}/active"): {"active": False},
    ("patch", "/api/contacts/{contact_id}"): {"phone": "1"},
    ("patch", "/api/deals/{deal_id}"): {"stage": "won over"},
    ("put", "/api/accounts/{account_id}/sharing"): {"level": "full"},
    ("post", "/api/threads/{thread_id}/merge"): {"source_id": 1},
    ("post", "/api/messages/{message_pk}/links"): {"record_kind": "contact", "record_id": 1},
    ("post", "/api/messages/{message_pk}/unlink"): {"record_kind": "contact", "record_id": 1},
    ("post", "/api/messages/{message_pk}/reply"): {"html": "<p>Thanks</p>", "undo_seconds": 0},
    ("patch", "/api/forwarding/{channel_id}"): {"create_tickets": True},
    ("put", "/api/forwarding/{channel_id}/smtp"): {"host": None},
    ("post", "/api/forwarding/{channel_id}/sender"): {"email": "team@acme.test"},
    ("patch", "/api/tickets/{ticket_id}"): {"priority": "high"},
    ("put", "/api/accounts/{account_id}/smtp"): {"host": "127.0.0.1", "test_to": "t@globex.test"},
    ("put", "/api/accounts/{account_id}/daily-limit"): {"per_day": 10},
    ("put", "/api/sending"): {"notifications_enabled": True},
    ("put", "/api/threads/{thread_id}/draft"): {"html": "x"},
    ("put", "/api/drafts/{draft_id}"): {"html": "x"},
    ("post", "/api/drafts"): {"html": "x"},
    ("post", "/api/sending/sender"): {"email": "news@acme.test"},
    ("post", "/api/sending/verify"): {"token": "1.x.y"},
}


def _invisible_ids(world: World, who: str) -> dict[str, list[int]]:
    """Per path parameter: ids of another tenant and of accounts the caller cannot see."""
    hidden_threads = {
        "alice": ["Beta", "Gamma", "Xeno"],
        "bob": ["Alpha", "Gamma", "Xeno"],
        "other_admin": ["Alpha", "Beta", "Shared", "Gamma"],
    }[who]
    hidden_messages = {
        "alice": ["beta1", "shared2", "gamma1", "xeno1"],
        "bob": ["alpha1", "gamma1", "xeno1"],
        "other_admin": ["alpha1", "beta1", "shared1", "gamma1"],
    }[who]
    other_users = [u for name, u in world.users.items() if (name == "other_admin") != (who == "other_admin")]
    return {
        "user_id": other_users,
        "signature_id": [],  # filled by the test
        "thread_id": [world.threads[n] for n in hidden_threads],
        "message_pk": [world.messages[n] for n in hidden_messages],
        "token_id": [],  # filled by the test: a token of another user
        "account_id": [world.accounts[k] for k in ("A", "B", "C", "X") if not _sees(who, k)],
    }


def _visible_id(world: World, who: str, param: str) -> int:
    visible = {
        "user_id": world.users[who],
        "account_id": world.accounts[{"alice": "A", "bob": "B", "other_admin": "X"}[who]],
    }
    assert param in visible, f"the sweep needs a visible id for {param}"
    return visible[param]


def _records_of(db: Engine, tenant_id: int) -> dict[str, list[int]]:
    """A contact, a company and a deal of a tenant the caller is not in."""
    operator = Caller.operator(tenant_id)
    with session_scope(db) as s:
        company = records.create_company(session=s, caller=operator, name="Hidden Co", domains=[])
        contact = records.create_contact(
            session=s, caller=operator, emails=[f"hidden{tenant_id}@hidden.test"]
        )
        deal = records.create_deal(session=s, caller=operator, title="Hidden deal", contact_ids=[contact.id])
    return {"contact_id": [contact.id], "company_id": [company.id], "deal_id": [deal.id]}


def _signatures_of(db: Engine, world: World, accounts: list[str]) -> list[int]:
    ids = []
    with session_scope(db) as s:
        for key in accounts:
            row = Signature(
                tenant_id=world.other_tenant if key == "X" else world.tenant,
                account_id=world.accounts[key],
                name=f"Sig {key}",
                html="<p>Regards</p>",
                text="Regards",
            )
            s.add(row)
            s.flush()
            ids.append(row.id or 0)
    return ids


def _outbound_of(db: Engine, world: World, accounts: list[str]) -> list[int]:
    """A queued outgoing mail of each account the caller cannot see."""
    ids = []
    with session_scope(db) as s:
        for key in accounts:
            row = OutboundMail(
                tenant_id=world.other_tenant if key == "X" else world.tenant,
                account_id=world.accounts[key],
                kind=MailKind.COMPOSE,
                state=OutboundState.QUEUED,
                message_id=f"<sweep-{key}@acme.test>",
                from_email=f"{key.lower()}@acme.test",
                raw=b"Subject: x\r\n\r\nx\r\n",
                next_attempt_at=datetime.now(UTC) + timedelta(hours=1),
            )
            s.add(row)
            s.flush()
            ids.append(row.id or 0)
    return ids


def _channels_and_tickets_of(db: Engine, world: World, who: str) -> tuple[list[int], list[int]]:
    """A forwarding channel the caller cannot see (another tenant's; for members also one of
    their own tenant without a grant), and a ticket on a conversation they cannot see."""
    tenants_ = [world.tenant] if who == "other_admin" else [world.other_tenant, world.tenant]
    channels: list[int] = []
    with session_scope(db) as s:
        for n, tenant_id in enumerate(tenants_):
            channel = forwarding.create_channel(
                session=s,
                caller=Caller.operator(tenant_id),
                box=SecretBox.from_settings(),
                domain="in.example.com",
                name=f"Hidden {who} {n}",
            )
            channels.append(channel.id)
        hidden = "Xeno" if who != "other_admin" else "Alpha"
        thread = world.threads["Gamma" if who != "other_admin" else hidden]
        ticket = Ticket(
            tenant_id=world.other_tenant if hidden == "Xeno" else world.tenant,
            number=1,
            thread_id=thread if who == "other_admin" else world.threads["Xeno"],
            account_id=world.accounts["X" if who != "other_admin" else "A"],
            stage=TicketStage.NEW,
            priority=TicketPriority.LOW,
        )
        s.add(ticket)
        s.flush()
        tickets_ = [ticket.id or 0]
        if who != "other_admin":
            member_ticket = Ticket(
                tenant_id=world.tenant,
                number=1,
                thread_id=thread,
                account_id=world.accounts["C"],
                stage=TicketStage.NEW,
                priority=TicketPriority.LOW,
            )
            s.add(member_ticket)
            s.flush()
            tickets_.append(member_ticket.id or 0)
    return channels, tickets_


def _verifications_of(db: Engine, tenant_id: int) -> list[int]:
    """A sender verification waiting in a tenant the caller is not in."""
    with session_scope(db) as s:
        row = SenderVerification(tenant_id=tenant_id, email="news@sweep.test")
        s.add(row)
        s.flush()
        return [row.id or 0]


def _drafts_hidden_from(db: Engine, world: World, who: str) -> list[int]:
    """A private draft of someone else in the caller's tenant, and a shared one in another tenant."""
    mine = world.other_tenant if who == "other_admin" else world.tenant
    theirs = world.tenant if who == "other_admin" else world.other_tenant
    ids = []
    with session_scope(db) as s:
        for tenant_id, user, shared in (
            (mine, "other_admin" if who == "other_admin" else "admin", False),
            (theirs, "admin" if who == "other_admin" else "other_admin", True),
        ):
            if user == who:
                continue
            row = Draft(tenant_id=tenant_id, user_id=world.users[user], shared=shared, html="x")
            s.add(row)
            s.flush()
            ids.append(row.id or 0)
    return ids


def _sees(who: str, account: str) -> bool:
    return {"alice": {"A"}, "bob": {"B"}, "other_admin": {"X"}}[who].__contains__(account)


@pytest.mark.parametrize("who", ["alice", "bob", "other_admin"])
def test_every_route_answers_404_for_what_the_caller_may_not_see(
    db: Engine, world: World, client: TestClient, who: str
) -> None:
    headers = _bearer(db, world, who)
    # A token of someone else: carol (same tenant) for the members, Acme's admin for Other's.
    owner = "admin" if who == "other_admin" else "carol"
    foreign_token = _token(db, world, owner)
    ids = _invisible_ids(world, who)
    with Session(db) as s:
        tokens = auth.list_tokens(session=s, caller=world.caller("admin"), user_id=world.users[owner])
    ids["token_id"] = [t.id for t in tokens]
    ids["signature_id"] = _signatures_of(db, world, [k for k in ("A", "B", "C", "X") if not _sees(who, k)])
    ids.update(_records_of(db, world.tenant if who == "other_admin" else world.other_tenant))
    ids["outbound_id"] = _outbound_of(db, world, [k for k in ("A", "B", "C", "X") if not _sees(who, k)])
    ids["channel_id"], ids["ticket_id"] = _channels_and_tickets_of(db, world, who)
    ids["draft_id"] = _drafts_hidden_from(db, world, who)
    ids["verification_id"] = _verifications_of(
        db, world.tenant if who == "other_admin" else world.other_tenant
    )
    schema: dict[str, Any] = client.get("/openapi.json").json()
    checked = 0
    for path, operations in schema["paths"].items():
        # ids, not names (an attachment's index is its position in a message the caller sees)
        params = [p for p in re.findall(r"{(\w+)}", path) if p.endswith("_id") or p == "message_pk"]
        if not params:
            continue
        for method in operations:
            for param in params:
                assert param in ids, f"the sweep does not know the path parameter {param} of {path}"
                for ident in ids[param]:
                    url = path.replace("{" + param + "}", str(ident))
                    for other in (p for p in params if p != param):  # the others: ids the caller sees
                        url = url.replace("{" + other + "}", str(_visible_id(world, who, other)))
                    url = url.replace("{index}", "0")
                    body = BODIES.get((method, path))
                    if "requestBody" in operations[method]:
                        assert body is not None, f"the sweep needs a valid body for {method.upper()} {path}"
                    response = client.request(method.upper(), url, headers=headers, json=body)
                    assert response.status_code == 404, (method, url, response.text)
                    checked += 1
    assert checked >= 7  # grows with the routes; never zero
    # Query filters with an invisible account answer the same.
    for account_id in ids["account_id"]:
        response = client.get(f"/api/threads?account_id={account_id}", headers=headers)
        assert response.status_code == 404
        # ...and so does reconnecting one by OAuth (the id is in the body): before the provider
        # is even looked at (none is configured here).
        response = client.post(
            "/api/oauth/start", json={"provider": "google", "account_id": account_id}, headers=headers
        )
        assert response.status_code == 404, response.text
    # ...and nothing was changed: the foreign token still works.
    assert client.get("/api/me", headers={"Authorization": f"Bearer {foreign_token}"}).status_code == 200


def test_openapi_documents_every_route(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert operation.get("summary"), f"{method.upper()} {path} has no summary"
