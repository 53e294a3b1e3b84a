"""What the inbound listener calls: resolve a recipient at RCPT time, then write one delivery
in the caller's transaction (the listener answers 250 only after it commits).

Idempotence: a delivery is keyed by (account, envelope + Message-ID). If we crash after the
commit but before our 250, the sending server retries; the retry finds its key and is
answered 250 without storing anything again. Every arrival is counted: the same Message-ID
arriving `loop_threshold` times at one address is a forwarding loop, refused (554 5.4.6, so the
loop ends with the sending server) and shown on the channel.

The mail itself goes through `crm.mailstore.apply_batch` (threading, linking, assignment, the
recipient limit's skip record) with a location in the channel's virtual folder whose UID is
the delivery id.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from core.types import DeliveryOutcome, FolderRole, SkipReason, utcnow
from crm import mailstore
from crm.forwarding import tickets
from crm.forwarding.channels import VIRTUAL_FOLDER
from crm.locks import lock_tenant
from crm.models import FolderState, ForwardingChannel, InboundDelivery, MailAccount, Message
from crm.outbound.ids import is_our_message_id


@dataclass(frozen=True, slots=True)
class Route:
    """A recipient we accept: one channel's address."""

    tenant_id: int
    account_id: int
    channel_id: int
    address: str
    original_address: str
    test_token: str | None


def resolve(*, session: Session, address: str) -> Route | None:
    """The active channel at this address, or None (the listener then refuses the RCPT)."""
    row = session.exec(
        select(ForwardingChannel, MailAccount.active)
        .join(MailAccount, col(MailAccount.id) == col(ForwardingChannel.account_id))
        .where(ForwardingChannel.address == address.strip().lower())
    ).first()
    if row is None or not row[1]:
        return None
    channel = row[0]
    return Route(
        tenant_id=channel.tenant_id,
        account_id=channel.account_id,
        channel_id=channel.id or 0,
        address=channel.address,
        original_address=channel.original_address,
        test_token=channel.test_token,
    )


def own_addresses(*, session: Session, tenant_id: int) -> tuple[frozenset[str], frozenset[str]]:
    """(the tenant's own addresses: accounts and users; its own domains)."""
    from crm.models import Tenant

    tenant = session.get(Tenant, tenant_id)
    domains = frozenset(d.lower() for d in (tenant.own_domains if tenant else []))
    return mailstore.tenant_identities(session=session, tenant_id=tenant_id), domains


def is_ours(*, session: Session, tenant_id: int, message_id: str) -> bool:
    """Did we make this Message-ID (our own outgoing mail coming back)?"""
    return is_our_message_id(session=session, tenant_id=tenant_id, message_id=message_id)


class Result(enum.Enum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # a retry of a delivery already committed
    LOOP = "loop"


@dataclass(slots=True)
class Arrival:
    """One message for one channel, decided by the listener (sync/inbound.py)."""

    dedupe_key: str
    message_id: str
    mail_from: str
    subject: str
    outcome: DeliveryOutcome
    data: mailstore.MessageData | None = None  # the mail to store (STORED)
    skip: tuple[SkipReason, str] | None = None  # recorded, never a conversation (SKIPPED)
    detail: str = ""
    credited_from: str = ""
    forwarded_by: str | None = None
    unattributed: bool = False
    facts: dict[str, Any] = field(default_factory=dict)  # confirmation code/link, test token
    date: datetime | None = None
    recipient_count: int = 0


@dataclass(frozen=True, slots=True)
class Stored:
    result: Result
    delivery_id: int | None = None
    message_pk: int | None = None


def _loop(session: Session, route: Route, message_id: str) -> Stored:
    channel = session.get_one(ForwardingChannel, route.channel_id)
    channel.loop_message_id, channel.loop_detected_at = message_id, utcnow()
    session.add(channel)
    session.flush()
    return Stored(Result.LOOP)


def deliver(*, session: Session, route: Route, arrival: Arrival, loop_threshold: int) -> Stored:
    """Write one arrival for one channel (see the module docstring)."""
    return deliver_many(session=session, jobs=[(route, arrival)], loop_threshold=loop_threshold)[0]


@dataclass(slots=True)
class _Pending:
    index: int
    delivery: InboundDelivery
    item: mailstore.Incoming
    stored: bool


def deliver_many(
    *,
    session: Session,
    jobs: Sequence[tuple[Route, Arrival]],
    loop_threshold: int,
    identities: Mapping[int, frozenset[str]] | None = None,
) -> list[Stored]:
    """Write several arrivals in the caller's transaction, in order (the listener's group
    commit: messages arriving together share one transaction and one `apply_batch` per
    channel, whose cost is mostly per batch, not per message). `identities`: the tenants' own
    addresses (`mailstore.tenant_identities`) when the caller already read them in this
    transaction (the listener does, to credit the mail), else they are read here."""
    for tenant_id in sorted({route.tenant_id for route, _ in jobs}):
        lock_tenant(session=session, tenant_id=tenant_id)
    now = utcnow()
    results: list[Stored | None] = [None] * len(jobs)
    pending: dict[int, list[_Pending]] = {}
    routes: dict[int, Route] = {}
    for index, (route, arrival) in enumerate(jobs):
        # One query for both checks: this envelope's earlier delivery (the dedupe key holds the
        # Message-ID) and how often the Message-ID arrived here at all (the loop count).
        earlier = session.exec(
            select(InboundDelivery).where(
                InboundDelivery.account_id == route.account_id,
                InboundDelivery.message_id == arrival.message_id,
            )
        ).all()
        arrivals = sum(row.arrivals for row in earlier)
        seen = next((row for row in earlier if row.dedupe_key == arrival.dedupe_key), None)
        if seen is not None:
            seen.arrivals += 1
            seen.last_arrival_at = now
            session.add(seen)
            session.flush()
            if arrivals + 1 >= loop_threshold:
                results[index] = _loop(session, route, arrival.message_id)
            else:
                results[index] = Stored(Result.DUPLICATE, seen.id, seen.message_pk)
            continue
        if arrivals + 1 >= loop_threshold:
            results[index] = _loop(session, route, arrival.message_id)
            continue
        delivery = InboundDelivery(
            tenant_id=route.tenant_id,
            account_id=route.account_id,
            dedupe_key=arrival.dedupe_key,
            message_id=arrival.message_id,
            mail_from=arrival.mail_from[:320],
            subject=arrival.subject[:2000],
            outcome=arrival.outcome,
            detail=arrival.detail,
            credited_from=arrival.credited_from[:320],
            forwarded_by=arrival.forwarded_by[:320] if arrival.forwarded_by else None,
            unattributed=arrival.unattributed,
            data=dict(arrival.facts),
        )
        session.add(delivery)
        session.flush()
        channel = session.get_one(ForwardingChannel, route.channel_id)
        if channel.activated_at is None:
            channel.activated_at = now  # mail arrived: the address is in use and now fixed
        if arrival.outcome is DeliveryOutcome.TEST:
            channel.test_received_at = now
        session.add(channel)
        results[index] = Stored(Result.STORED, delivery.id)
        location = mailstore.Location(uid=delivery.id or 0, internal_date=now)
        item: mailstore.Incoming | None = None
        if arrival.outcome is DeliveryOutcome.SKIPPED and arrival.skip is not None:
            reason, detail = arrival.skip
            item = mailstore.SkippedMail(
                location=location,
                message_id=arrival.message_id,
                reason=reason,
                detail=detail,
                subject=arrival.subject[:2000],
                from_email=arrival.credited_from,
                date=arrival.date,
                recipient_count=arrival.recipient_count,
            )
        elif arrival.outcome is DeliveryOutcome.STORED and arrival.data is not None:
            item = mailstore.NewMail(location=location, data=arrival.data)
        if item is not None:
            routes[route.account_id] = route
            stored = arrival.outcome is DeliveryOutcome.STORED
            pending.setdefault(route.account_id, []).append(_Pending(index, delivery, item, stored))
    known = dict(identities or {})
    for account_id, entries in pending.items():
        route = routes[account_id]
        if route.tenant_id not in known:
            known[route.tenant_id] = mailstore.tenant_identities(session=session, tenant_id=route.tenant_id)
        _store(session, route, entries, known[route.tenant_id])
        for entry in entries:
            results[entry.index] = Stored(Result.STORED, entry.delivery.id, entry.delivery.message_pk)
    session.flush()
    return [r if r is not None else Stored(Result.STORED) for r in results]


def _store(session: Session, route: Route, entries: list[_Pending], identities: frozenset[str]) -> None:
    """One `apply_batch` for one channel's entries, then their message ids and tickets."""
    folder = session.exec(
        select(FolderState).where(
            FolderState.account_id == route.account_id, FolderState.role == FolderRole.INBOX
        )
    ).one()
    result = mailstore.apply_batch(
        session=session,
        tenant_id=route.tenant_id,
        account_id=route.account_id,
        folder_id=folder.id or 0,
        folder_role=FolderRole.INBOX,
        uidvalidity=folder.uidvalidity or 1,
        items=[e.item for e in entries],
        identities=identities,
        cursor=mailstore.CursorUpdate(highest_uid=max(e.delivery.id or 0 for e in entries)),
    )
    wanted = sorted({e.delivery.message_id for e in entries if e.stored})
    pks: dict[str, int] = {}
    if wanted:
        for message_id, pk in session.exec(
            select(Message.message_id, Message.id).where(
                Message.tenant_id == route.tenant_id, col(Message.message_id).in_(wanted)
            )
        ).all():
            pks[message_id] = pk or 0
    for entry in entries:
        if entry.stored:
            entry.delivery.message_pk = pks.get(entry.delivery.message_id)
            session.add(entry.delivery)
    channel = session.get_one(ForwardingChannel, route.channel_id)
    if channel.create_tickets and result.stored_message_pks:
        tickets.open_for_new_conversations(
            session=session,
            tenant_id=route.tenant_id,
            account_id=route.account_id,
            message_pks=result.stored_message_pks,
            stage=channel.ticket_stage,
            priority=channel.ticket_priority,
        )


__all__ = [
    "VIRTUAL_FOLDER",
    "Arrival",
    "Result",
    "Route",
    "Stored",
    "deliver",
    "is_ours",
    "own_addresses",
    "resolve",
]
