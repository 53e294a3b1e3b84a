"""Outgoing mail: reply, reply-all and forward from a message, compose from an account; recall
within the undo delay; the send queue and the mail log. Scoped like everything else: a member
sends only from the accounts granted to them and sees only their mail in the log."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field, SecretStr

from core.db import get_engine, session_scope
from core.errors import InvalidInput
from core.secrets import SecretBox
from core.settings import get_settings
from core.types import Security
from crm.outbound import compose, drafts, limits, queue, smtp_setup
from crm.outbound.views import LimitUnit, MailKind, OutboundState, OutboundView, SendResult
from inbox_api.deps import CallerDep, SessionDep
from sync.smtp_setup import make_test_sender

router = APIRouter(prefix="/api", tags=["outbound"])

_QUEUE_STATES = (
    OutboundState.QUEUED,
    OutboundState.SENDING,
    OutboundState.DEFERRED,
    OutboundState.WAITING_LIMIT,
)


class AttachmentIn(BaseModel):
    filename: str = Field(min_length=1, max_length=255)
    content_type: str = Field(default="application/octet-stream", max_length=255)
    data_base64: str = Field(description="The file's bytes, base64-encoded")


class DraftIn(BaseModel):
    html: str = Field(default="", max_length=2_000_000, description="The body as HTML (text is derived)")
    to: list[str] = Field(default_factory=list, max_length=100, description='"Name <a@b.test>" or "a@b.test"')
    cc: list[str] = Field(default_factory=list, max_length=100)
    bcc: list[str] = Field(default_factory=list, max_length=100)
    subject: str | None = Field(default=None, max_length=998)
    signature_id: int | None = Field(default=None, description="Another signature of the account")
    no_signature: bool = False
    attachments: list[AttachmentIn] = Field(default_factory=list, max_length=compose.MAX_ATTACHMENTS)
    send_at: datetime | None = Field(default=None, description="Send later, at this time")
    undo_seconds: int = Field(default=compose.UNDO_SECONDS, ge=0, le=compose.MAX_UNDO_SECONDS)


class ReplyIn(DraftIn):
    mode: Literal["reply", "reply_all", "forward"] = "reply"
    account_id: int | None = Field(
        default=None, description="Default: the caller's account holding the message"
    )
    opened_at: datetime | None = Field(
        default=None, description="When the draft was opened (collision guard)"
    )
    confirm: bool = Field(default=False, description="Send even though new mail arrived since opened_at")


class ComposeIn(DraftIn):
    account_id: int


def _draft(body: DraftIn) -> compose.Draft:
    attachments = []
    for item in body.attachments:
        try:
            data = base64.b64decode(item.data_base64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(
                "attachment_invalid",
                f"The attachment {item.filename!r} is not valid base64.",
                field="attachments",
            ) from exc
        attachments.append(compose.AttachmentIn(item.filename, item.content_type, data))
    return compose.Draft(
        html=body.html,
        to=tuple(body.to),
        cc=tuple(body.cc),
        bcc=tuple(body.bcc),
        subject=body.subject,
        signature_id=body.signature_id,
        no_signature=body.no_signature,
        attachments=tuple(attachments),
    )


@router.post("/messages/{message_pk}/reply", summary="Reply, reply to all or forward a message")
def reply(message_pk: int, body: ReplyIn, session: SessionDep, caller: CallerDep) -> SendResult:
    """Queued after the undo delay; `held` with the new messages when the conversation moved on
    since `opened_at` (send again with `confirm`)."""
    return compose.send_mail(
        session=session,
        caller=caller,
        draft=_draft(body),
        mode=compose.ComposeMode(body.mode),
        account_id=body.account_id,
        message_pk=message_pk,
        opened_at=body.opened_at,
        confirm=body.confirm,
        send_at=body.send_at,
        undo_seconds=body.undo_seconds,
    )


@router.post("/outbound", summary="Compose a new mail from an account")
def compose_mail(body: ComposeIn, session: SessionDep, caller: CallerDep) -> SendResult:
    return compose.send_mail(
        session=session,
        caller=caller,
        draft=_draft(body),
        account_id=body.account_id,
        send_at=body.send_at,
        undo_seconds=body.undo_seconds,
    )


@router.get("/outbound", summary="The send queue: mail not sent yet (queued, sending, deferred)")
def send_queue(
    session: SessionDep,
    caller: CallerDep,
    account_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> tuple[OutboundView, ...]:
    return queue.mail_log(
        session=session, caller=caller, states=_QUEUE_STATES, account_id=account_id, limit=limit
    )


@router.get("/outbound/{outbound_id}", summary="One outgoing mail and its state")
def get_outbound(outbound_id: int, session: SessionDep, caller: CallerDep) -> OutboundView:
    return queue.get_outbound(session=session, caller=caller, outbound_id=outbound_id)


@router.post(
    "/outbound/{outbound_id}/cancel", summary="Undo send (within the delay) or drop a send-later mail"
)
def cancel(outbound_id: int, session: SessionDep, caller: CallerDep) -> OutboundView:
    return queue.cancel(session=session, caller=caller, outbound_id=outbound_id)


@router.get("/mail-log", summary="Every outgoing mail: time, sender, recipients, state, server's answer")
def mail_log(
    session: SessionDep,
    caller: CallerDep,
    state: Annotated[list[OutboundState] | None, Query()] = None,
    kind: Annotated[list[MailKind] | None, Query()] = None,
    since: datetime | None = None,
    until: datetime | None = None,
    address: str | None = None,
    account_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> tuple[OutboundView, ...]:
    return queue.mail_log(
        session=session,
        caller=caller,
        states=state or (),
        kinds=kind or (),
        since=since,
        until=until,
        address=address,
        account_id=account_id,
        limit=limit,
    )


class SmtpSettingsBody(BaseModel):
    host: str = Field(min_length=1, max_length=255)
    security: Security = Field(
        default=Security.STARTTLS, description="starttls (usually port 587), tls (implicit, 465) or plain"
    )
    port: int | None = Field(default=None, ge=1, le=65535, description="Default: 587, 465 or 25 by security")
    username: str | None = Field(
        default=None, max_length=320, description="Default: the saved SMTP username, else the IMAP one"
    )
    password: SecretStr | None = Field(
        default=None,
        max_length=1000,
        description=(
            "Write-only; default: the current SMTP (else IMAP) one. Refused for an account connected "
            "with OAuth: its token logs in (XOAUTH2)"
        ),
    )
    test_to: str = Field(min_length=3, max_length=320, description="Where the test mail goes")


@router.put(
    "/accounts/{account_id}/smtp",
    summary="Set an account's SMTP settings (admins): saved only once a test mail was accepted",
)
def set_smtp(
    account_id: int, body: SmtpSettingsBody, session: SessionDep, caller: CallerDep
) -> smtp_setup.SmtpSaved:
    """The test mail goes out at once with the new settings; a refusal answers 409
    `smtp_test_failed` with its `cause` and what to do. Either way it is in the mail log."""
    session.commit()  # no transaction held while the SMTP server answers
    box = SecretBox.from_settings()
    return smtp_setup.save_smtp_settings(
        sessions=session_scope,
        caller=caller,
        account_id=account_id,
        given=smtp_setup.SmtpSettingsIn(
            host=body.host,
            security=body.security,
            port=body.port,
            username=body.username,
            password=body.password,
            test_to=body.test_to,
        ),
        box=box,
        # An OAuth account's test logs in with its token, read (and refreshed) from the database.
        send_test=make_test_sender(get_settings(), db=get_engine(), box=box),
    )


class DailyLimitBody(BaseModel):
    per_day: int | None = Field(
        ge=0, le=limits.MAX_LIMIT, description="Per rolling 24 h; 0: no limit; null: the provider's default"
    )
    unit: LimitUnit | None = Field(
        default=None, description="messages or recipients (default: the provider's)"
    )


@router.get("/accounts/{account_id}/daily-limit", summary="An account's daily sending limit and its use")
def get_daily_limit(account_id: int, session: SessionDep, caller: CallerDep) -> limits.LimitView:
    return limits.get_limit(session=session, caller=caller, account_id=account_id)


@router.put("/accounts/{account_id}/daily-limit", summary="Change an account's daily sending limit (admins)")
def set_daily_limit(
    account_id: int, body: DailyLimitBody, session: SessionDep, caller: CallerDep
) -> limits.LimitView:
    return limits.set_limit(
        session=session, caller=caller, account_id=account_id, per_day=body.per_day, unit=body.unit
    )


class DraftBody(BaseModel):
    html: str = Field(default="", max_length=drafts.MAX_HTML)
    subject: str | None = Field(default=None, max_length=998)
    to: list[str] = Field(default_factory=list, max_length=100)
    cc: list[str] = Field(default_factory=list, max_length=100)
    bcc: list[str] = Field(default_factory=list, max_length=100)
    account_id: int | None = None
    shared: bool = Field(default=False, description="Readable by the team (those who see the conversation)")


def _draft_in(body: DraftBody) -> drafts.DraftIn:
    return drafts.DraftIn(
        html=body.html,
        subject=body.subject,
        to=tuple(body.to),
        cc=tuple(body.cc),
        bcc=tuple(body.bcc),
        account_id=body.account_id,
        shared=body.shared,
    )


@router.put("/threads/{thread_id}/draft", summary="Save my draft in a conversation (one per user)")
def save_thread_draft(
    thread_id: int, body: DraftBody, session: SessionDep, caller: CallerDep
) -> drafts.DraftView:
    return drafts.save_for_thread(session=session, caller=caller, thread_id=thread_id, given=_draft_in(body))


@router.get(
    "/threads/{thread_id}/drafts", summary="Drafts in a conversation: mine and the team's shared ones"
)
def thread_drafts(thread_id: int, session: SessionDep, caller: CallerDep) -> list[drafts.DraftView]:
    return list(drafts.list_drafts(session=session, caller=caller, thread_id=thread_id))


@router.get("/drafts", summary="My drafts and those shared with me")
def list_drafts(session: SessionDep, caller: CallerDep) -> list[drafts.DraftView]:
    return list(drafts.list_drafts(session=session, caller=caller))


@router.post("/drafts", summary="Save a draft of a new mail (no conversation)")
def create_draft(body: DraftBody, session: SessionDep, caller: CallerDep) -> drafts.DraftView:
    return drafts.create(session=session, caller=caller, given=_draft_in(body))


@router.get("/drafts/{draft_id}", summary="One draft (mine, or shared with the team)")
def get_draft(draft_id: int, session: SessionDep, caller: CallerDep) -> drafts.DraftView:
    return drafts.get(session=session, caller=caller, draft_id=draft_id)


@router.put("/drafts/{draft_id}", summary="Replace one of my drafts")
def update_draft(draft_id: int, body: DraftBody, session: SessionDep, caller: CallerDep) -> drafts.DraftView:
    return drafts.update(session=session, caller=caller, draft_id=draft_id, given=_draft_in(body))


@router.delete("/drafts/{draft_id}", status_code=204, summary="Delete one of my drafts")
def delete_draft(draft_id: int, session: SessionDep, caller: CallerDep) -> None:
    drafts.delete(session=session, caller=caller, draft_id=draft_id)
