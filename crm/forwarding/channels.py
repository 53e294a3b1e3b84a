"""The admin's side of a forwarding channel.

A channel is modelled as a `MailAccount` of kind FORWARDING (why: quota, users and access,
default signatures, outbound sending and its sender name/address, the inbox views and the
record timelines all key on accounts, and work unchanged) plus a `ForwardingChannel` row for
what only a hosted address has: the address itself, ticket defaults, the loop warning and the
test. Its mail lives in one virtual INBOX folder (`FolderState` named `VIRTUAL_FOLDER`), located
by delivery id, so `crm.mailstore` stores it exactly like synced mail.

The address is `<local part>-<suffix>@<inbound domain>`: the local part is the admin's choice
until the channel is activated (by the admin, or by the first mail it accepts), the suffix is
random and never changes, so nobody reaches a team's inbox by guessing `sales@`.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pydantic import SecretStr
from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import Conflict, InvalidInput, not_found
from core.secrets import SecretBox
from core.types import (
    AccountKind,
    DeliveryOutcome,
    FolderRole,
    Security,
    TicketPriority,
    TicketStage,
    utcnow,
)
from crm import access, tenants
from crm.models import (
    FolderState,
    ForwardingChannel,
    InboundDelivery,
    MailAccount,
    OutboundAccount,
    SenderName,
    SenderVerification,
)
from crm.outbound import senders
from crm.outbound.compose import Draft, send_mail
from crm.outbound.headers import parse_address
from crm.rules.inbound import clean_local_part, new_suffix

VIRTUAL_FOLDER = "(forwarded)"
VIRTUAL_SENT = "(sent)"  # replies sent from the channel, located by their outbound id
VIRTUAL_UIDVALIDITY = 1
TEST_SUBJECT = "crm-inbox forwarding test"


@dataclass(frozen=True, slots=True)
class ChannelView:
    id: int
    account_id: int
    name: str
    address: str
    local_part: str
    activated: bool
    activated_at: datetime | None
    original_address: str
    active: bool
    create_tickets: bool
    ticket_stage: TicketStage
    ticket_priority: TicketPriority
    # A forwarding loop was stopped: the Message-ID and when (None: no warning).
    loop_warning: str | None
    loop_detected_at: datetime | None
    test_sent_at: datetime | None
    test_received_at: datetime | None
    # What customers see on replies: the custom sender once its emailed link was followed
    # (crm.outbound.senders), else the hosted address.
    sender_address: str
    sender_verified: bool
    # A custom sender waiting for its link to be followed (None: none asked).
    sender_pending: str | None


@dataclass(frozen=True, slots=True)
class DeliveryView:
    id: int
    received_at: datetime
    mail_from: str
    message_id: str
    subject: str
    outcome: DeliveryOutcome
    detail: str
    credited_from: str
    forwarded_by: str | None
    unattributed: bool
    arrivals: int
    message_pk: int | None


@dataclass(frozen=True, slots=True)
class ConfirmationView:
    id: int
    received_at: datetime
    provider: str
    code: str | None
    link: str | None
    requested_by: str | None
    subject: str


@dataclass(frozen=True, slots=True)
class TestView:
    channel: ChannelView
    token: str
    to: str
    subject: str


def _view(channel: ForwardingChannel, account: MailAccount, session: Session) -> ChannelView:
    loop = None
    if channel.loop_detected_at is not None:
        loop = (
            f"A forwarding loop was stopped: {channel.loop_message_id} arrived again and again. "
            "Check that the team's address does not forward back to itself."
        )
    return ChannelView(
        id=channel.id or 0,
        account_id=channel.account_id,
        name=account.display_name,
        address=channel.address,
        local_part=channel.local_part,
        activated=channel.activated_at is not None,
        activated_at=channel.activated_at,
        original_address=channel.original_address,
        active=account.active,
        create_tickets=channel.create_tickets,
        ticket_stage=channel.ticket_stage,
        ticket_priority=channel.ticket_priority,
        loop_warning=loop,
        loop_detected_at=channel.loop_detected_at,
        test_sent_at=channel.test_sent_at,
        test_received_at=channel.test_received_at,
        sender_address=channel.sender_email or channel.address,
        sender_verified=channel.sender_email is not None,
        sender_pending=_pending_sender(session, channel),
    )


def _pending_sender(session: Session, channel: ForwardingChannel) -> str | None:
    row = session.exec(
        select(SenderVerification.email)
        .where(
            SenderVerification.account_id == channel.account_id,
            col(SenderVerification.verified_at).is_(None),
        )
        .order_by(col(SenderVerification.id).desc())
    ).first()
    return row


def _address(local_part: str, suffix: str, domain: str) -> str:
    return f"{local_part}-{suffix}@{domain}"


def _local_part(value: str) -> str:
    cleaned = clean_local_part(value)
    if not cleaned:
        raise InvalidInput(
            "local_part_invalid",
            "Choose a local part with letters or digits (e.g. sales).",
            field="local_part",
        )
    return cleaned


def _original(value: str) -> str:
    if not value.strip():
        return ""
    return tenants.normalize_email(value, field="original_address")


def _get(session: Session, caller: Caller, channel_id: int) -> tuple[ForwardingChannel, MailAccount]:
    channel = session.get(ForwardingChannel, channel_id)
    if channel is None or channel.tenant_id != caller.tenant_id:
        raise not_found("forwarding channel", channel_id)
    account = access.get_account(session, caller, channel.account_id)  # the one visibility rule
    return channel, account


def create_channel(
    *,
    session: Session,
    caller: Caller,
    box: SecretBox,
    domain: str,
    name: str,
    local_part: str | None = None,
    original_address: str = "",
    create_tickets: bool = False,
    ticket_stage: TicketStage = TicketStage.NEW,
    ticket_priority: TicketPriority = TicketPriority.MEDIUM,
) -> ChannelView:
    """A forwarding address for a team inbox; counts against the quota like a mailbox."""
    access.require_admin(caller, "create forwarding addresses")
    name = name.strip()
    if not name or len(name) > 200:
        raise InvalidInput("name_invalid", "Give the team inbox a name (up to 200 characters).", field="name")
    part = _local_part(local_part if local_part else name)
    original = _original(original_address)
    tenant = tenants.lock_tenant_row(session, caller.tenant_id)
    tenants.ensure_quota(session=session, tenant=tenant)
    for _ in range(5):
        suffix = new_suffix()
        address = _address(part, suffix, domain)
        if (
            session.exec(select(ForwardingChannel.id).where(ForwardingChannel.address == address)).first()
            is None
        ):
            break
    else:  # pragma: no cover - 36^6 suffixes
        raise Conflict("address_taken", "No free address was found; try another local part.")
    account = MailAccount(
        tenant_id=caller.tenant_id,
        kind=AccountKind.FORWARDING,
        email=address,
        display_name=name,
        # Placeholders: a forwarding account is never synced (no server, no password).
        imap_host="",
        imap_port=0,
        imap_security=Security.PLAIN,
        username=address,
        secret_encrypted=box.encrypt(SecretStr(secrets.token_urlsafe(24))),
    )
    session.add(account)
    session.flush()
    session.add(
        FolderState(
            account_id=account.id or 0,
            role=FolderRole.INBOX,
            name=VIRTUAL_FOLDER,
            uidvalidity=VIRTUAL_UIDVALIDITY,
            initial_sync_done=True,
        )
    )
    session.add(
        FolderState(
            account_id=account.id or 0,
            role=FolderRole.SENT,
            name=VIRTUAL_SENT,
            uidvalidity=VIRTUAL_UIDVALIDITY,
            initial_sync_done=True,
        )
    )
    channel = ForwardingChannel(
        tenant_id=caller.tenant_id,
        account_id=account.id or 0,
        local_part=part,
        suffix=suffix,
        address=address,
        original_address=original,
        create_tickets=create_tickets,
        ticket_stage=ticket_stage,
        ticket_priority=ticket_priority,
    )
    session.add(channel)
    session.flush()
    return _view(channel, account, session)


def list_channels(*, session: Session, caller: Caller) -> list[ChannelView]:
    rows = session.exec(
        select(ForwardingChannel, MailAccount)
        .join(MailAccount, col(MailAccount.id) == col(ForwardingChannel.account_id))
        .where(ForwardingChannel.tenant_id == caller.tenant_id, access.account_visible(caller))
        .order_by(col(ForwardingChannel.id))
    ).all()
    return [_view(c, a, session) for c, a in rows]


def get_channel(*, session: Session, caller: Caller, channel_id: int) -> ChannelView:
    return _view(*_get(session, caller, channel_id), session)


def set_local_part(
    *, session: Session, caller: Caller, channel_id: int, local_part: str, domain: str
) -> ChannelView:
    """Change the local part: only before activation (afterwards the address is in use)."""
    channel, account = _get(session, caller, channel_id)  # first: invisible is not found
    access.require_admin(caller, "change forwarding addresses")
    if channel.activated_at is not None:
        raise Conflict(
            "channel_activated",
            f"{channel.address} is active: its address can no longer change.",
            channel_id=channel_id,
        )
    part = _local_part(local_part)
    address = _address(part, channel.suffix, channel.address.rpartition("@")[2] or domain)
    taken = session.exec(
        select(ForwardingChannel.id).where(
            ForwardingChannel.address == address, ForwardingChannel.id != channel_id
        )
    ).first()
    if taken is not None:
        raise Conflict("address_taken", f"{address} is taken.", address=address)
    channel.local_part, channel.address = part, address
    account.email = account.username = address
    session.add(channel)
    session.add(account)
    session.flush()
    return _view(channel, account, session)


def remove_smtp(*, session: Session, caller: Caller, channel_id: int) -> ChannelView:
    """No SMTP server for this channel any more: replies wait with `smtp_not_configured`.
    Setting one goes through the test-mail set-up (`crm.outbound.smtp_setup`, on the channel's
    account), like any account's: a channel's SMTP is saved only once a test mail was accepted."""
    channel, account = _get(session, caller, channel_id)  # first: invisible is not found
    access.require_admin(caller, "change forwarding addresses")
    account.smtp_host = account.smtp_port = account.smtp_security = None
    account.smtp_username = account.smtp_secret_encrypted = None
    session.add(account)
    session.flush()
    return _view(channel, account, session)


def activate(*, session: Session, caller: Caller, channel_id: int) -> ChannelView:
    channel, account = _get(session, caller, channel_id)  # first: invisible is not found
    access.require_admin(caller, "activate forwarding addresses")
    if channel.activated_at is None:
        channel.activated_at = utcnow()
        session.add(channel)
        session.flush()
    return _view(channel, account, session)


def update_channel(
    *,
    session: Session,
    caller: Caller,
    channel_id: int,
    original_address: str | None = None,
    create_tickets: bool | None = None,
    ticket_stage: TicketStage | None = None,
    ticket_priority: TicketPriority | None = None,
    sender_name: SenderName | None = None,
) -> ChannelView:
    """Ticket defaults, the team's original address (changing it asks for a new test before
    replies are sent as it), and the sender name customers see (user, company, or both)."""
    channel, account = _get(session, caller, channel_id)  # first: invisible is not found
    access.require_admin(caller, "change forwarding addresses")
    if original_address is not None and _original(original_address) != channel.original_address:
        channel.original_address = _original(original_address)
        channel.test_received_at = None  # a new address is used as sender only once tested
    if create_tickets is not None:
        channel.create_tickets = create_tickets
    if ticket_stage is not None:
        channel.ticket_stage = ticket_stage
    if ticket_priority is not None:
        channel.ticket_priority = ticket_priority
    if sender_name is not None:
        choice = session.get(OutboundAccount, account.id) or OutboundAccount(account_id=account.id or 0)
        choice.sender_name = sender_name
        session.add(choice)
    session.add(channel)
    session.flush()
    return _view(channel, account, session)


def request_sender(*, session: Session, caller: Caller, channel_id: int, email: str) -> ChannelView:
    """Ask for a custom reply sender (e.g. the team's own address): a link is mailed to it
    (crm.outbound.senders, the tenant's sender verification). Replies keep the current sender
    until the link is followed; resend with `senders.resend` (the request in `sender_pending`)."""
    channel, account = _get(session, caller, channel_id)  # first: invisible is not found
    access.require_admin(caller, "change forwarding addresses")
    if parse_address("email", email)[0].lower() == channel.address:
        raise InvalidInput(
            "sender_is_hosted_address",
            f"{channel.address} is already the default sender; give the team's own address.",
            field="email",
        )
    senders.request_verification(session=session, caller=caller, email=email, account_id=channel.account_id)
    return _view(channel, account, session)


def pending_sender_requests(
    *, session: Session, caller: Caller, channel_id: int
) -> tuple[senders.VerificationView, ...]:
    """The channel's sender addresses waiting for their link (newest first; admins)."""
    channel, _ = _get(session, caller, channel_id)  # first: invisible is not found
    return senders.pending(session=session, caller=caller, account_id=channel.account_id)


def dismiss_loop(*, session: Session, caller: Caller, channel_id: int) -> ChannelView:
    channel, account = _get(session, caller, channel_id)  # first: invisible is not found
    access.require_admin(caller, "dismiss forwarding warnings")
    channel.loop_detected_at, channel.loop_message_id = None, None
    session.add(channel)
    session.flush()
    return _view(channel, account, session)


def _delivery_view(row: InboundDelivery) -> DeliveryView:
    return DeliveryView(
        id=row.id or 0,
        received_at=row.received_at,
        mail_from=row.mail_from,
        message_id=row.message_id,
        subject=row.subject,
        outcome=row.outcome,
        detail=row.detail,
        credited_from=row.credited_from,
        forwarded_by=row.forwarded_by,
        unattributed=row.unattributed,
        arrivals=row.arrivals,
        message_pk=row.message_pk,
    )


def list_deliveries(
    *, session: Session, caller: Caller, channel_id: int, limit: int = 100
) -> list[DeliveryView]:
    """What arrived at the address, newest first (stored, skipped and why, forwarded by whom)."""
    channel, _ = _get(session, caller, channel_id)
    rows = session.exec(
        select(InboundDelivery)
        .where(InboundDelivery.account_id == channel.account_id)
        .order_by(col(InboundDelivery.id).desc())
        .limit(max(1, min(limit, 500)))
    ).all()
    return [_delivery_view(r) for r in rows]


def list_confirmations(*, session: Session, caller: Caller, channel_id: int) -> list[ConfirmationView]:
    """Providers' forwarding confirmations (code and link), newest first: the admin finishes the
    provider's setup with them without access to the mailbox."""
    channel, _ = _get(session, caller, channel_id)  # first: invisible is not found
    access.require_admin(caller, "read forwarding confirmations")
    rows = session.exec(
        select(InboundDelivery)
        .where(
            InboundDelivery.account_id == channel.account_id,
            InboundDelivery.outcome == DeliveryOutcome.CONFIRMATION,
        )
        .order_by(col(InboundDelivery.id).desc())
    ).all()

    def text(data: dict[str, Any], key: str) -> str | None:
        value = data.get(key)
        return str(value) if value else None

    return [
        ConfirmationView(
            id=r.id or 0,
            received_at=r.received_at,
            provider=str(r.data.get("provider", "")),
            code=text(r.data, "code"),
            link=text(r.data, "link"),
            requested_by=text(r.data, "requested_by"),
            subject=r.subject,
        )
        for r in rows
    ]


def start_test(*, session: Session, caller: Caller, channel_id: int) -> TestView:
    """Prepare "send a test": a token for a message to the team's original address, which must
    come back through the forward (the listener marks `test_received_at` when it does). The
    face sends it (`crm.outbound`), so it leaves like any reply from this channel."""
    channel, account = _get(session, caller, channel_id)  # first: invisible is not found
    access.require_admin(caller, "test forwarding addresses")
    if not channel.original_address:
        raise InvalidInput(
            "original_address_required",
            "Set the team's original address first: the test is sent there.",
            field="original_address",
        )
    channel.test_token = secrets.token_hex(8)
    channel.test_sent_at, channel.test_received_at = utcnow(), None
    session.add(channel)
    session.flush()
    return TestView(
        channel=_view(channel, account, session),
        token=channel.test_token,
        to=channel.original_address,
        subject=f"{TEST_SUBJECT} {channel.test_token}",
    )


def send_test(*, session: Session, caller: Caller, channel_id: int) -> TestView:
    """ "Send a test": queue the test message from this channel (as any reply would leave) to
    the team's original address; `test_received_at` is set when it comes back through the
    forward. Sent by the calling user, so it needs one (not the command-line operator)."""
    test = start_test(session=session, caller=caller, channel_id=channel_id)
    draft = Draft(
        html=(
            "<p>This message checks that mail sent to this address is forwarded to the team "
            f"inbox. It can be deleted.</p><p>Test {test.token}</p>"
        ),
        to=(test.to,),
        subject=test.subject,
        no_signature=True,
    )
    send_mail(session=session, caller=caller, draft=draft, account_id=test.channel.account_id, undo_seconds=0)
    return test
