"""Small builders shared by tests: tenants, users, grants and accounts (one pointing at a
Dovecot user, or one never contacted), made through the services acting as the operator."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import SecretStr
from sqlalchemy import Engine

from core.caller import Caller
from core.connection import CheckOutcome
from core.db import session_scope
from core.secrets import SecretBox
from core.types import Security
from crm import access, grants, mailboxes, tenants
from crm.models import User
from tests.dovecot_fixtures import Mailbox


@dataclass(frozen=True)
class StubCheck:
    """A connection check's outcome for `verify=` without a server (`sync.check.CheckResult`'s
    shape: what `crm.mailboxes` reads of it, typed as `core.connection.CheckOutcome`)."""

    ok: bool
    message: str
    problem: str | None = None
    code: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)


def stub_check(ok: bool, message: str, *, problem: str | None = None) -> CheckOutcome:
    return StubCheck(ok=ok, message=message, problem=problem)


def make_tenant(
    db: Engine, *, name: str = "Acme", quota: int = 10, own_domains: tuple[str, ...] = ("acme.test",)
) -> int:
    with session_scope(db) as session:
        tenant = tenants.create_tenant(
            session=session, name=name, account_quota=quota, own_domains=list(own_domains)
        )
        return tenant.id


def make_user(db: Engine, tenant_id: int, email: str, *, is_admin: bool = False, **fields: str) -> int:
    """A user of the tenant; `fields` sets profile columns (first_name, job_title, ...)."""
    with session_scope(db) as session:
        user = tenants.create_user(
            session=session, caller=Caller.operator(tenant_id), email=email, is_admin=is_admin
        )
        row = session.get_one(User, user.id)
        for name, value in fields.items():
            setattr(row, name, value)
        session.add(row)
        return user.id


def grant(db: Engine, tenant_id: int, account_id: int, user_id: int) -> None:
    with session_scope(db) as session:
        grants.grant_access(
            session=session, caller=Caller.operator(tenant_id), account_id=account_id, user_id=user_id
        )


def caller_of(db: Engine, tenant_id: int, user_id: int) -> Caller:
    """The Caller of an existing user (admin or member, from the user's row)."""
    with session_scope(db) as session:
        return access.caller_for_user(session=session, tenant_id=tenant_id, user_id=user_id)


def make_account(
    db: Engine,
    tenant_id: int,
    mailbox: Mailbox,
    *,
    email: str | None = None,
    security: Security = Security.TLS,
    password: str | None = None,
    trust_ca: bool = True,
    port: int | None = None,
    host: str = "127.0.0.1",
    **extra: Any,
) -> int:
    server = mailbox.server
    if port is None:
        port = server.ssl_port if security is Security.TLS else server.port
        assert port is not None, "the session's server serves TLS"
    with session_scope(db) as session:
        account = mailboxes.add_account(
            session=session,
            caller=Caller.operator(tenant_id),
            data=mailboxes.AccountInput(
                email=email or f"{mailbox.name}@acme.test",
                imap_host=host,
                imap_port=port,
                imap_security=security,
                username=mailbox.name,
                ca_file=str(server.ca_file) if trust_ca else None,
                **extra,
            ),
            password=SecretStr(password if password is not None else mailbox.password),
            box=SecretBox.from_settings(),
        )
        return account.id


def make_offline_account(db: Engine, tenant_id: int, *, email: str = "s@acme.test") -> int:
    """An account whose server is never contacted (scripted-session and store tests)."""
    with session_scope(db) as session:
        account = mailboxes.add_account(
            session=session,
            caller=Caller.operator(tenant_id),
            data=mailboxes.AccountInput(
                email=email,
                imap_host="imap.acme.test",
                imap_port=993,
                imap_security=Security.TLS,
                username=email.split("@")[0],
            ),
            password=SecretStr("not-used"),
            box=SecretBox.from_settings(),
        )
        return account.id


def offline_input(email: str) -> mailboxes.AccountInput:
    """Settings of an account added without a check (nothing connects to it in these tests)."""
    return mailboxes.AccountInput(
        email=email, imap_host="imap.acme.test", imap_port=993, imap_security=Security.TLS, username=email
    )


def add_offline(db: Engine, tenant_id: int, email: str) -> int:
    """An account connected through the full add path (validate, check, save) with no check asked."""
    saved = mailboxes.connect_account(
        sessions=lambda: session_scope(db),
        caller=Caller.operator(tenant_id),
        data=offline_input(email),
        password=SecretStr("pw"),
        box=SecretBox.from_settings(),
    )
    assert not saved.checked
    return saved.account.id
