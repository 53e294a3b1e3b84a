"""Small builders shared by tests: a tenant with an account pointing at a Dovecot user."""

from __future__ import annotations

from typing import Any

from pydantic import SecretStr
from sqlalchemy import Engine

from core.db import session_scope
from core.secrets import SecretBox
from core.types import Security
from crm import accounts


def make_tenant(
    db: Engine, *, name: str = "Acme", quota: int = 10, own_domains: tuple[str, ...] = ("acme.test",)
) -> int:
    with session_scope(db) as session:
        tenant = accounts.create_tenant(
            session=session, name=name, account_quota=quota, own_domains=list(own_domains)
        )
        return tenant.id or 0


def make_account(
    db: Engine,
    tenant_id: int,
    mailbox: Any,
    *,
    email: str | None = None,
    security: Security = Security.TLS,
    password: str | None = None,
    trust_ca: bool = True,
    port: int | None = None,
    host: str = "127.0.0.1",
    **extra: Any,
) -> int:
    dovecot = mailbox.dovecot
    if port is None:
        port = dovecot.ssl_port if security is Security.TLS else dovecot.port
    with session_scope(db) as session:
        account = accounts.add_account(
            session=session,
            tenant_id=tenant_id,
            data=accounts.AccountInput(
                email=email or f"{mailbox.name}@acme.test",
                imap_host=host,
                imap_port=port,
                imap_security=security,
                username=mailbox.name,
                ca_file=str(dovecot.ca_file) if trust_ca else None,
                **extra,
            ),
            password=SecretStr(password if password is not None else mailbox.password),
            box=SecretBox.from_settings(),
        )
        return account.id or 0


def make_offline_account(db: Engine, tenant_id: int, *, email: str = "s@acme.test") -> int:
    """An account whose server is never contacted (scripted-session and store tests)."""
    with session_scope(db) as session:
        account = accounts.add_account(
            session=session,
            tenant_id=tenant_id,
            data=accounts.AccountInput(
                email=email,
                imap_host="imap.acme.test",
                imap_port=993,
                imap_security=Security.TLS,
                username="s",
            ),
            password=SecretStr("not-used"),
            box=SecretBox.from_settings(),
        )
        return account.id or 0
