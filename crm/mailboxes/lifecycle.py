"""An account's lifecycle: deactivate (mail kept), reactivate (quota checked again), delete
(only an account that never mattered)."""

from __future__ import annotations

from sqlalchemy import delete, update
from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import Conflict
from core.types import utcnow
from crm import access, tenants
from crm.mailboxes.views import AccountView, account_view
from crm.models import (
    AccountAccess,
    FetchFailure,
    FolderState,
    ForwardingChannel,
    ImapUid,
    InboundDelivery,
    OAuthConsent,
    OAuthGrant,
    SenderVerification,
    Signature,
    SkippedMessage,
    SyncRun,
    Tenant,
    User,
)


def deactivate_account(*, session: Session, caller: Caller, account_id: int) -> AccountView:
    """Stop syncing and hide the account from inboxes; its mail, folder cursors, access grants and
    users' defaults stay, so reactivating brings everything back where it stopped."""
    account = access.get_account(session, caller, account_id)
    access.require_admin(caller, "deactivate mail accounts")
    if account.active:
        account.active = False
        account.deactivated_at = utcnow()
        session.add(account)
        session.flush()
    return account_view(session, account)


def reactivate_account(*, session: Session, caller: Caller, account_id: int) -> AccountView:
    """Sync again from the saved cursors; counts towards the quota again, so it is checked."""
    account = access.get_account(session, caller, account_id)
    access.require_admin(caller, "reactivate mail accounts")
    if not account.active:
        tenant = tenants.lock_tenant_row(session, account.tenant_id)
        tenants.ensure_quota(session=session, tenant=tenant)
        account.active = True
        account.deactivated_at = None
        account.next_attempt_at = None
        session.add(account)
        session.flush()
    return account_view(session, account)


def delete_account(*, session: Session, caller: Caller, account_id: int) -> None:
    """Delete an account that never mattered: nobody has access and no mail of it was ever
    processed. Anything else must be deactivated instead, so no stored mail loses its source."""
    account = access.get_account(session, caller, account_id)
    access.require_admin(caller, "delete mail accounts")
    holders = list(
        session.exec(
            select(User.email)
            .join(AccountAccess, col(AccountAccess.user_id) == col(User.id))
            .where(AccountAccess.account_id == account_id)
            .order_by(col(User.email))
        ).all()
    )
    reasons = []
    if holders:
        reasons.append(f"{len(holders)} user(s) have access to it ({', '.join(holders)})")
    if account.processed_any:
        reasons.append("mail of this account has already been processed into the CRM")
    if reasons:
        raise Conflict(
            "account_in_use",
            f"Account {account_id} ({account.email}) cannot be deleted: {'; and '.join(reasons)}. "
            "Deactivate it instead: it stops syncing and leaves the inboxes, and its mail is kept.",
            account_id=account_id,
            users=holders,
            processed=account.processed_any,
        )
    # Children first (foreign keys): locations and failures point at folder states.
    # A forwarding address never used (crm.forwarding) goes with its channel and what arrived
    # without becoming mail (e.g. a provider's confirmation).
    for table in (
        ImapUid,
        FetchFailure,
        SkippedMessage,
        FolderState,
        SyncRun,
        Signature,
        OAuthGrant,
        OAuthConsent,
        InboundDelivery,
        SenderVerification,
        ForwardingChannel,
    ):
        session.execute(delete(table).where(col(table.account_id) == account_id))
    session.execute(
        update(User).where(col(User.default_account_id) == account_id).values(default_account_id=None)
    )
    session.execute(
        update(Tenant).where(col(Tenant.bcc_account_id) == account_id).values(bcc_account_id=None)
    )
    session.delete(account)
    session.flush()
