"""Reading accounts: those the caller sees (`crm.access.account_visible`), and their skipped mail."""

from __future__ import annotations

from sqlmodel import Session, col, select

from core.caller import Caller
from crm import access
from crm.mailboxes.views import AccountView, SkippedView, account_view, views_of
from crm.models import MailAccount, SkippedMessage


def list_accounts(*, session: Session, caller: Caller) -> list[AccountView]:
    """The accounts the caller sees (admins: all of the tenant's; members: granted and active)."""
    rows = session.exec(
        select(MailAccount).where(access.account_visible(caller)).order_by(col(MailAccount.id))
    ).all()
    return views_of(session, list(rows))


def get_account(*, session: Session, caller: Caller, account_id: int) -> AccountView:
    return account_view(session, access.get_account(session, caller, account_id))


def list_skipped(
    *, session: Session, caller: Caller, account_id: int | None = None, limit: int = 200
) -> list[SkippedView]:
    """Mail not synced as conversation mail (e.g. over the recipient limit), newest first, of the
    accounts the caller sees: what is checked when someone asks why a message is missing."""
    query = (
        select(SkippedMessage)
        .join(MailAccount, col(MailAccount.id) == col(SkippedMessage.account_id))
        .where(SkippedMessage.tenant_id == caller.tenant_id, access.account_visible(caller))
        .order_by(col(SkippedMessage.created_at).desc())
        .limit(limit)
    )
    if account_id is not None:
        access.get_account(session, caller, account_id)
        query = query.where(SkippedMessage.account_id == account_id)
    return [
        SkippedView(
            account_id=row.account_id,
            message_id=row.message_id,
            date=row.date,
            from_email=row.from_email,
            subject=row.subject,
            recipient_count=row.recipient_count,
            reason=row.reason.value,
            detail=row.detail,
        )
        for row in session.exec(query).all()
    ]
