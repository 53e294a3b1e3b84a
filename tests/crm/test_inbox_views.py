"""The inbox read service: what each caller sees, filters, keyset pages, one thread, one message."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic_core import to_jsonable_python
from sqlalchemy import Engine
from sqlmodel import Session

from core.caller import Caller, Role
from core.db import session_scope
from core.errors import DomainError, ErrorKind
from core.types import Direction
from crm import inbox_views
from crm.inbox_views import ThreadFilter
from crm.models import Message
from tests.crm.world import T0, World, build_world


@pytest.fixture
def world(db: Engine) -> World:
    return build_world(db)


def _subjects(db: Engine, caller: Caller, **filters: Any) -> list[str]:
    with Session(db) as s:
        page = inbox_views.list_threads(session=s, caller=caller, filters=ThreadFilter(**filters))
    return [t.subject for t in page.items]


def test_each_caller_sees_the_threads_of_its_accounts(db: Engine, world: World) -> None:
    assert _subjects(db, world.caller("admin")) == ["Gamma", "Shared", "Beta", "Alpha"]
    assert _subjects(db, world.caller("alice")) == ["Shared", "Alpha"]
    assert _subjects(db, world.caller("bob")) == ["Shared", "Beta"]
    assert _subjects(db, world.caller("carol")) == []  # her only account is deactivated
    assert _subjects(db, world.caller("nobody")) == []
    assert _subjects(db, world.caller("other_admin")) == ["Xeno"]


def test_a_member_sees_only_the_shared_thread_messages_that_reached_them(db: Engine, world: World) -> None:
    with Session(db) as s:
        alice = inbox_views.get_thread(
            session=s, caller=world.caller("alice"), thread_id=world.threads["Shared"]
        )
        bob = inbox_views.get_thread(session=s, caller=world.caller("bob"), thread_id=world.threads["Shared"])
        page = inbox_views.list_threads(session=s, caller=world.caller("alice"))
    assert [m.message_id for m in alice.messages] == ["<shared1@mail.test>"]
    assert [m.message_id for m in bob.messages] == ["<shared1@mail.test>", "<shared2@mail.test>"]
    # Where alice finds it: account A only, although the message is in B as well.
    assert [(loc.account_id, loc.folder.value) for loc in alice.messages[0].locations] == [
        (world.accounts["A"], "inbox")
    ]
    shared = next(t for t in page.items if t.subject == "Shared")
    assert shared.message_count == 1 and shared.last_from is not None
    assert shared.last_from.email == "sue@globex.test"


@pytest.mark.parametrize("who", ["alice", "carol", "nobody", "other_admin"])
def test_invisible_threads_and_messages_are_not_found(db: Engine, world: World, who: str) -> None:
    caller = world.caller(who)
    with Session(db) as s:
        for call in (
            lambda: inbox_views.get_thread(session=s, caller=caller, thread_id=world.threads["Beta"]),
            lambda: inbox_views.get_message(session=s, caller=caller, message_pk=world.messages["beta1"]),
            lambda: inbox_views.find_by_message_id(session=s, caller=caller, message_id="beta1@mail.test"),
            lambda: inbox_views.get_thread(session=s, caller=caller, thread_id=999_999),
        ):
            with pytest.raises(DomainError) as caught:
                call()
            assert caught.value.kind is ErrorKind.NOT_FOUND
            assert caught.value.code in {"thread_not_found", "message_not_found"}


def test_missing_and_forbidden_answer_the_same(db: Engine, world: World) -> None:
    with Session(db) as s:
        answers = []
        for thread_id in (world.threads["Beta"], 999_999):
            with pytest.raises(DomainError) as caught:
                inbox_views.get_thread(session=s, caller=world.caller("alice"), thread_id=thread_id)
            answers.append((caught.value.code, caught.value.message.replace(str(thread_id), "N")))
    assert answers[0] == answers[1]


def test_filters(db: Engine, world: World) -> None:
    admin = world.caller("admin")
    assert _subjects(db, admin, account_id=world.accounts["A"]) == ["Shared", "Alpha"]
    assert _subjects(db, admin, text="INITECH") == ["Beta"]  # a sender's address, any case
    assert _subjects(db, admin, text="shar") == ["Shared"]  # the subject
    assert _subjects(db, admin, text="100%") == []  # LIKE wildcards are literal
    assert _subjects(db, admin, since=T0 + timedelta(hours=3), until=T0 + timedelta(hours=6)) == [
        "Shared",
        "Beta",
    ]
    assert _subjects(db, admin, direction=Direction.OUTBOUND) == []
    assert _subjects(db, admin, contact_id=world.contact_id) == ["Gamma", "Shared", "Beta", "Alpha"]
    assert _subjects(db, admin, contact_id=world.contact_id + 1) == []
    # bob's account filter on an account he cannot see: not found, not an empty list
    with Session(db) as s, pytest.raises(DomainError) as caught:
        inbox_views.list_threads(
            session=s, caller=world.caller("bob"), filters=ThreadFilter(account_id=world.accounts["A"])
        )
    assert caught.value.code == "account_not_found"
    # A sender only visible in B's copy does not make alice find the thread by text.
    assert _subjects(db, world.caller("alice"), text="bob@acme") == []
    assert _subjects(db, world.caller("bob"), text="bob@acme") == ["Shared"]


def test_keyset_pages_walk_every_thread_once(db: Engine, world: World) -> None:
    admin = world.caller("admin")
    seen: list[str] = []
    cursor = None
    with Session(db) as s:
        while True:
            page = inbox_views.list_threads(session=s, caller=admin, limit=1, cursor=cursor)
            seen += [t.subject for t in page.items]
            if page.next_cursor is None:
                break
            cursor = page.next_cursor
        assert seen == ["Gamma", "Shared", "Beta", "Alpha"]
        for bad in ("garbage!", "bm90LWEtZGF0ZXwx"):
            with pytest.raises(DomainError) as caught:
                inbox_views.list_threads(session=s, caller=admin, cursor=bad)
            assert caught.value.code == "invalid_cursor"
        with pytest.raises(DomainError) as caught:
            inbox_views.list_threads(session=s, caller=admin, limit=0)
        assert caught.value.code == "invalid_page_size"


def test_message_view_is_safe_and_serializable(db: Engine, world: World) -> None:
    with Session(db) as s:
        message = inbox_views.find_by_message_id(
            session=s, caller=world.caller("alice"), message_id="alpha1@mail.test"
        )
        thread = inbox_views.get_thread(
            session=s, caller=world.caller("admin"), thread_id=world.threads["Beta"]
        )
        page = inbox_views.list_threads(session=s, caller=world.caller("admin"))
    assert "<script" not in message.html_body and "onclick" not in message.html_body
    assert "Body of alpha1" in message.html_body
    assert message.bcc == ()  # a received message's Bcc is not shown
    assert [link.record_id for link in message.links] == [world.contact_id]
    snippet = next(t.snippet for t in page.items if t.subject == "Alpha")
    assert snippet == "Body of alpha1"  # quoted lines are not the newest words
    for view in (message, thread, page):
        dumped = to_jsonable_python(view)
        assert isinstance(dumped, dict)
    assert to_jsonable_python(thread)["messages"][0]["direction"] == "inbound"


def test_roles_are_taken_from_the_caller_not_the_ids(db: Engine, world: World) -> None:
    """An admin role in another tenant gives nothing here."""
    impostor = Caller(world.other_tenant, world.users["admin"], Role.ADMIN)
    assert _subjects(db, impostor) == ["Xeno"]


def test_full_text_search_folds_accents_and_case(db: Engine, world: World) -> None:
    """Subject, participants and bodies; accents and case folded; every word a prefix; all words
    required; only mail the caller sees."""
    with session_scope(db) as s:
        s.add(
            Message(
                tenant_id=world.tenant,
                message_id="<angebot@mail.test>",
                content_hash="angebot",
                subject="Angebot für Café Müller",
                date=T0,
                from_email="jürgen@bäckerei.test",
                from_name="Jürgen Groß",
                to_addrs=[{"email": "einkauf@acme.test", "name": "Einkauf"}],
                text_body="Die Preisliste für 2027 liegt bei.",
                thread_id=world.threads["Beta"],
            )
        )
    admin = world.caller("admin")
    for query in ("cafe MULLER", "müller café", "preisl", "2027", "jurgen", "backerei", "einkauf", "Groß"):
        assert _subjects(db, admin, text=query) == ["Beta"], query
    assert _subjects(db, admin, text="muller zzz") == []  # every word is required
    assert _subjects(db, admin, text="body alpha1") == ["Alpha"]  # a body
    assert _subjects(db, admin, text="team@acme.test")[:1] == ["Gamma"]  # a recipient
    assert _subjects(db, world.caller("alice"), text="muller") == []  # Beta is not hers
    assert _subjects(db, admin, text='"); DROP TABLE message; --') == []


def test_full_text_search_plans_agree(db: Engine, world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    """A selective search lists the index's set of conversations; a common one walks the list
    newest first: both give the same pages (the plan is chosen by how many messages match)."""

    def pages(caller: Caller, query: str) -> list[list[str]]:
        out, cursor = [], None
        with Session(db) as s:
            while True:
                page = inbox_views.list_threads(
                    session=s, caller=caller, filters=ThreadFilter(text=query), limit=1, cursor=cursor
                )
                out.append([t.subject for t in page.items])
                if page.next_cursor is None:
                    return out
                cursor = page.next_cursor

    queries = ("body", "globex", "body beta1", "acme", "nothing")
    callers = [world.caller(n) for n in ("admin", "alice", "bob", "other_admin")]
    by_set = {(c, q): pages(c, q) for c in callers for q in queries}
    assert by_set[(world.caller("admin"), "body")] == [["Gamma"], ["Shared"], ["Beta"], ["Alpha"]]
    assert by_set[(world.caller("alice"), "body")] == [["Shared"], ["Alpha"]]
    monkeypatch.setattr(inbox_views, "SEARCH_SET_LIMIT", 1)  # every search now counts as common
    assert {(c, q): pages(c, q) for c in callers for q in queries} == by_set
