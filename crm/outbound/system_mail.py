"""A tenant's system mail (notifications, verification links): how it leaves, and putting one on
the send queue (issue 10, item 5).

Sending modes (`SendingMode`):

* `default`: the deployment's own SMTP (settings `system_smtp_*`), From the deployment's address
  with the tenant's name ("Acme <notifications@deployment>"). Works with no set-up.
* `branded`: the deployment's SMTP, From the tenant's verified address (`crm.outbound.senders`);
  until one is verified, the default sender is used.
* `own` (recommended: mail from the tenant's own domain and servers, the best deliverability):
  one of the tenant's mail accounts, through its SMTP settings (saved after a test mail).

Whatever the mode, the mail is a row of the send queue like any other (retries, mail log, never
twice); system mail through the deployment's SMTP has no account (`account_id` None).
"""

from __future__ import annotations

from dataclasses import dataclass
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from sqlmodel import Session

from core.caller import Caller
from core.errors import Conflict, InvalidInput
from core.settings import get_settings
from core.types import utcnow
from crm import access
from crm.models import (
    MailAccount,
    MailKind,
    OutboundMail,
    OutboundState,
    SendingMode,
    Tenant,
    TenantMailSettings,
)
from crm.outbound.headers import check_header, parse_address
from crm.outbound.ids import new_message_id
from crm.outbound.views import OutboundView, outbound_view


@dataclass(frozen=True, slots=True)
class SendingView:
    mode: SendingMode
    own_account_id: int | None
    from_email: str | None  # the verified branded address (None: none yet)
    notifications_enabled: bool
    # What system mail uses right now (the effective sender, after fallbacks).
    effective_from: str
    effective_name: str
    via: str  # "deployment" or "account"
    deployment_smtp_configured: bool


def settings_row(session: Session, tenant_id: int) -> TenantMailSettings:
    row = session.get(TenantMailSettings, tenant_id)
    if row is None:
        row = TenantMailSettings(tenant_id=tenant_id)
        session.add(row)
        session.flush()
    return row


@dataclass(frozen=True, slots=True)
class Sender:
    account_id: int | None
    email: str
    name: str


def sender_of(session: Session, tenant_id: int) -> Sender:
    """Who system mail of the tenant comes from, and through which SMTP."""
    row = session.get(TenantMailSettings, tenant_id) or TenantMailSettings(tenant_id=tenant_id)
    tenant = session.get_one(Tenant, tenant_id)
    if row.mode is SendingMode.OWN and row.own_account_id is not None:
        account = session.get(MailAccount, row.own_account_id)
        if account is not None and account.active and account.smtp_host:
            return Sender(account.id, account.email, tenant.name)
    if row.mode is SendingMode.BRANDED and row.from_email:
        return Sender(None, row.from_email, tenant.name)
    return Sender(None, get_settings().system_from_address, tenant.name)


def get_sending(*, session: Session, caller: Caller) -> SendingView:
    access.require_admin(caller, "see the tenant's sending settings")
    row = session.get(TenantMailSettings, caller.tenant_id) or TenantMailSettings(tenant_id=caller.tenant_id)
    sender = sender_of(session, caller.tenant_id)
    return SendingView(
        mode=row.mode,
        own_account_id=row.own_account_id,
        from_email=row.from_email,
        notifications_enabled=row.notifications_enabled,
        effective_from=sender.email,
        effective_name=sender.name,
        via="account" if sender.account_id is not None else "deployment",
        deployment_smtp_configured=bool(get_settings().system_smtp_host),
    )


def set_sending(
    *,
    session: Session,
    caller: Caller,
    mode: SendingMode | None = None,
    own_account_id: int | None = None,
    notifications_enabled: bool | None = None,
) -> SendingView:
    """Change the mode (admins). `own` needs an account with SMTP settings; `branded` a verified
    address (start one with `crm.outbound.senders.request_verification`)."""
    access.require_admin(caller, "change the tenant's sending settings")
    row = settings_row(session, caller.tenant_id)
    if mode is SendingMode.OWN:
        if own_account_id is None:
            raise InvalidInput(
                "own_account_required", "Say which account's SMTP sends the mail.", field="own_account_id"
            )
        account = access.get_account(session, caller, own_account_id)
        if not account.smtp_host:
            raise Conflict(
                "smtp_not_configured",
                f"{account.email} has no SMTP settings yet: set them up (with a test mail) first.",
                account_id=own_account_id,
            )
        row.own_account_id = own_account_id
    if mode is SendingMode.BRANDED and not row.from_email:
        raise Conflict(
            "sender_not_verified",
            "Verify the address to send from first: a link is mailed to it.",
        )
    if mode is not None:
        row.mode = mode
    if notifications_enabled is not None:
        row.notifications_enabled = notifications_enabled
    session.add(row)
    session.flush()
    return get_sending(session=session, caller=caller)


def enqueue(
    *,
    session: Session,
    tenant_id: int,
    kind: MailKind,
    to: str,
    subject: str,
    text: str,
    html: str | None = None,
    user_id: int | None = None,
    sender: Sender | None = None,
) -> OutboundView:
    """Put one system mail on the send queue, due at once (no undo delay: nobody to undo it)."""
    now = utcnow()
    sender = sender or sender_of(session, tenant_id)
    recipient, name = parse_address("to", to)
    subject = check_header("subject", subject)
    from_name = check_header("sender name", sender.name)
    message_id = new_message_id(session=session, tenant_id=tenant_id, domain=sender.email.rpartition("@")[2])
    msg = EmailMessage(policy=policy.SMTP)
    local, _, domain = sender.email.rpartition("@")
    msg["From"] = Address(display_name=from_name, username=local, domain=domain)
    rlocal, _, rdomain = recipient.rpartition("@")
    msg["To"] = Address(display_name=name, username=rlocal, domain=rdomain)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to system mail
    msg.set_content(text)
    if html is not None:
        msg.add_alternative(html, subtype="html")
    raw = msg.as_bytes(policy=policy.SMTP)
    row = OutboundMail(
        tenant_id=tenant_id,
        account_id=sender.account_id,
        user_id=user_id,
        kind=kind,
        state=OutboundState.QUEUED,
        message_id=message_id,
        subject=subject,
        from_email=sender.email,
        from_name=from_name,
        recipients=[recipient.lower()],
        to_addrs=[{"email": recipient, "name": name}],
        raw=raw,
        size=len(raw),
        next_attempt_at=now,
        # System mail is not filed in a conversation nor in a Sent folder.
        sent_folder_done=True,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    session.flush()
    return outbound_view(row)
