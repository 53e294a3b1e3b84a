"""Access grants and each user's defaults (`crm.grants`) on SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine

from core.caller import Caller
from core.db import session_scope
from core.errors import Conflict, Forbidden, NotFound
from crm import grants, mailboxes
from crm.models import User
from tests.factories import add_offline, caller_of, make_tenant, make_user


def test_access_grant_revoke_and_default_account(db: Engine) -> None:
    tenant_id = make_tenant(db)
    op = Caller.operator(tenant_id)
    shared = add_offline(db, tenant_id, "sales@acme.test")
    personal = add_offline(db, tenant_id, "ann@acme.test")
    ann = make_user(db, tenant_id, "ann@acme.test")
    bob = make_user(db, tenant_id, "bob@acme.test")
    other_tenant = make_tenant(db, name="Other")
    stranger = make_user(db, other_tenant, "zed@other.test")

    with session_scope(db) as session:
        first = grants.grant_access(session=session, caller=op, account_id=shared, user_id=ann)
        assert first == grants.GrantView(
            account_id=shared, user_id=ann, user_email="ann@acme.test", default_signature_id=None
        )
        assert grants.grant_access(session=session, caller=op, account_id=shared, user_id=ann) == first
        grants.grant_access(session=session, caller=op, account_id=shared, user_id=bob)
        grants.grant_access(session=session, caller=op, account_id=personal, user_id=ann)
        assert [g.user_email for g in grants.list_grants(session=session, caller=op, account_id=shared)] == [
            "ann@acme.test",
            "bob@acme.test",
        ]
        # A user of another tenant is not found in this one; nor is our account from there.
        with pytest.raises(NotFound) as user_elsewhere:
            grants.grant_access(session=session, caller=op, account_id=shared, user_id=stranger)
        assert (user_elsewhere.value.code, user_elsewhere.value.fields["id"]) == ("user_not_found", stranger)
        with pytest.raises(NotFound) as account_elsewhere:
            grants.grant_access(
                session=session, caller=Caller.operator(other_tenant), account_id=shared, user_id=stranger
            )
        assert account_elsewhere.value.code == "account_not_found"
        assert [a.email for a in grants.granted_accounts(session=session, caller=op, user_id=ann)] == [
            "ann@acme.test",
            "sales@acme.test",
        ]
        with pytest.raises(Conflict) as no_access:
            grants.set_default_account(session=session, caller=op, user_id=bob, account_id=personal)
        assert no_access.value.code == "no_account_access"
        assert no_access.value.fields == {"user_id": bob, "account_id": personal}
        assert "crm-inbox" not in no_access.value.message
        grants.set_default_account(session=session, caller=op, user_id=ann, account_id=shared)
        default = grants.default_account(session=session, caller=op, user_id=ann)
        assert default is not None and default.id == shared

    with session_scope(db) as s:
        mailboxes.deactivate_account(session=s, caller=op, account_id=personal)
    with session_scope(db) as session:
        with pytest.raises(Conflict) as inactive:
            grants.set_default_account(session=session, caller=op, user_id=ann, account_id=personal)
        assert inactive.value.code == "account_inactive"
        assert [a.id for a in grants.granted_accounts(session=session, caller=op, user_id=ann)] == [shared]

    # A default kept through a deactivation is unusable meanwhile and comes back with the account.
    with session_scope(db) as s:
        mailboxes.deactivate_account(session=s, caller=op, account_id=shared)
    with session_scope(db) as session:
        assert grants.default_account(session=session, caller=op, user_id=ann) is None
    with session_scope(db) as s:
        mailboxes.reactivate_account(session=s, caller=op, account_id=shared)
    with session_scope(db) as session:
        default = grants.default_account(session=session, caller=op, user_id=ann)
        assert default is not None and default.id == shared

        grants.revoke_access(session=session, caller=op, account_id=shared, user_id=ann)
        assert session.get_one(User, ann).default_account_id is None
        assert grants.default_account(session=session, caller=op, user_id=ann) is None
        with pytest.raises(NotFound) as revoked:
            grants.revoke_access(session=session, caller=op, account_id=shared, user_id=ann)
        assert revoked.value.code == "grant_not_found"
        assert revoked.value.fields == {"what": "grant", "user_id": ann, "account_id": shared}


def test_members_set_their_own_defaults_only(db: Engine) -> None:
    tenant_id = make_tenant(db)
    op = Caller.operator(tenant_id)
    shared = add_offline(db, tenant_id, "sales@acme.test")
    hidden = add_offline(db, tenant_id, "board@acme.test")
    ann_id = make_user(db, tenant_id, "ann@acme.test")
    bob_id = make_user(db, tenant_id, "bob@acme.test")
    with session_scope(db) as s:
        grants.grant_access(session=s, caller=op, account_id=shared, user_id=ann_id)
    ann = caller_of(db, tenant_id, ann_id)
    with session_scope(db) as s:
        # Their own default: by default the caller, on an account they see.
        assert (
            grants.set_default_account(session=s, caller=ann, account_id=shared).default_account_id == shared
        )
        default = grants.default_account(session=s, caller=ann)
        assert default is not None and default.id == shared
        assert [a.id for a in grants.granted_accounts(session=s, caller=ann)] == [shared]
        # An account they cannot see is not found, like a missing one.
        with pytest.raises(NotFound) as hidden_account:
            grants.set_default_account(session=s, caller=ann, account_id=hidden)
        assert hidden_account.value.code == "account_not_found"
        # A colleague's settings, and granting, are an admin's.
        for call in (
            lambda: grants.set_default_account(session=s, caller=ann, account_id=shared, user_id=bob_id),
            lambda: grants.granted_accounts(session=s, caller=ann, user_id=bob_id),
            lambda: grants.grant_access(session=s, caller=ann, account_id=shared, user_id=bob_id),
            lambda: grants.revoke_access(session=s, caller=ann, account_id=shared, user_id=ann_id),
        ):
            with pytest.raises(Forbidden) as refused:
                call()
            assert refused.value.code == "admin_required"
