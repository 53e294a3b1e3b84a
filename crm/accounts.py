"""TRANSITIONAL (issue 7): the setup helpers that tests, the demo and the benchmarks called before
every service took a `Caller`. Each acts as the tenant's operator (`Caller.operator`) through the
real services in `crm.tenants` and `crm.mailboxes`, and returns their views. Delete this module
once those callers use the services directly (like the `crm.errors` shim).
"""

from __future__ import annotations

from pydantic import SecretStr
from sqlmodel import Session

from core.caller import Caller
from core.secrets import SecretBox
from crm import mailboxes, tenants
from crm.mailboxes import AccountInput

__all__ = ["AccountInput", "add_account", "create_tenant", "create_user"]


def create_tenant(
    *, session: Session, name: str, account_quota: int = 5, own_domains: list[str] | None = None
) -> tenants.TenantView:
    return tenants.create_tenant(
        session=session, name=name, account_quota=account_quota, own_domains=own_domains
    )


def create_user(
    *,
    session: Session,
    tenant_id: int,
    email: str,
    first_name: str = "",
    last_name: str = "",
    is_admin: bool = False,
) -> tenants.UserView:
    return tenants.create_user(
        session=session,
        caller=Caller.operator(tenant_id),
        email=email,
        first_name=first_name,
        last_name=last_name,
        is_admin=is_admin,
    )


def add_account(
    *, session: Session, tenant_id: int, data: AccountInput, password: SecretStr, box: SecretBox
) -> mailboxes.AccountView:
    """An account added without a connection check."""
    return mailboxes.add_account(
        session=session, caller=Caller.operator(tenant_id), data=data, password=password, box=box
    )
