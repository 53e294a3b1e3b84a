"""Tenants, quota and users (`crm.tenants`) on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from pydantic import SecretStr
from sqlalchemy import Engine

from core.caller import Caller
from core.connection import CheckOutcome, ConnectionSettings
from core.db import session_scope
from core.errors import ErrorKind, Forbidden, InvalidInput, NotFound, QuotaExceeded
from core.secrets import SecretBox
from crm import mailboxes, tenants
from crm.models import MailAccount
from tests.factories import add_offline, caller_of, make_tenant, make_user, offline_input, stub_check


def test_quota_counts_active_accounts_only(db: Engine) -> None:
    tenant_id = make_tenant(db, name="Acme", quota=2)
    op = Caller.operator(tenant_id)
    first = add_offline(db, tenant_id, "a@acme.test")
    add_offline(db, tenant_id, "b@acme.test")
    with pytest.raises(QuotaExceeded) as refused:
        add_offline(db, tenant_id, "c@acme.test")
    assert refused.value.code == "quota_exceeded" and refused.value.kind is ErrorKind.CONFLICT
    assert refused.value.fields == {"quota": 2, "used": 2}
    assert "The plan of Acme allows 2 active mail account(s) and 2 are in use" in refused.value.message
    assert "crm-inbox" not in refused.value.message  # no command in a product message

    with session_scope(db) as s:
        mailboxes.deactivate_account(session=s, caller=op, account_id=first)
    assert add_offline(db, tenant_id, "c@acme.test")  # the deactivated one does not count

    with session_scope(db) as s, pytest.raises(QuotaExceeded) as again:
        mailboxes.reactivate_account(session=s, caller=op, account_id=first)
    assert again.value.code == "quota_exceeded"
    with session_scope(db) as session:
        assert session.get_one(MailAccount, first).active is False

    with session_scope(db) as s:
        view = tenants.set_quota(session=s, caller=op, quota=3)
    assert isinstance(view, tenants.TenantView)
    assert (view.account_quota, view.active_accounts, view.inactive_accounts) == (3, 2, 1)
    with session_scope(db) as s:
        mailboxes.reactivate_account(session=s, caller=op, account_id=first)
    with session_scope(db) as session:
        assert tenants.tenant_view(session=session, caller=op).active_accounts == 3
        with pytest.raises(InvalidInput) as negative:
            tenants.set_quota(session=session, caller=op, quota=-1)
        assert (negative.value.code, negative.value.fields) == ("invalid_quota", {"quota": -1})


def test_quota_refusal_comes_before_the_connection_check(db: Engine) -> None:
    tenant_id = make_tenant(db, quota=0)
    calls: list[ConnectionSettings] = []

    def verify(settings: ConnectionSettings) -> CheckOutcome:
        calls.append(settings)
        return stub_check(True, "Logged in.")

    with pytest.raises(QuotaExceeded):
        mailboxes.connect_account(
            sessions=lambda: session_scope(db),
            caller=Caller.operator(tenant_id),
            data=offline_input("a@acme.test"),
            password=SecretStr("pw"),
            box=SecretBox.from_settings(),
            verify=verify,
        )
    assert calls == []


def test_only_the_operator_changes_the_quota(db: Engine) -> None:
    tenant_id = make_tenant(db, quota=2)
    admin = caller_of(db, tenant_id, make_user(db, tenant_id, "boss@acme.test", is_admin=True))
    member = caller_of(db, tenant_id, make_user(db, tenant_id, "ann@acme.test"))
    with session_scope(db) as s:
        for caller, code in ((admin, "operator_required"), (member, "admin_required")):
            with pytest.raises(Forbidden) as refused:
                tenants.set_quota(session=s, caller=caller, quota=9)
            assert refused.value.code == code
        # Everybody of the tenant may read its usage.
        assert tenants.tenant_view(session=s, caller=member).account_quota == 2


def test_users_are_validated_and_found_by_id_or_email(db: Engine) -> None:
    tenant_id = make_tenant(db)
    op = Caller.operator(tenant_id)
    with session_scope(db) as s:
        bob = tenants.create_user(session=s, caller=op, email=" Bob@ACME.test ", first_name="Bob")
        assert (bob.email, bob.is_admin) == ("bob@acme.test", False)
        with pytest.raises(InvalidInput) as bad:
            tenants.create_user(session=s, caller=op, email="not an address")
        assert bad.value.code == "invalid_email" and bad.value.fields["field"] == "email"
        with pytest.raises(Exception) as twice:
            tenants.create_user(session=s, caller=op, email="bob@acme.test")
        assert getattr(twice.value, "code", None) == "user_exists"
        assert tenants.find_user(session=s, caller=op, ref="BOB@acme.test").id == bob.id
        assert tenants.find_user(session=s, caller=op, ref=str(bob.id)).id == bob.id
        with pytest.raises(NotFound) as missing:
            tenants.find_user(session=s, caller=op, ref="nobody@acme.test")
        assert missing.value.code == "user_not_found"
    member = caller_of(db, tenant_id, bob.id)
    with session_scope(db) as s, pytest.raises(Forbidden) as refused:
        tenants.create_user(session=s, caller=member, email="eve@acme.test")
    assert refused.value.code == "admin_required"


def test_tenants_are_listed_for_the_operator(db: Engine) -> None:
    first = make_tenant(db, name="Acme")
    second = make_tenant(db, name="Globex")
    with session_scope(db) as s:
        assert [(t.id, t.name) for t in tenants.list_tenants(session=s)] == [
            (first, "Acme"),
            (second, "Globex"),
        ]
        with pytest.raises(NotFound) as missing:
            tenants.tenant_view(session=s, caller=Caller.operator(999))
        assert missing.value.code == "tenant_not_found"
