"""Tenants, their account quota, and their users.

Keyword-only functions taking a session and a `Caller`; the caller owns the transaction. What
leaves is a view (`TenantView`, `UserView`), never a row.

Who may do what: creating a tenant and changing its quota are the deployment operator's
(`Caller.operator`, the command line): the quota is the tenant's plan, not something its own
admins raise. Users are created by an admin; every user of a tenant may see the team's names.
"""

from __future__ import annotations

from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email
from sqlalchemy import func
from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import Conflict, Forbidden, InvalidInput, NotFound, QuotaExceeded, not_found
from core.types import utcnow
from crm import access
from crm.models import MailAccount, Tenant, User


@dataclass(frozen=True, slots=True)
class TenantView:
    id: int
    name: str
    account_quota: int
    active_accounts: int
    inactive_accounts: int
    users: int


@dataclass(frozen=True, slots=True)
class UserView:
    id: int
    email: str
    first_name: str
    last_name: str
    job_title: str
    phone: str
    is_admin: bool
    default_account_id: int | None
    active: bool = True


def user_view(user: User) -> UserView:
    return UserView(
        id=user.id or 0,
        email=user.email,
        first_name=user.first_name,
        last_name=user.last_name,
        job_title=user.job_title,
        phone=user.phone,
        is_admin=user.is_admin,
        default_account_id=user.default_account_id,
        active=user.active,
    )


def normalize_email(value: str, *, field: str = "email") -> str:
    """An address checked by email-validator (syntax only: no DNS on a request path), lower-cased.
    Reserved test domains (`.test`) pass: demo and test tenants use them and they never route."""
    try:
        checked = validate_email(
            value.strip(), check_deliverability=False, globally_deliverable=False, test_environment=True
        )
    except EmailNotValidError as exc:
        raise InvalidInput(
            "invalid_email", f"{value!r} is not a valid e-mail address: {exc}", field=field, value=value
        ) from None
    return checked.normalized.lower()


def require_operator(caller: Caller, action: str) -> None:
    """The deployment's operator only (a tenant's own admins may not change its plan)."""
    access.require_admin(caller, action)
    if caller.user_id is not None:
        raise Forbidden(
            "operator_required", f"Only the operator of this deployment can {action}.", action=action
        )


# ---------------------------------------------------------------------------------------------
# Tenants


def create_tenant(
    *, session: Session, name: str, account_quota: int = 5, own_domains: list[str] | None = None
) -> TenantView:
    """A new tenant (operator only: no caller exists before its tenant does)."""
    if not name.strip():
        raise InvalidInput("tenant_name_required", "A tenant needs a name.", field="name")
    if account_quota < 0:
        raise InvalidInput(
            "invalid_quota", f"The quota must be 0 or more, not {account_quota}.", quota=account_quota
        )
    tenant = Tenant(
        name=name.strip(), account_quota=account_quota, own_domains=[d.lower() for d in own_domains or []]
    )
    session.add(tenant)
    session.flush()
    return _tenant_view(session, tenant)


def list_tenants(*, session: Session) -> list[TenantView]:
    """Every tenant, oldest first: the operator's view, used by the command line to pick one."""
    return [_tenant_view(session, t) for t in session.exec(select(Tenant).order_by(col(Tenant.id))).all()]


def count_active_accounts(*, session: Session, tenant_id: int) -> int:
    return session.exec(
        select(func.count(col(MailAccount.id))).where(MailAccount.tenant_id == tenant_id, MailAccount.active)
    ).one()


def _tenant_view(session: Session, tenant: Tenant) -> TenantView:
    tid = tenant.id or 0
    total = session.exec(select(func.count(col(MailAccount.id))).where(MailAccount.tenant_id == tid)).one()
    active = count_active_accounts(session=session, tenant_id=tid)
    users = session.exec(select(func.count(col(User.id))).where(User.tenant_id == tid)).one()
    return TenantView(
        id=tid,
        name=tenant.name,
        account_quota=tenant.account_quota,
        active_accounts=active,
        inactive_accounts=total - active,
        users=users,
    )


def _tenant(session: Session, caller: Caller) -> Tenant:
    tenant = session.get(Tenant, caller.tenant_id)
    if tenant is None:
        raise not_found("tenant", caller.tenant_id)
    return tenant


def lock_tenant_row(session: Session, tenant_id: int) -> Tenant:
    """The tenant row, locked to the end of the transaction (PostgreSQL; SQLite has one writer):
    account changes re-check the quota and duplicates under it."""
    # populate_existing: a row read earlier in this transaction is refreshed, not trusted.
    tenant = session.exec(
        select(Tenant)
        .where(Tenant.id == tenant_id)
        .with_for_update()
        .execution_options(populate_existing=True)
    ).first()
    if tenant is None:
        raise not_found("tenant", tenant_id)
    return tenant


def tenant_view(*, session: Session, caller: Caller) -> TenantView:
    """The caller's tenant: quota and usage."""
    return _tenant_view(session, _tenant(session, caller))


def set_quota(*, session: Session, caller: Caller, quota: int) -> TenantView:
    """Lowering the quota below the accounts in use is allowed (an operator's decision): those
    keep syncing, but none can be added or reactivated until the count is under it."""
    require_operator(caller, "change a tenant's account quota")
    if quota < 0:
        raise InvalidInput("invalid_quota", f"The quota must be 0 or more, not {quota}.", quota=quota)
    tenant = lock_tenant_row(session, caller.tenant_id)
    tenant.account_quota = quota
    session.add(tenant)
    session.flush()
    return _tenant_view(session, tenant)


def ensure_quota(*, session: Session, tenant: Tenant, adding: int = 1) -> None:
    """Refuse one more active account when the plan is used up."""
    used = count_active_accounts(session=session, tenant_id=tenant.id or 0)
    if used + adding > tenant.account_quota:
        raise QuotaExceeded(
            "quota_exceeded",
            f"The plan of {tenant.name} allows {tenant.account_quota} active mail account(s) and "
            f"{used} are in use. Deactivate an account or raise the quota.",
            quota=tenant.account_quota,
            used=used,
        )


# ---------------------------------------------------------------------------------------------
# Users


def create_user(
    *,
    session: Session,
    caller: Caller,
    email: str,
    first_name: str = "",
    last_name: str = "",
    job_title: str = "",
    phone: str = "",
    is_admin: bool = False,
) -> UserView:
    access.require_admin(caller, "add users")
    address = normalize_email(email)
    clash = session.exec(
        select(User).where(User.tenant_id == caller.tenant_id, User.email == address)
    ).first()
    if clash is not None:
        raise Conflict("user_exists", f"{address} is already a user (id {clash.id}).", email=address)
    user = User(
        tenant_id=caller.tenant_id,
        email=address,
        first_name=first_name,
        last_name=last_name,
        job_title=job_title,
        phone=phone,
        is_admin=is_admin,
    )
    session.add(user)
    session.flush()
    return user_view(user)


def get_user(*, session: Session, caller: Caller, user_id: int) -> UserView:
    return user_view(access.get_user(session, caller, user_id))


def find_user(*, session: Session, caller: Caller, ref: str) -> UserView:
    """A user of the caller's tenant by id or e-mail (the command line accepts either)."""
    if ref.strip().isdigit():
        return get_user(session=session, caller=caller, user_id=int(ref))
    found = session.exec(
        select(User).where(User.email == ref.strip().lower(), User.tenant_id == caller.tenant_id)
    ).first()
    if found is None:
        raise NotFound(
            "user_not_found", f"No user with e-mail {ref.strip()}.", what="user", email=ref.strip()
        )
    return user_view(found)


def target_user(session: Session, caller: Caller, user_id: int | None) -> User:
    """The user a per-user setting is about: the caller themself by default; another user only
    for an admin (a member changing a colleague's defaults is a role problem, not a lookup)."""
    if user_id is None:
        if caller.user_id is None:
            raise InvalidInput("user_required", "Say which user this is about.", field="user_id")
        user_id = caller.user_id
    user = access.get_user(session, caller, user_id)  # first: a user of another tenant is not found
    if user_id != caller.user_id:
        access.require_admin(caller, "change another user's settings")
    return user


def list_users(*, session: Session, caller: Caller) -> list[UserView]:
    """The tenant's users (admins; members see the team through `crm.directory`)."""
    access.require_admin(caller, "list users")
    rows = session.exec(select(User).where(User.tenant_id == caller.tenant_id).order_by(User.email)).all()
    return [user_view(u) for u in rows]


def set_user_active(*, session: Session, caller: Caller, user_id: int, active: bool) -> UserView:
    """Deactivate (or reactivate) a user: their history stays, their sessions and API tokens stop
    working at the next request, and assignment rules skip them."""
    user = access.get_user(session, caller, user_id)
    access.require_admin(caller, "deactivate users" if not active else "reactivate users")
    if not active and user.id == caller.user_id:
        raise Conflict("cannot_deactivate_self", "You cannot deactivate yourself.", user_id=user_id)
    if not active and user.is_admin and user.active:
        admins = session.exec(
            select(User).where(User.tenant_id == caller.tenant_id, User.is_admin, col(User.active).is_(True))
        ).all()
        if len(admins) <= 1:
            raise Conflict("last_admin", "The last active admin cannot be deactivated.", user_id=user_id)
    user.active = active
    user.deactivated_at = None if active else utcnow()
    session.add(user)
    session.flush()
    return user_view(user)
