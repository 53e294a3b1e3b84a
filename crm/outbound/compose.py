"""Reply, reply-all, forward and compose: build the message and put it in the send queue.

The message is built once, here, and stored whole in the queue row: every attempt sends the
same bytes under the same Message-ID, so the Message-ID is the idempotency key of the send, of
the copy appended to Sent and of the message stored in the conversation.

* From is the account's address; its display name is the account's choice (`SenderName`).
* The signature: the user's default for that account unless another (`signature_id`) or none
  (`no_signature`) is chosen, rendered for the sending user by `crm.signature_service`.
* In-Reply-To and References continue the thread in every client (RFC 5322 3.6.4): References
  is the parent's References plus the parent's Message-ID, the oldest trimmed past 20.
* The text/plain alternative is generated from the HTML (`core.html_text`, composed style).
* Every header value is checked for CR, LF and NUL, every address parsed; refusals name the
  field (`crm.outbound.headers`).
* Collision guard: a reply whose draft was opened (`opened_at`) before mail arrived in the
  conversation is held, and the new messages are returned; it goes once sent with `confirm`.
"""

from __future__ import annotations

import enum
import html as html_lib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email import policy
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime

from sqlmodel import Session, col, select

from core.caller import Caller
from core.errors import Conflict, InvalidInput
from core.html_text import COMPOSED, html_to_text
from core.settings import get_settings
from core.types import AccountKind, utcnow
from crm import access, grants, signature_service
from crm.models import (
    Draft as DraftRow,
    ForwardingChannel,
    ImapUid,
    MailAccount,
    MailKind,
    Message,
    OutboundAccount,
    OutboundMail,
    OutboundState,
    SenderName,
    Tenant,
    User,
)
from crm.outbound.headers import check_header, parse_addresses
from crm.outbound.ids import new_message_id
from crm.outbound.views import NewMessageView, SendResult, outbound_view

UNDO_SECONDS = 10  # the default undo-send delay
MAX_UNDO_SECONDS = 300
MAX_MESSAGE_BYTES = 25 * 1024 * 1024  # what most providers accept (Gmail, Microsoft 365: 25-35 MB)
MAX_ATTACHMENTS = 50
MAX_REFERENCES = 20
_CONTENT_TYPE = re.compile(r"^[a-z0-9][a-z0-9.+-]*/[a-z0-9][a-z0-9.+-]*$")


class ComposeMode(enum.StrEnum):
    COMPOSE = "compose"
    REPLY = "reply"
    REPLY_ALL = "reply_all"
    FORWARD = "forward"


_KINDS = {
    ComposeMode.COMPOSE: MailKind.COMPOSE,
    ComposeMode.REPLY: MailKind.REPLY,
    ComposeMode.REPLY_ALL: MailKind.REPLY,
    ComposeMode.FORWARD: MailKind.FORWARD,
}


@dataclass(frozen=True, slots=True)
class AttachmentIn:
    filename: str
    content_type: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Draft:
    """What the user wrote. Recipients as typed ("Ann <ann@x.test>" or "ann@x.test")."""

    html: str = ""
    to: tuple[str, ...] = ()
    cc: tuple[str, ...] = ()
    bcc: tuple[str, ...] = ()
    subject: str | None = None  # None on a reply/forward: "Re:"/"Fwd:" + the original's
    signature_id: int | None = None  # None: the user's default for the account
    no_signature: bool = False
    attachments: tuple[AttachmentIn, ...] = ()


def _prefixed(prefix: str, subject: str) -> str:
    if subject.lower().startswith(prefix.lower()):
        return subject
    return f"{prefix} {subject}".strip()


def _sender_name(session: Session, account: MailAccount, user: User) -> str:
    choice = session.get(OutboundAccount, account.id)
    mode = choice.sender_name if choice is not None else SenderName.USER
    person = f"{user.first_name} {user.last_name}".strip() or account.display_name
    company = session.get_one(Tenant, account.tenant_id).name
    if mode is SenderName.COMPANY:
        return company
    if mode is SenderName.USER_AT_COMPANY and person:
        return f"{person} at {company}"
    return person or company


def _from_address(session: Session, account: MailAccount) -> str:
    """The address customers see: a forwarding address (crm.forwarding) sends as its custom
    sender once that address's emailed link was followed (crm.outbound.senders), else as the
    hosted address; every other account as its own address."""
    if account.kind is AccountKind.FORWARDING:
        channel = session.exec(
            select(ForwardingChannel).where(ForwardingChannel.account_id == account.id)
        ).first()
        if channel is not None and channel.sender_email:
            return channel.sender_email
    return account.email


def _signature(
    session: Session, caller: Caller, account: MailAccount, user: User, draft: Draft
) -> signature_service.RenderedView | None:
    if draft.no_signature:
        return None
    signature_id = draft.signature_id
    if signature_id is None:
        grant = grants.grant_of(session, user.id or 0, account.id or 0, caller.tenant_id)
        signature_id = grant.default_signature_id if grant is not None else None
        if signature_id is None:
            return None
    rendered = signature_service.render_signature(session=session, caller=caller, signature_id=signature_id)
    mine = {
        s.id
        for s in signature_service.list_signatures(session=session, caller=caller, account_id=account.id or 0)
    }
    if signature_id not in mine:
        raise InvalidInput(
            "signature_of_other_account",
            f"That signature belongs to another account than {account.email}.",
            field="signature_id",
        )
    return rendered


def _sending_account(
    session: Session, caller: Caller, account_id: int | None, parent: Message | None
) -> MailAccount:
    if account_id is None:
        if parent is None:
            raise InvalidInput(
                "account_required", "Say which account the mail is sent from.", field="account_id"
            )
        # The first account holding the message that the caller may send from.
        found = session.exec(
            select(ImapUid.account_id)
            .where(
                ImapUid.message_pk == parent.id,
                col(ImapUid.account_id).in_(access.visible_account_ids(caller)),
            )
            .order_by(col(ImapUid.account_id))
        ).first()
        if found is None:
            raise InvalidInput(
                "account_required", "Say which account the mail is sent from.", field="account_id"
            )
        account_id = found
    account = access.get_account(session, caller, account_id)
    if not account.active:
        raise Conflict(
            "account_inactive",
            f"Mail cannot be sent from {account.email}: it is deactivated.",
            account_id=account_id,
        )
    return account


def _quote(parent: Message, mode: ComposeMode) -> str:
    who = html_lib.escape(f"{parent.from_name} <{parent.from_email}>".strip())
    when = parent.date.strftime("%Y-%m-%d %H:%M UTC") if parent.date else ""
    body = html_lib.escape(parent.text_body).replace("\n", "<br>\n")
    if mode is ComposeMode.FORWARD:
        head = (
            "<p>---------- Forwarded message ----------<br>\n"
            f"From: {who}<br>\nDate: {when}<br>\nSubject: {html_lib.escape(parent.subject)}</p>\n"
        )
        return f"{head}<div>{body}</div>"
    return f"<p>On {when}, {who} wrote:</p>\n<blockquote>{body}</blockquote>"


def _reply_recipients(
    parent: Message, mode: ComposeMode, own: str
) -> tuple[tuple[tuple[str, str], ...], tuple[tuple[str, str], ...]]:
    """Default To/Cc of a reply: Reply-To (else From); reply-all adds the other To and Cc,
    never our own address."""
    first = [(a["email"], a.get("name", "")) for a in parent.reply_to] or [
        (parent.from_email, parent.from_name)
    ]
    to = [p for p in first if p[0] and p[0].lower() != own]
    cc: list[tuple[str, str]] = []
    if mode is ComposeMode.REPLY_ALL:
        taken = {own, *(e.lower() for e, _ in to)}
        for a in [*parent.to_addrs, *parent.cc_addrs]:
            if a.get("email") and a["email"].lower() not in taken:
                taken.add(a["email"].lower())
                cc.append((a["email"], a.get("name", "")))
    return tuple(to), tuple(cc)


def _typed(field: str, values: Sequence[str]) -> tuple[tuple[str, str], ...]:
    return parse_addresses(field, values)


def _new_since(
    session: Session, caller: Caller, thread_id: int, opened_at: datetime
) -> tuple[NewMessageView, ...]:
    rows = session.exec(
        select(Message)
        .where(
            Message.thread_id == thread_id,
            col(Message.created_at) > opened_at,
            access.message_visible(caller),
        )
        .order_by(col(Message.created_at))
    ).all()
    return tuple(
        NewMessageView(
            id=m.id or 0,
            from_email=m.from_email,
            from_name=m.from_name,
            subject=m.subject,
            date=m.date,
            snippet=" ".join(m.text_body.split())[:200],
        )
        for m in rows
    )


def _attach(msg: EmailMessage, attachments: Sequence[AttachmentIn]) -> None:
    if len(attachments) > MAX_ATTACHMENTS:
        raise InvalidInput(
            "too_many_attachments",
            f"A mail takes at most {MAX_ATTACHMENTS} attachments.",
            field="attachments",
        )
    for item in attachments:
        name = check_header("attachment filename", item.filename).strip() or "attachment"
        content_type = item.content_type.strip().lower()
        if not _CONTENT_TYPE.match(content_type):
            content_type = "application/octet-stream"
        maintype, _, subtype = content_type.partition("/")
        msg.add_attachment(item.data, maintype=maintype, subtype=subtype, filename=name)


def _mailbox(email: str, name: str) -> Address:
    local, _, domain = email.rpartition("@")
    return Address(display_name=name, username=local, domain=domain)


def send_mail(
    *,
    session: Session,
    caller: Caller,
    draft: Draft,
    mode: ComposeMode = ComposeMode.COMPOSE,
    account_id: int | None = None,
    message_pk: int | None = None,
    opened_at: datetime | None = None,
    confirm: bool = False,
    send_at: datetime | None = None,
    undo_seconds: int = UNDO_SECONDS,
    max_bytes: int = MAX_MESSAGE_BYTES,
    now: datetime | None = None,
) -> SendResult:
    """Build a mail and queue it; it leaves after the undo delay (or at `send_at`).

    A reply or forward names the message it answers (`message_pk`, resolved first: what the
    caller cannot see is not found); the sending account defaults to the first of the caller's
    accounts holding that message."""
    now = now or utcnow()
    parent: Message | None = None
    if mode is not ComposeMode.COMPOSE:
        if message_pk is None:
            raise InvalidInput("message_required", "Say which message this answers.", field="message_pk")
        parent = access.get_message(session, caller, message_pk)
    account = _sending_account(session, caller, account_id, parent)
    if caller.user_id is None:
        raise InvalidInput("user_required", "Mail is sent by a user: say which one.", field="user_id")
    user = access.get_user(session, caller, caller.user_id)
    if not 0 <= undo_seconds <= MAX_UNDO_SECONDS:
        raise InvalidInput(
            "undo_delay_invalid",
            f"The undo delay is between 0 and {MAX_UNDO_SECONDS} seconds.",
            field="undo_seconds",
        )
    if send_at is not None and send_at.tzinfo is None:
        raise InvalidInput("send_at_invalid", "Give the sending time with its time zone.", field="send_at")

    own = account.email.lower()
    sender = _from_address(session, account)
    to = _typed("to", draft.to)
    cc = _typed("cc", draft.cc)
    bcc = _typed("bcc", draft.bcc)
    subject = draft.subject
    if parent is not None:
        if mode in (ComposeMode.REPLY, ComposeMode.REPLY_ALL) and not draft.to and not draft.cc:
            to, cc = _reply_recipients(parent, mode, own)
        if subject is None:
            subject = _prefixed("Fwd:" if mode is ComposeMode.FORWARD else "Re:", parent.subject)
    subject = check_header("subject", subject or "")
    recipients = list(dict.fromkeys(e.lower() for e, _ in (*to, *cc, *bcc)))
    if not recipients:
        raise InvalidInput("recipients_required", "Add at least one recipient.", field="to")
    limit = get_settings().max_recipients
    if len(recipients) > limit:
        raise InvalidInput(
            "too_many_recipients", f"A mail goes to at most {limit} recipients.", field="to", limit=limit
        )

    # The collision guard, after the checks that do not depend on timing.
    if parent is not None and parent.thread_id is not None and opened_at is not None and not confirm:
        new = _new_since(session, caller, parent.thread_id, opened_at)
        if new:
            return SendResult(held=True, mail=None, new_messages=new)

    from_name = check_header("sender name", _sender_name(session, account, user))
    signature = _signature(session, caller, account, user, draft)
    body = draft.html
    if signature is not None:
        body = f'{body}\n<div class="signature">{signature.html}</div>'
    if parent is not None:
        body = f"{body}\n{_quote(parent, mode)}"
    html_doc = f"<!DOCTYPE html>\n<html><body>\n{body}\n</body></html>\n"
    text = html_to_text(body, COMPOSED)

    domain = own.rpartition("@")[2]
    message_id = new_message_id(session=session, tenant_id=caller.tenant_id, domain=domain)
    msg = EmailMessage(policy=policy.SMTP)
    msg["From"] = _mailbox(sender, from_name)
    if to:
        msg["To"] = [_mailbox(e, n) for e, n in to]
    if cc:
        msg["Cc"] = [_mailbox(e, n) for e, n in cc]
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now)
    msg["Message-ID"] = message_id
    if parent is not None and mode is not ComposeMode.FORWARD and not parent.message_id_synthetic:
        # Stored ids came from other people's mail: one with a line break is dropped, not sent.
        chain = [
            r for r in [*parent.references, parent.message_id] if r and not re.search(r"[\r\n\x00\s]", r)
        ]
        chain = list(dict.fromkeys(chain))[-MAX_REFERENCES:]
        if parent.message_id in chain:
            msg["In-Reply-To"] = parent.message_id
        if chain:
            msg["References"] = " ".join(chain)
    msg.set_content(text)
    msg.add_alternative(html_doc, subtype="html")
    _attach(msg, draft.attachments)
    raw = msg.as_bytes(policy=policy.SMTP)
    if len(raw) > max_bytes:
        raise InvalidInput(
            "message_too_large",
            f"The mail is {len(raw)} bytes with its attachments; at most {max_bytes} can be sent.",
            field="attachments",
            size=len(raw),
            limit=max_bytes,
        )

    due = now + timedelta(seconds=undo_seconds)
    if send_at is not None and send_at > due:
        due = send_at
    row = OutboundMail(
        tenant_id=caller.tenant_id,
        account_id=account.id or 0,
        user_id=user.id,
        thread_id=parent.thread_id if parent is not None else None,
        kind=_KINDS[mode],
        state=OutboundState.QUEUED,
        message_id=message_id,
        subject=subject,
        from_email=sender,
        from_name=from_name,
        recipients=recipients,
        to_addrs=[{"email": e, "name": n} for e, n in to],
        cc_addrs=[{"email": e, "name": n} for e, n in cc],
        bcc_addrs=[{"email": e, "name": n} for e, n in bcc],
        raw=raw,
        size=len(raw),
        next_attempt_at=due,
        created_at=now,
        updated_at=now,
    )
    session.add(row)
    if row.thread_id is not None:
        # The reply is written: the author's draft in that conversation is done with (item 2).
        saved = session.exec(
            select(DraftRow).where(DraftRow.user_id == user.id, DraftRow.thread_id == row.thread_id)
        ).first()
        if saved is not None:
            session.delete(saved)
    session.flush()
    return SendResult(held=False, mail=outbound_view(row))
