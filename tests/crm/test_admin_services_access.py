"""Who may see and change what through the tenant, mailbox, grant and signature services, and
that everything they return serializes to JSON without a secret or a lease field.

The visibility table of issue 7: a member with access to account A, a member with access to B
only, an admin of the tenant, and an admin of another tenant ask for the same ids; only the right
ones answer, the others get the not-found code (the same as for a missing id). Admin-only
operations refuse a member by role (`admin_required`) only once the record is visible to them:
what they cannot see is not found, so the answer never tells that an id exists.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pytest
from pydantic import SecretStr
from pydantic_core import to_jsonable_python
from sqlalchemy import Engine
from sqlmodel import Session

from core.caller import Caller
from core.connection import CheckOutcome, ConnectionSettings
from core.db import session_scope
from core.errors import DomainError
from core.secrets import SecretBox
from core.types import Security
from crm import grants, mailboxes, signature_service, tenants
from crm.models import MailAccount, SkippedMessage
from crm.models.mail import SkipReason
from crm.outbound.smtp_setup import SmtpTestOutcome
from tests.factories import add_offline, caller_of, grant, make_tenant, make_user, stub_check

PASSWORD = "Very-Secret-Password-42"
ROLES = ("member_a", "member_b", "admin", "other_admin")
FORBIDDEN_KEYS = {"secret_encrypted", "smtp_secret_encrypted", "lease_owner", "lease_expires_at"}
# Only the settings read for a connection test carry passwords, as SecretStr: masked when dumped.
MASKED_KEYS = {"password", "smtp_password"}


@dataclass
class World:
    tenant_id: int
    account_a: int
    account_b: int
    signature_a: int
    callers: dict[str, Caller]


@pytest.fixture
def world(db: Engine) -> World:
    tenant_id = make_tenant(db, name="Acme")
    op = Caller.operator(tenant_id)
    box = SecretBox.from_settings()
    ids = {}
    with session_scope(db) as s:
        for name in ("a", "b"):
            ids[name] = mailboxes.add_account(
                session=s,
                caller=op,
                data=mailboxes.AccountInput(
                    email=f"{name}@acme.test",
                    imap_host="imap.acme.test",
                    imap_port=993,
                    imap_security=Security.TLS,
                    username=name,
                ),
                password=SecretStr(PASSWORD),
                box=box,
            ).id
        signature_a = signature_service.add_signature(
            session=s, caller=op, account_id=ids["a"], name="Short", html="<p>{{ sender.first_name }}</p>"
        ).signature.id
        s.add(
            SkippedMessage(
                tenant_id=tenant_id,
                account_id=ids["a"],
                message_id="<mass@globex.test>",
                subject="Mass",
                recipient_count=101,
                reason=SkipReason.TOO_MANY_RECIPIENTS,
            )
        )
        # Lease fields set, as while a worker syncs: they must never show.
        row = s.get_one(MailAccount, ids["a"])
        row.lease_owner = "worker-secret-lease"
    member_a = make_user(db, tenant_id, "ann@acme.test", first_name="Ann")
    member_b = make_user(db, tenant_id, "bob@acme.test", first_name="Bob")
    admin = make_user(db, tenant_id, "boss@acme.test", is_admin=True, first_name="Boss")
    grant(db, tenant_id, ids["a"], member_a)
    grant(db, tenant_id, ids["b"], member_b)
    other_tenant = make_tenant(db, name="Globex")
    add_offline(db, other_tenant, "x@globex.test")
    other_admin = make_user(db, other_tenant, "root@globex.test", is_admin=True)
    return World(
        tenant_id=tenant_id,
        account_a=ids["a"],
        account_b=ids["b"],
        signature_a=signature_a,
        callers={
            "member_a": caller_of(db, tenant_id, member_a),
            "member_b": caller_of(db, tenant_id, member_b),
            "admin": caller_of(db, tenant_id, admin),
            "other_admin": caller_of(db, other_tenant, other_admin),
        },
    )


def outcome(db: Engine, call: Callable[[Session], object]) -> str:
    """'ok' or the error code; every call is rolled back so the cases do not affect each other."""
    with Session(db) as session:
        try:
            call(session)
        except DomainError as exc:
            return exc.code
        finally:
            session.rollback()
    return "ok"


NF_ACCOUNT = "account_not_found"
NF_SIGNATURE = "signature_not_found"
ADMIN = "admin_required"

# name -> (call(session, caller, world), expected outcome per role in ROLES order)
CASES: dict[str, tuple[Callable[[Session, Caller, World], object], tuple[str, str, str, str]]] = {
    "get_account": (
        lambda s, c, w: mailboxes.get_account(session=s, caller=c, account_id=w.account_a),
        ("ok", NF_ACCOUNT, "ok", NF_ACCOUNT),
    ),
    "list_skipped": (
        lambda s, c, w: mailboxes.list_skipped(session=s, caller=c, account_id=w.account_a),
        ("ok", NF_ACCOUNT, "ok", NF_ACCOUNT),
    ),
    "list_signatures": (
        lambda s, c, w: signature_service.list_signatures(session=s, caller=c, account_id=w.account_a),
        ("ok", NF_ACCOUNT, "ok", NF_ACCOUNT),
    ),
    "render_signature": (
        lambda s, c, w: signature_service.render_signature(session=s, caller=c, signature_id=w.signature_a),
        ("ok", NF_SIGNATURE, "ok", NF_SIGNATURE),
    ),
    "merge_context": (
        lambda s, c, w: signature_service.merge_context(session=s, caller=c, account_id=w.account_a),
        ("ok", NF_ACCOUNT, "ok", NF_ACCOUNT),
    ),
    # The tenant's admin sees A but, not granted it, may not send from it.
    "compose_defaults": (
        lambda s, c, w: signature_service.compose_defaults(session=s, caller=c, account_id=w.account_a),
        ("ok", NF_ACCOUNT, "no_account_access", NF_ACCOUNT),
    ),
    "set_default_account": (
        lambda s, c, w: grants.set_default_account(session=s, caller=c, account_id=w.account_a),
        ("ok", NF_ACCOUNT, "no_account_access", NF_ACCOUNT),
    ),
    "set_default_signature": (
        lambda s, c, w: grants.set_default_signature(
            session=s, caller=c, account_id=w.account_a, signature_id=w.signature_a
        ),
        ("ok", NF_ACCOUNT, "no_account_access", NF_ACCOUNT),
    ),
    # Admin-only: members are refused by role, another tenant's admin does not find the id.
    "deactivate_account": (
        lambda s, c, w: mailboxes.deactivate_account(session=s, caller=c, account_id=w.account_a),
        (ADMIN, NF_ACCOUNT, "ok", NF_ACCOUNT),
    ),
    "reactivate_account": (
        lambda s, c, w: mailboxes.reactivate_account(session=s, caller=c, account_id=w.account_a),
        (ADMIN, NF_ACCOUNT, "ok", NF_ACCOUNT),
    ),
    "delete_account": (
        lambda s, c, w: mailboxes.delete_account(session=s, caller=c, account_id=w.account_a),
        (ADMIN, NF_ACCOUNT, "account_in_use", NF_ACCOUNT),
    ),
    "set_password": (
        lambda s, c, w: mailboxes.set_password(
            session=s,
            caller=c,
            account_id=w.account_a,
            password=SecretStr("x"),
            box=SecretBox.from_settings(),
        ),
        (ADMIN, NF_ACCOUNT, "ok", NF_ACCOUNT),
    ),
    "connection_settings_of": (
        lambda s, c, w: mailboxes.connection_settings_of(
            session=s, caller=c, account_id=w.account_a, box=SecretBox.from_settings()
        ),
        (ADMIN, NF_ACCOUNT, "ok", NF_ACCOUNT),
    ),
    "list_grants": (
        lambda s, c, w: grants.list_grants(session=s, caller=c, account_id=w.account_a),
        (ADMIN, NF_ACCOUNT, "ok", NF_ACCOUNT),
    ),
    "add_signature": (
        lambda s, c, w: signature_service.add_signature(
            session=s, caller=c, account_id=w.account_a, name="New", html="<p>n</p>"
        ),
        (ADMIN, NF_ACCOUNT, "ok", NF_ACCOUNT),
    ),
    "update_signature": (
        lambda s, c, w: signature_service.update_signature(
            session=s, caller=c, signature_id=w.signature_a, name="R"
        ),
        (ADMIN, NF_SIGNATURE, "ok", NF_SIGNATURE),
    ),
    "delete_signature": (
        lambda s, c, w: signature_service.delete_signature(session=s, caller=c, signature_id=w.signature_a),
        (ADMIN, NF_SIGNATURE, "ok", NF_SIGNATURE),
    ),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_visibility_table(db: Engine, world: World, name: str) -> None:
    call, expected = CASES[name]
    got = {role: outcome(db, partial(_as, call, world.callers[role], world)) for role in ROLES}
    assert got == dict(zip(ROLES, expected, strict=True))


def _as(call: Callable[[Session, Caller, World], object], caller: Caller, world: World, s: Session) -> object:
    return call(s, caller, world)


def test_missing_ids_answer_like_invisible_ones(db: Engine, world: World) -> None:
    admin = world.callers["admin"]
    assert outcome(db, lambda s: mailboxes.get_account(session=s, caller=admin, account_id=999)) == NF_ACCOUNT
    assert (
        outcome(db, lambda s: signature_service.render_signature(session=s, caller=admin, signature_id=999))
        == NF_SIGNATURE
    )


def test_lists_show_only_what_the_caller_sees(db: Engine, world: World) -> None:
    with session_scope(db) as s:
        seen = {
            role: [a.email for a in mailboxes.list_accounts(session=s, caller=caller)]
            for role, caller in world.callers.items()
        }
        skipped = {
            role: len(mailboxes.list_skipped(session=s, caller=caller))
            for role, caller in world.callers.items()
        }
    assert seen == {
        "member_a": ["a@acme.test"],
        "member_b": ["b@acme.test"],
        "admin": ["a@acme.test", "b@acme.test"],
        "other_admin": ["x@globex.test"],
    }
    assert skipped == {"member_a": 1, "member_b": 0, "admin": 1, "other_admin": 0}


def _assert_clean(value: Any, path: str = "$") -> None:
    if isinstance(value, dict):
        for key, inner in value.items():
            assert key not in FORBIDDEN_KEYS, f"{path}.{key}"
            if key in MASKED_KEYS:
                assert inner in (None, "**********"), f"{path}.{key}"
            _assert_clean(inner, f"{path}.{key}")
    elif isinstance(value, list):
        for i, inner in enumerate(value):
            _assert_clean(inner, f"{path}[{i}]")
    elif isinstance(value, str):
        assert PASSWORD not in value and "worker-secret-lease" not in value and "gAAAA" not in value, path


def test_every_public_result_serializes_without_secrets(db: Engine, world: World) -> None:
    op = Caller.operator(world.tenant_id)
    ann = world.callers["member_a"]
    box = SecretBox.from_settings()
    results: dict[str, object] = {}

    def failing(_settings: ConnectionSettings) -> CheckOutcome:
        return stub_check(False, "Authentication failed.", problem="authentication")

    results["connect_account"] = mailboxes.connect_account(
        sessions=lambda: session_scope(db),
        caller=op,
        data=mailboxes.AccountInput(
            email="c@acme.test",
            imap_host="imap.acme.test",
            imap_port=993,
            imap_security=Security.TLS,
            username="c",
        ),
        password=SecretStr(PASSWORD),
        box=box,
        smtp=mailboxes.SmtpInput(
            host="smtp.acme.test", password=SecretStr(PASSWORD), test_to="check@globex.test"
        ),
        verify=failing,
        force=True,
        # No network in this test: a server that accepts (the real one is in tests/crm/test_mailboxes.py).
        send_test=lambda _test: SmtpTestOutcome(ok=True, message="accepted", code=250),
    )
    results["edit_account"] = mailboxes.edit_account(
        sessions=lambda: session_scope(db),
        caller=op,
        account_id=world.account_a,
        changes=mailboxes.AccountChanges(password=SecretStr(PASSWORD), display_name="A"),
        box=box,
        verify=failing,
        force=True,
    )
    try:
        mailboxes.connect_account(
            sessions=lambda: session_scope(db),
            caller=op,
            data=mailboxes.AccountInput(
                email="d@acme.test",
                imap_host="imap.acme.test",
                imap_port=993,
                imap_security=Security.TLS,
                username="d",
            ),
            password=SecretStr(PASSWORD),
            box=box,
            verify=failing,
        )
    except mailboxes.ConnectionCheckFailed as exc:
        results["connection_check_failed"] = exc.to_dict()
    with session_scope(db) as s:
        results["tenant_view"] = tenants.tenant_view(session=s, caller=op)
        results["list_tenants"] = tenants.list_tenants(session=s)
        results["find_user"] = tenants.find_user(session=s, caller=op, ref="ann@acme.test")
        results["list_accounts"] = mailboxes.list_accounts(session=s, caller=op)
        results["get_account"] = mailboxes.get_account(session=s, caller=ann, account_id=world.account_a)
        results["list_skipped"] = mailboxes.list_skipped(session=s, caller=op)
        results["deactivate_account"] = mailboxes.deactivate_account(
            session=s, caller=op, account_id=world.account_b
        )
        results["reactivate_account"] = mailboxes.reactivate_account(
            session=s, caller=op, account_id=world.account_b
        )
        results["set_password"] = mailboxes.set_password(
            session=s, caller=op, account_id=world.account_b, password=SecretStr(PASSWORD), box=box
        )
        results["connection_settings_of"] = mailboxes.connection_settings_of(
            session=s, caller=op, account_id=world.account_a, box=box
        )
        results["list_grants"] = grants.list_grants(session=s, caller=op, account_id=world.account_a)
        results["granted_accounts"] = grants.granted_accounts(session=s, caller=ann)
        results["set_default_account"] = grants.set_default_account(
            session=s, caller=ann, account_id=world.account_a
        )
        results["default_account"] = grants.default_account(session=s, caller=ann)
        results["set_default_signature"] = grants.set_default_signature(
            session=s, caller=ann, account_id=world.account_a, signature_id=world.signature_a
        )
        results["add_signature"] = signature_service.add_signature(
            session=s,
            caller=op,
            account_id=world.account_a,
            name="Logo",
            html='<img src="https://a.test/l.svg">',
        )
        results["update_signature"] = signature_service.update_signature(
            session=s, caller=op, signature_id=world.signature_a, name="Brief"
        )
        results["list_signatures"] = signature_service.list_signatures(
            session=s, caller=ann, account_id=world.account_a
        )
        results["render_signature"] = signature_service.render_signature(
            session=s, caller=ann, signature_id=world.signature_a
        )
        results["merge_context"] = signature_service.merge_context(
            session=s, caller=ann, account_id=world.account_a
        )
        results["compose_defaults"] = signature_service.compose_defaults(
            session=s, caller=ann, account_id=world.account_a
        )
    for name, result in results.items():
        plain = to_jsonable_python(result)
        json.dumps(plain)
        _assert_clean(plain, name)
    forced = to_jsonable_python(results["connect_account"])
    assert forced["account"]["last_error_code"] == "connection_check_failed"
    assert forced["account"]["last_error"] == "Authentication failed."
    assert forced["check"] == {
        "ok": False,
        "message": "Authentication failed.",
        "problem": "authentication",
        "service": None,
    }
    assert to_jsonable_python(results["connection_check_failed"])["code"] == "connection_check_failed"
