"""The team's side of synced mail, end to end against a real Dovecot: new conversations assigned
by the account's rule inside the sync's batch, a customer's reply reopening a closed conversation,
and two conversations joined by a later reply keeping their notes and history. Then the same
mail over the API, through a member's eyes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, col, select

from core.caller import Caller, Role
from core.db import session_scope
from core.types import ConversationStatus
from crm import assignment, auth, conversations, grants, tenants
from crm.assignment import AssignMode
from crm.models import Activity, Message, Note, Thread
from devtools.samples import build_message
from inbox_api.app import create_app
from sync.account_pass import SyncEngine
from tests.dovecot_fixtures import MailboxUser
from tests.factories import make_account, make_tenant

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _mail(key: str, hours: int, **kw: Any) -> bytes:
    fields: dict[str, Any] = {
        "subject": f"Order {key}",
        "from_": f"{key}@globex.test",
        "to": "sales@acme.test",
        "message_id": f"<{key}@globex.test>",
        "date": T0 + timedelta(hours=hours),
    }
    fields.update(kw)
    return build_message(**fields)


def _thread_of(db: Engine, message_id: str) -> Thread:
    with Session(db) as s:
        message = s.exec(select(Message).where(Message.message_id == message_id)).one()
        thread = s.get(Thread, message.thread_id)
        assert thread is not None
        return thread


def test_rules_reopen_and_merge_on_real_sync(db: Engine, mailbox_user: MailboxUser) -> None:
    tenant_id = make_tenant(db)
    account_id = make_account(db, tenant_id, mailbox_user, email="sales@acme.test")
    operator = Caller.operator(tenant_id)
    with session_scope(db) as s:
        ann = tenants.create_user(session=s, caller=operator, email="ann@acme.test", first_name="Ann").id
        ben = tenants.create_user(session=s, caller=operator, email="ben@acme.test", first_name="Ben").id
        for user in (ann, ben):
            grants.grant_access(session=s, caller=operator, account_id=account_id, user_id=user)
        assignment.set_rule(
            session=s,
            caller=operator,
            account_id=account_id,
            mode=AssignMode.ROUND_ROBIN,
            user_ids=[ann, ben],
        )
    box = mailbox_user
    box.dovecot.append_many(box.name, "INBOX", [_mail("a", 1), _mail("b", 2), _mail("c", 3)])
    with SyncEngine() as engine:
        assert engine.sync_account(account_id).status == "ok"
    owners = [_thread_of(db, f"<{k}@globex.test>").assignee_user_id for k in "abc"]
    assert owners == [ann, ben, ann]

    # Ann closes "a" and writes a note on "b"; then a customer replies to "a" and one message
    # refers to both "a" and "b" (the threading joins them).
    thread_a, thread_b = _thread_of(db, "<a@globex.test>"), _thread_of(db, "<b@globex.test>")
    ann_caller = Caller(tenant_id, ann, Role.MEMBER)
    with session_scope(db) as s:
        conversations.set_status(
            session=s, caller=ann_caller, thread_id=thread_a.id or 0, status=ConversationStatus.CLOSED
        )
        conversations.add_note(
            session=s, caller=ann_caller, thread_id=thread_b.id or 0, body="@ben big order"
        )
    box.dovecot.append(
        box.name,
        "INBOX",
        _mail(
            "a2",
            5,
            subject="Re: Order a",
            in_reply_to="<a@globex.test>",
            references=["<a@globex.test>", "<b@globex.test>"],
        ),
    )
    with SyncEngine() as engine:
        assert engine.sync_account(account_id).status == "ok"
    joined = _thread_of(db, "<a2@globex.test>")
    with Session(db) as s:
        assert s.get(Thread, thread_a.id) is None or s.get(Thread, thread_b.id) is None  # one absorbed
        notes = s.exec(select(Note).where(Note.thread_id == joined.id)).all()
        assert [n.body for n in notes] == ["@ben big order"]
        kinds = [
            a.kind.value
            for a in s.exec(
                select(Activity).where(Activity.thread_id == joined.id).order_by(col(Activity.id))
            )
        ]
    assert joined.status is ConversationStatus.OPEN  # the reply reopened it
    assert "merged" in kinds and "note" in kinds and "mention" in kinds
    assert joined.assignee_user_id in (ann, ben)

    # Over the API: Ben sees the joined conversation with its note, unread for him.
    with session_scope(db) as s:
        token = auth.create_token(session=s, caller=operator, user_id=ben).secret.get_secret_value()
    with TestClient(create_app()) as client:
        headers = {"Authorization": f"Bearer {token}"}
        page = client.get("/api/threads?unread=true", headers=headers).json()
        assert joined.id in [t["id"] for t in page["items"]]
        detail = client.get(f"/api/threads/{joined.id}", headers=headers).json()
        assert {m["message_id"] for m in detail["messages"]} >= {"<a@globex.test>", "<a2@globex.test>"}
        notes_api = client.get(f"/api/threads/{joined.id}/notes", headers=headers).json()
        assert notes_api[0]["mentions"] == [ben]
        found = client.get("/api/threads?q=order", headers=headers).json()
        assert len(found["items"]) == 2  # "a"+"b" joined, and "c"


def test_split_and_merge_are_remembered(db: Engine, mailbox_user: MailboxUser) -> None:
    """A message split out stays apart when later mail refers to both conversations; a merge
    takes the later replies of both; the threading evidence says why each message is where it is."""
    tenant_id = make_tenant(db)
    account_id = make_account(db, tenant_id, mailbox_user, email="sales@acme.test")
    box = mailbox_user
    box.dovecot.append_many(
        box.name,
        "INBOX",
        [
            _mail("q1", 1, subject="Quote"),
            _mail(
                "q2",
                2,
                subject="Re: Quote",
                from_="q1@globex.test",
                in_reply_to="<q1@globex.test>",
                references=["<q1@globex.test>"],
            ),
            _mail("other", 3, subject="Other topic"),
        ],
    )
    with SyncEngine() as engine:
        assert engine.sync_account(account_id).status == "ok"
    quote, other = _thread_of(db, "<q1@globex.test>"), _thread_of(db, "<other@globex.test>")
    operator = Caller.operator(tenant_id)
    with session_scope(db) as s:
        token = auth.create_token(
            session=s,
            caller=operator,
            user_id=tenants.create_user(session=s, caller=operator, email="boss@acme.test", is_admin=True).id,
        ).secret.get_secret_value()
        q2 = s.exec(select(Message).where(Message.message_id == "<q2@globex.test>")).one()
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app()) as client:
        why = client.get(f"/api/messages/{q2.id}/threading", headers=headers).json()
        assert [e["kind"] for e in why["evidence"]] == ["replies_to"]
        split = client.post(f"/api/messages/{q2.id}/split", headers=headers)
        assert split.status_code == 200, split.text
        apart = split.json()["thread_id"]
        assert apart != quote.id
        alone = client.post(f"/api/messages/{q2.id}/split", headers=headers)
        assert alone.status_code == 409 and alone.json()["error"]["code"] == "nothing_to_split"
    # A reply to the split message that also cites the original: it stays with the split one.
    box.dovecot.append(
        box.name,
        "INBOX",
        _mail(
            "q3",
            4,
            subject="Re: Quote",
            in_reply_to="<q2@globex.test>",
            references=["<q1@globex.test>", "<q2@globex.test>"],
        ),
    )
    with SyncEngine() as engine:
        assert engine.sync_account(account_id).status == "ok"
    assert _thread_of(db, "<q3@globex.test>").id == apart
    assert _thread_of(db, "<q1@globex.test>").id == quote.id
    with TestClient(create_app()) as client:
        merged = client.post(f"/api/threads/{quote.id}/merge", json={"source_id": other.id}, headers=headers)
        assert merged.status_code == 200 and merged.json() == {
            "thread_id": quote.id,
            "other_thread_id": other.id,
        }
        gone = client.get(f"/api/threads/{other.id}", headers=headers)
        assert gone.status_code == 404
        kinds = [e["kind"] for e in client.get(f"/api/threads/{quote.id}/history", headers=headers).json()]
        assert kinds == ["split", "merged"]
    # A later reply to the merged-in message lands in the merged conversation.
    box.dovecot.append(
        box.name, "INBOX", _mail("o2", 5, subject="Re: Other topic", in_reply_to="<other@globex.test>")
    )
    with SyncEngine() as engine:
        assert engine.sync_account(account_id).status == "ok"
    assert _thread_of(db, "<o2@globex.test>").id == quote.id
