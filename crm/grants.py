"""Access grants (which users see which mail accounts) and each user's defaults: the account
they compose from and, per account, their signature.

Granting and revoking are an admin's. A member may read and set their own defaults, on accounts
they can see; an admin may do so for any user of the tenant. An account the caller cannot see
is `account_not_found`, whatever the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import Conflict, InvalidInput, NotFound
from crm import access, mailboxes, tenants
from crm.models import AccountAccess, MailAccount, Signature, User


@dataclass(frozen=True, slots=True)
class GrantView:
    account_id: int
    user_id: int
    user_email: str
    default_signature_id: int | None


def grant_of(session: Session, user_id: int, account_id: int, tenant_id: int) -> AccountAccess | None:
    """The grant of one user on one account, only when the account is in the tenant."""
    return session.exec(
        select(AccountAccess)
        .join(MailAccount, col(MailAccount.id) == col(AccountAccess.account_id))
        .where(
            AccountAccess.user_id == user_id,
            AccountAccess.account_id == account_id,
            MailAccount.tenant_id == tenant_id,
        )
    ).first()


def _view(grant: AccountAccess, email: str) -> GrantView:
    return GrantView(
        account_id=grant.account_id,
        user_id=grant.user_id,
        user_email=email,
        default_signature_id=grant.default_signature_id,
    )


def grant_access(*, session: Session, caller: Caller, account_id: int, user_id: int) -> GrantView:
    """Give a user an account's mail (a shared mailbox has many users, a personal one one).
    Idempotent: granting twice returns the existing grant."""
    access.get_account(session, caller, account_id)
    access.require_admin(caller, "grant access to mail accounts")
    user = access.get_user(session, caller, user_id)
    grant = grant_of(session, user_id, account_id, caller.tenant_id)
    if grant is None:
        grant = AccountAccess(user_id=user_id, account_id=account_id)
        session.add(grant)
        session.flush()
    return _view(grant, user.email)


def revoke_access(*, session: Session, caller: Caller, account_id: int, user_id: int) -> None:
    """Take the account away from a user; its mail stays where it is (it belongs to the tenant).
    The user's default account is cleared if it was this one."""
    access.get_account(session, caller, account_id)
    user = access.get_user(session, caller, user_id)
    access.require_admin(caller, "revoke access to mail accounts")
    grant = grant_of(session, user_id, account_id, caller.tenant_id)
    if grant is None:
        raise NotFound(
            "grant_not_found",
            f"User {user.email} has no access to account {account_id}.",
            what="grant",
            user_id=user_id,
            account_id=account_id,
        )
    session.delete(grant)
    if user.default_account_id == account_id:
        user.default_account_id = None
        session.add(user)
    session.flush()


def list_grants(*, session: Session, caller: Caller, account_id: int) -> list[GrantView]:
    """Who has access to an account (admins)."""
    access.get_account(session, caller, account_id)
    access.require_admin(caller, "list who has access to an account")
    rows = session.exec(
        select(AccountAccess, User)
        .join(User, col(User.id) == col(AccountAccess.user_id))
        .where(AccountAccess.account_id == account_id)
        .order_by(col(User.email))
    ).all()
    return [_view(grant, user.email) for grant, user in rows]


def granted_accounts(
    *, session: Session, caller: Caller, user_id: int | None = None
) -> list[mailboxes.AccountView]:
    """The accounts whose mail a user is granted: active ones only (a deactivated account leaves
    the inboxes until it is reactivated). The caller's own by default; another user's for admins."""
    user = tenants.target_user(session, caller, user_id)
    rows = session.exec(
        select(MailAccount)
        .join(AccountAccess, col(AccountAccess.account_id) == col(MailAccount.id))
        .where(
            AccountAccess.user_id == user.id,
            MailAccount.tenant_id == caller.tenant_id,
            col(MailAccount.active).is_(True),
        )
        .order_by(col(MailAccount.email))
    ).all()
    return [mailboxes.account_view(session, a) for a in rows]


def _usable_for(session: Session, caller: Caller, user: User, account_id: int) -> MailAccount:
    """An account the caller sees and `user` may send from (granted and active)."""
    account = access.get_account(session, caller, account_id)
    if grant_of(session, user.id or 0, account_id, caller.tenant_id) is None:
        raise Conflict(
            "no_account_access",
            f"{user.email} has no access to {account.email}.",
            user_id=user.id,
            account_id=account_id,
        )
    if not account.active:
        raise Conflict(
            "account_inactive",
            f"{account.email} is deactivated: reactivate it first or choose another account.",
            account_id=account_id,
        )
    return account


def set_default_account(
    *, session: Session, caller: Caller, account_id: int | None, user_id: int | None = None
) -> tenants.UserView:
    """The account a user composes from by default; None clears it."""
    user = tenants.target_user(session, caller, user_id)
    if account_id is not None:
        _usable_for(session, caller, user, account_id)
    user.default_account_id = account_id
    session.add(user)
    session.flush()
    return tenants.user_view(user)


def default_account(
    *, session: Session, caller: Caller, user_id: int | None = None
) -> mailboxes.AccountView | None:
    """The user's default account if it is still usable (granted and active), else None: a
    default kept through a deactivation comes back with the account."""
    user = tenants.target_user(session, caller, user_id)
    if user.default_account_id is None:
        return None
    account = session.exec(
        select(MailAccount).where(MailAccount.id == user.default_account_id, access.account_visible(caller))
    ).first()
    if (
        account is None
        or not account.active
        or grant_of(session, user.id or 0, account.id or 0, caller.tenant_id) is None
    ):
        return None
    return mailboxes.account_view(session, account)


def set_default_signature(
    *,
    session: Session,
    caller: Caller,
    account_id: int,
    signature_id: int | None,
    user_id: int | None = None,
) -> GrantView:
    """A user's default signature when composing from one account; None clears it."""
    user = tenants.target_user(session, caller, user_id)
    access.get_account(session, caller, account_id)
    grant = grant_of(session, user.id or 0, account_id, caller.tenant_id)
    if grant is None:
        raise Conflict(
            "no_account_access",
            f"{user.email} has no access to account {account_id}, so no default signature can be set for it.",
            user_id=user.id,
            account_id=account_id,
        )
    if signature_id is not None:
        own = session.exec(
            select(Signature)
            .where(Signature.account_id == account_id, Signature.tenant_id == caller.tenant_id)
            .order_by(col(Signature.id))
        ).all()
        # Another account's (or tenant's) signature is reported like a missing one.
        if all(s.id != signature_id for s in own):
            names = ", ".join(f"{s.id} ({s.name})" for s in own)
            raise InvalidInput(
                "signature_not_of_account",
                f"Signature {signature_id} is not a signature of account {account_id}. "
                f"Its signatures are: {names or 'none yet'}.",
                field="signature_id",
                signature_id=signature_id,
                account_id=account_id,
                signature_ids=[s.id for s in own],
            )
    grant.default_signature_id = signature_id
    session.add(grant)
    session.flush()
    return _view(grant, user.email)
