"""The one place that decides what a caller may see and change.

The rule (issue 7):
* nothing of another tenant is ever visible;
* an admin sees the whole tenant: every account (active or not), message, thread and record;
* a member sees the mail of the *active* accounts granted to them: a message (and its thread,
  links and attachments) is visible when it has a location in one of those accounts; a
  thread is visible when one of its messages is;
* CRM records (contacts, companies, deals) are the tenant's shared address book: every user of
  the tenant sees them; what a member sees *of their mail* still goes through the message rule;
* a record that is missing and one that is not visible raise the same `NotFound`, so nobody
  learns that an id exists elsewhere (Zulip's `access_stream_by_id`).

Services call these helpers instead of filtering by `tenant_id` themselves.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, exists, false
from sqlmodel import Session, col, select
from sqlmodel.sql.expression import SelectOfScalar

from core.caller import Caller, Role
from core.errors import Forbidden, not_found
from crm.models import AccountAccess, ImapUid, MailAccount, Message, Thread, ThreadAccount, User


def require_admin(caller: Caller, action: str) -> None:
    """Role check for admin-only operations (not about one record, so not a NotFound)."""
    if not caller.is_admin:
        raise Forbidden("admin_required", f"Only an administrator can {action}.", action=action)


def caller_for_user(*, session: Session, tenant_id: int, user_id: int) -> Caller:
    """The Caller of an existing user of the tenant (faces resolve it once per request)."""
    user = session.get(User, user_id)
    if user is None or user.tenant_id != tenant_id:
        raise not_found("user", user_id)
    return caller_of(user)


def is_active(session: Session, caller: Caller) -> bool:
    """The caller's user still exists in the tenant and is active (the operator always is)."""
    if caller.user_id is None:
        return True
    user = session.get(User, caller.user_id)
    return user is not None and user.tenant_id == caller.tenant_id and user.active


def caller_of(user: User) -> Caller:
    return Caller(
        tenant_id=user.tenant_id, user_id=user.id, role=Role.ADMIN if user.is_admin else Role.MEMBER
    )


def user_sees_thread(session: Session, user: User, thread_id: int) -> bool:
    """Whether another user of the tenant (an assignee, a mentioned colleague) sees a thread."""
    if not user.active:
        return False
    found = session.exec(
        select(Thread.id).where(Thread.id == thread_id, thread_visible(caller_of(user)))
    ).first()
    return found is not None


def visible_account_ids(caller: Caller) -> SelectOfScalar[int | None]:
    """A subquery of the account ids whose mail the caller sees."""
    query = select(col(MailAccount.id)).where(MailAccount.tenant_id == caller.tenant_id)
    if caller.is_admin:
        return query
    if caller.user_id is None:
        return query.where(false())
    return query.join(AccountAccess, col(AccountAccess.account_id) == col(MailAccount.id)).where(
        AccountAccess.user_id == caller.user_id, col(MailAccount.active).is_(True)
    )


def message_visible(caller: Caller) -> ColumnElement[bool]:
    """A WHERE clause on `Message`: the messages the caller may see."""
    in_tenant = col(Message.tenant_id) == caller.tenant_id
    if caller.is_admin:
        return in_tenant
    located = exists().where(
        col(ImapUid.message_pk) == col(Message.id),
        col(ImapUid.account_id).in_(visible_account_ids(caller)),
    )
    return in_tenant & located


def thread_visible(caller: Caller) -> ColumnElement[bool]:
    """A WHERE clause on `Thread`: threads holding at least one message the caller may see. Read
    from `thread_account` (which accounts hold mail of which thread, kept by triggers): the same
    rule as `message_visible`, one small index lookup per thread instead of a walk through its
    messages' locations."""
    in_tenant = col(Thread.tenant_id) == caller.tenant_id
    if caller.is_admin:
        return in_tenant
    return in_tenant & exists().where(
        col(ThreadAccount.thread_id) == col(Thread.id),
        col(ThreadAccount.account_id).in_(visible_account_ids(caller)),
    )


def account_visible(caller: Caller) -> ColumnElement[bool]:
    """A WHERE clause on `MailAccount`: accounts the caller sees (members: granted and active)."""
    in_tenant = col(MailAccount.tenant_id) == caller.tenant_id
    if caller.is_admin:
        return in_tenant
    return in_tenant & col(MailAccount.id).in_(visible_account_ids(caller))


def get_message(session: Session, caller: Caller, message_pk: int) -> Message:
    found = session.exec(select(Message).where(Message.id == message_pk, message_visible(caller))).first()
    if found is None:
        raise not_found("message", message_pk)
    return found


def get_thread(session: Session, caller: Caller, thread_id: int) -> Thread:
    found = session.exec(select(Thread).where(Thread.id == thread_id, thread_visible(caller))).first()
    if found is None:
        raise not_found("thread", thread_id)
    return found


def get_account(session: Session, caller: Caller, account_id: int) -> MailAccount:
    found = session.exec(
        select(MailAccount).where(MailAccount.id == account_id, account_visible(caller))
    ).first()
    if found is None:
        raise not_found("account", account_id)
    return found


def get_user(session: Session, caller: Caller, user_id: int) -> User:
    """Users of the caller's tenant (every user sees the team's names, e.g. to assign)."""
    user = session.get(User, user_id)
    if user is None or user.tenant_id != caller.tenant_id:
        raise not_found("user", user_id)
    return user
