"""What leaves the outbound services: frozen views, never rows."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from crm.models import LimitUnit, MailKind, OutboundMail, OutboundState

__all__ = [
    "LimitUnit",
    "MailKind",
    "NewMessageView",
    "OutboundState",
    "OutboundView",
    "SendResult",
    "outbound_view",
]


@dataclass(frozen=True, slots=True)
class Recipient:
    email: str
    name: str


@dataclass(frozen=True, slots=True)
class OutboundView:
    """One outgoing mail: its queue state, and its line in the mail log."""

    id: int
    account_id: int | None  # None: system mail through the deployment's SMTP
    user_id: int | None
    thread_id: int | None
    kind: MailKind
    state: OutboundState
    message_id: str
    subject: str
    from_email: str
    from_name: str
    to: tuple[Recipient, ...]
    cc: tuple[Recipient, ...]
    bcc: tuple[Recipient, ...]
    size: int
    # When it goes (end of the undo delay, or the chosen time); then when it is retried.
    next_attempt_at: datetime | None
    attempts: int
    last_response_code: int | None
    last_response: str  # the server's last answer, as it said it (shown in the mail log only)
    error_code: str | None
    sent_at: datetime | None
    stored_message_pk: int | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class NewMessageView:
    """A message that arrived in the conversation after the draft was opened."""

    id: int
    from_email: str
    from_name: str
    subject: str
    date: datetime | None
    snippet: str


@dataclass(frozen=True, slots=True)
class SendResult:
    """Either queued (`mail`), or held because the conversation moved on (`new_messages`): send
    again with `confirm` after reading them."""

    held: bool
    mail: OutboundView | None
    new_messages: tuple[NewMessageView, ...] = ()


def _recipients(rows: list[dict[str, str]]) -> tuple[Recipient, ...]:
    return tuple(Recipient(email=r.get("email", ""), name=r.get("name", "")) for r in rows)


def outbound_view(row: OutboundMail) -> OutboundView:
    return OutboundView(
        id=row.id or 0,
        account_id=row.account_id,
        user_id=row.user_id,
        thread_id=row.thread_id,
        kind=row.kind,
        state=row.state,
        message_id=row.message_id,
        subject=row.subject,
        from_email=row.from_email,
        from_name=row.from_name,
        to=_recipients(row.to_addrs),
        cc=_recipients(row.cc_addrs),
        bcc=_recipients(row.bcc_addrs),
        size=row.size,
        next_attempt_at=row.next_attempt_at,
        attempts=row.attempts,
        last_response_code=row.last_response_code,
        last_response=row.last_response,
        error_code=row.error_code,
        sent_at=row.sent_at,
        stored_message_pk=row.stored_message_pk,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
