"""Sender verification (issue 10, item 6): an address a tenant wants as the From of its
notification mail is proven by following a link mailed to it.

The token is `{request id}.{secret}.{mac}`:

* the mac is an HMAC-SHA256 of the id and secret under the tenant's key (`crm.outbound.ids`,
  domain-separated), so a token that was altered is refused before any lookup by value;
* only a SHA-256 of the secret is stored, and it is cleared when used: single use;
* a resend makes a new secret, so only the latest link works;
* a request expires 24 h after its last mail.

Resends are rate-limited (one a minute, five per request). Until the new address is verified the
old verified address stays the From of all notification mail; on success the new one replaces it.

The same links prove a forwarding channel's custom reply sender (issue 13): a request with an
`account_id` is the channel's; following its link sets `ForwardingChannel.sender_email` (the From
of the channel's replies) and leaves the tenant's notification sender alone. Until then the
channel's replies keep their default sender, the hosted address.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import Conflict, InvalidInput, not_found
from core.settings import get_settings
from core.types import utcnow
from crm import access
from crm.models import ForwardingChannel, MailKind, SenderVerification, SendingMode, Tenant
from crm.outbound import notifications, system_mail
from crm.outbound.headers import parse_address
from crm.outbound.ids import tenant_key

TOKEN_LIFETIME = timedelta(hours=24)
RESEND_INTERVAL = timedelta(minutes=1)
MAX_SENDS = 5


@dataclass(frozen=True, slots=True)
class VerificationView:
    id: int
    email: str
    verified: bool
    expires_at: datetime | None
    sends: int
    last_sent_at: datetime | None
    next_resend_at: datetime | None  # None: no resend left (or verified)
    current_from: str | None  # the verified From in use meanwhile


@dataclass(frozen=True, slots=True)
class Verified:
    tenant_id: int
    email: str
    account_id: int | None = None  # a forwarding channel's reply sender (None: the tenant's)


def _mac(session: Session, tenant_id: int, request_id: int, secret: str) -> str:
    return hmac.new(
        tenant_key(session, tenant_id), f"sender-verification|{request_id}|{secret}".encode(), hashlib.sha256
    ).hexdigest()[:32]


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _channel(session: Session, account_id: int) -> ForwardingChannel | None:
    return session.exec(select(ForwardingChannel).where(ForwardingChannel.account_id == account_id)).first()


def _current_from(session: Session, row: SenderVerification) -> str | None:
    if row.account_id is not None:
        channel = _channel(session, row.account_id)
        return channel.sender_email if channel is not None else None
    settings = session.get(system_mail.TenantMailSettings, row.tenant_id)
    return settings.from_email if settings is not None else None


def _view(session: Session, row: SenderVerification) -> VerificationView:
    left = row.verified_at is None and row.sends < MAX_SENDS
    return VerificationView(
        id=row.id or 0,
        email=row.email,
        verified=row.verified_at is not None,
        expires_at=row.expires_at,
        sends=row.sends,
        last_sent_at=row.last_sent_at,
        next_resend_at=(row.last_sent_at + RESEND_INTERVAL) if left and row.last_sent_at else None,
        current_from=_current_from(session, row),
    )


def _mail_link(session: Session, row: SenderVerification, now: datetime) -> None:
    secret = secrets.token_urlsafe(24)
    request_id = row.id or 0
    token = f"{request_id}.{secret}.{_mac(session, row.tenant_id, request_id, secret)}"
    row.token_hash = _digest(secret)
    row.expires_at = now + TOKEN_LIFETIME
    row.sends += 1
    row.last_sent_at = now
    session.add(row)
    tenant = session.get_one(Tenant, row.tenant_id)
    link = f"{get_settings().public_url.rstrip('/')}/verify-sender?token={token}"
    # Through the deployment's sender: the address is not proven yet, and the tenant's own
    # account may be the very thing being set up.
    wording, _ = notifications.wording_of(session, row.tenant_id, notifications.Event.SENDER_VERIFICATION)
    rendered = notifications.render_wording(
        wording, {"tenant_name": tenant.name, "sender_address": row.email, "verification_url": link}
    )
    system_mail.enqueue(
        session=session,
        tenant_id=row.tenant_id,
        kind=MailKind.VERIFICATION,
        to=row.email,
        subject=rendered.subject,
        text=rendered.text,
        html=rendered.html,
        sender=system_mail.Sender(None, get_settings().system_from_address, tenant.name),
    )


def request_verification(
    *,
    session: Session,
    caller: Caller,
    email: str,
    account_id: int | None = None,
    now: datetime | None = None,
) -> VerificationView:
    """Start verifying an address (admins): a link is mailed to it. The verified From in use
    stays until this one is confirmed. With `account_id`: the reply sender of that forwarding
    channel (the caller checked it may manage the channel)."""
    access.require_admin(caller, "change the sender address")
    now = now or utcnow()
    address, _ = parse_address("email", email)
    if account_id is None:
        current_from = system_mail.settings_row(session, caller.tenant_id).from_email
    else:
        channel = _channel(session, account_id)
        if channel is None or channel.tenant_id != caller.tenant_id:
            raise not_found("forwarding channel", account_id)
        current_from = channel.sender_email
    if current_from and current_from.lower() == address.lower():
        raise Conflict("sender_already_verified", f"{address} is already the verified sender.", email=address)
    row = SenderVerification(tenant_id=caller.tenant_id, account_id=account_id, email=address, created_at=now)
    session.add(row)
    session.flush()
    _mail_link(session, row, now)
    session.flush()
    return _view(session, row)


def _get(session: Session, caller: Caller, request_id: int) -> SenderVerification:
    row = session.exec(
        select(SenderVerification).where(
            SenderVerification.id == request_id, SenderVerification.tenant_id == caller.tenant_id
        )
    ).first()
    if row is None:
        raise not_found("sender_verification", request_id)
    return row


def resend(
    *, session: Session, caller: Caller, request_id: int, now: datetime | None = None
) -> VerificationView:
    """Mail a new link (the old one stops working); once a minute, five times per request."""
    row = _get(session, caller, request_id)
    access.require_admin(caller, "change the sender address")
    now = now or utcnow()
    if row.verified_at is not None:
        raise Conflict("sender_already_verified", f"{row.email} is already verified.", email=row.email)
    if row.sends >= MAX_SENDS:
        raise Conflict(
            "resend_limit_reached",
            f"The link was sent {MAX_SENDS} times; start again with the address.",
            request_id=request_id,
        )
    if row.last_sent_at is not None and now < row.last_sent_at + RESEND_INTERVAL:
        wait = int((row.last_sent_at + RESEND_INTERVAL - now).total_seconds()) + 1
        raise Conflict("resend_too_soon", f"Wait {wait} s before sending the link again.", retry_after=wait)
    _mail_link(session, row, now)
    session.flush()
    return _view(session, row)


def pending(
    *, session: Session, caller: Caller, account_id: int | None = None
) -> tuple[VerificationView, ...]:
    """Addresses waiting for their link: the tenant's notification sender, or (`account_id`)
    a forwarding channel's reply sender."""
    access.require_admin(caller, "see the sender address")
    rows = session.exec(
        select(SenderVerification)
        .where(
            SenderVerification.tenant_id == caller.tenant_id,
            col(SenderVerification.verified_at).is_(None),
            col(SenderVerification.account_id).is_(None)
            if account_id is None
            else col(SenderVerification.account_id) == account_id,
        )
        .order_by(col(SenderVerification.id).desc())
    ).all()
    return tuple(_view(session, r) for r in rows)


def _invalid() -> InvalidInput:
    return InvalidInput("token_invalid", "This verification link is not valid. Ask for a new one.")


def confirm(*, session: Session, token: str, now: datetime | None = None) -> Verified:
    """Follow a link: no caller (the token is the proof). Tampered, used (or superseded) and
    expired tokens are refused, each with its own code."""
    now = now or utcnow()
    parts = token.strip().split(".")
    if len(parts) != 3 or not parts[0].isdigit() or len(parts[0]) > 18:
        raise _invalid()
    request_id, secret, mac = int(parts[0]), parts[1], parts[2]
    row = session.get(SenderVerification, request_id)
    if row is None or not hmac.compare_digest(mac, _mac(session, row.tenant_id, request_id, secret)):
        raise _invalid()
    if row.token_hash is None or not hmac.compare_digest(row.token_hash, _digest(secret)):
        raise Conflict(
            "token_used", "This link was already used, or a newer one was sent. Use the latest mail."
        )
    if row.expires_at is None or now > row.expires_at:
        raise Conflict("token_expired", "This link has expired (24 h). Ask for a new one.")
    row.token_hash = None
    row.verified_at = now
    session.add(row)
    if row.account_id is not None:
        channel = _channel(session, row.account_id)
        if channel is None:  # the channel was deleted meanwhile
            raise _invalid()
        channel.sender_email = row.email
        session.add(channel)
        session.flush()
        return Verified(tenant_id=row.tenant_id, email=row.email, account_id=row.account_id)
    settings = system_mail.settings_row(session, row.tenant_id)
    settings.from_email = row.email
    if settings.mode is SendingMode.DEFAULT:
        settings.mode = SendingMode.BRANDED  # what verifying an address is for
    session.add(settings)
    session.flush()
    return Verified(tenant_id=row.tenant_id, email=row.email)
