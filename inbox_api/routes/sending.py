"""A tenant's system mail over the API: the sending mode (deployment default, branded sender,
own SMTP), the sender address and its verification link, and the page that link opens.

The confirmation needs no sign-in (the token is the proof) and is a POST: mail scanners that
open every link in a message must not confirm an address by fetching it; the GET page only
shows a button.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from core.db import session_scope
from core.errors import DomainError
from crm.outbound import notifications, queue, senders, system_mail
from crm.outbound.senders import VerificationView, Verified
from crm.outbound.system_mail import SendingMode, SendingView
from crm.outbound.views import MailKind, OutboundState
from inbox_api.deps import CallerDep, SessionDep
from sync import dns_advice

router = APIRouter(tags=["sending"])


class SendingBody(BaseModel):
    mode: SendingMode | None = Field(
        default=None, description="default, branded (a verified address) or own (an account's SMTP)"
    )
    own_account_id: int | None = None
    notifications_enabled: bool | None = None


class SenderBody(BaseModel):
    email: str = Field(min_length=3, max_length=320)


class TokenBody(BaseModel):
    token: str = Field(min_length=5, max_length=300)


@router.get("/api/sending", summary="How the tenant's notification and system mail is sent (admins)")
def get_sending(session: SessionDep, caller: CallerDep) -> SendingView:
    return system_mail.get_sending(session=session, caller=caller)


@router.put("/api/sending", summary="Change the sending mode or turn notification mail off (admins)")
def set_sending(body: SendingBody, session: SessionDep, caller: CallerDep) -> SendingView:
    return system_mail.set_sending(
        session=session,
        caller=caller,
        mode=body.mode,
        own_account_id=body.own_account_id,
        notifications_enabled=body.notifications_enabled,
    )


@router.post("/api/sending/sender", summary="Verify a new sender address: a link is mailed to it (admins)")
def request_sender(body: SenderBody, session: SessionDep, caller: CallerDep) -> VerificationView:
    return senders.request_verification(session=session, caller=caller, email=body.email)


@router.get("/api/sending/sender", summary="Sender addresses waiting for verification (admins)")
def pending_senders(session: SessionDep, caller: CallerDep) -> tuple[VerificationView, ...]:
    return senders.pending(session=session, caller=caller)


@router.post(
    "/api/sending/sender/{verification_id}/resend",
    summary="Mail the verification link again (once a minute, five times)",
)
def resend_sender(verification_id: int, session: SessionDep, caller: CallerDep) -> VerificationView:
    return senders.resend(session=session, caller=caller, request_id=verification_id)


@router.post("/api/sending/verify", summary="Confirm a sender address with the token of its link")
def confirm_sender(body: TokenBody, session: SessionDep) -> Verified:
    return senders.confirm(session=session, token=body.token)


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Confirm the sender address · crm-inbox</title>
<link rel="stylesheet" href="/static/app.css"></head>
<body class="login-page"><main class="login"><h1>crm-inbox</h1>{body}</main></body></html>
"""


def _page(request: Request, body: str, status: int = 200) -> HTMLResponse:
    from inbox_api.web import security_headers

    response = HTMLResponse(_PAGE.format(body=body), status_code=status)
    security_headers(response)
    return response


@router.get("/verify-sender", include_in_schema=False)
def verify_page(request: Request, token: str = "") -> HTMLResponse:
    import html

    return _page(
        request,
        '<form method="post" action="/verify-sender" class="login-form">'
        "<p>Confirm this address as a sender of your team's mail.</p>"
        f'<input type="hidden" name="token" value="{html.escape(token, quote=True)}">'
        '<button type="submit">Confirm</button></form>',
    )


@router.post("/verify-sender", include_in_schema=False)
def verify_submit(request: Request, session: SessionDep, token: Annotated[str, Form()] = "") -> HTMLResponse:
    import html

    try:
        done = senders.confirm(session=session, token=token[:300])
    except DomainError as exc:
        return _page(request, f'<p class="error" role="alert">{html.escape(exc.message)}</p>', 400)
    what = "the replies of a team inbox" if done.account_id is not None else "your notification mail"
    return _page(request, f"<p>Confirmed: {html.escape(done.email)} now sends {what}.</p>")


class TemplateBody(BaseModel):
    subject: str = Field(max_length=notifications.MAX_TEMPLATE)
    text: str = Field(max_length=notifications.MAX_TEMPLATE)
    html: str = Field(max_length=notifications.MAX_TEMPLATE)


class PreviewBody(BaseModel):
    subject: str | None = Field(default=None, max_length=notifications.MAX_TEMPLATE)
    text: str | None = Field(default=None, max_length=notifications.MAX_TEMPLATE)
    html: str | None = Field(default=None, max_length=notifications.MAX_TEMPLATE)


class PrefBody(BaseModel):
    enabled: bool
    digest_hour: int | None = Field(default=None, ge=0, le=23, description="Daily digest: the hour, UTC")


@router.get("/api/notification-templates", summary="Notification templates and their merge tags (admins)")
def list_templates(session: SessionDep, caller: CallerDep) -> tuple[notifications.TemplateView, ...]:
    return notifications.list_templates(session=session, caller=caller)


@router.get("/api/notification-templates/{event}", summary="One event's wording and merge tags (admins)")
def get_template(event: str, session: SessionDep, caller: CallerDep) -> notifications.TemplateView:
    return notifications.get_template(session=session, caller=caller, event=event)


@router.put(
    "/api/notification-templates/{event}",
    summary="Reword one event's notification (admins); unknown merge tags are refused",
)
def save_template(
    event: str, body: TemplateBody, session: SessionDep, caller: CallerDep
) -> notifications.TemplateView:
    return notifications.save_template(
        session=session, caller=caller, event=event, subject=body.subject, text=body.text, html=body.html
    )


@router.delete("/api/notification-templates/{event}", summary="Back to the built-in wording (admins)")
def reset_template(event: str, session: SessionDep, caller: CallerDep) -> notifications.TemplateView:
    return notifications.reset_template(session=session, caller=caller, event=event)


@router.post(
    "/api/notification-templates/{event}/preview",
    summary="Preview a notification with sample values (the saved wording, or the one given)",
)
def preview_template(
    event: str, body: PreviewBody, session: SessionDep, caller: CallerDep
) -> notifications.Rendered:
    return notifications.preview(
        session=session, caller=caller, event=event, subject=body.subject, text=body.text, html=body.html
    )


@router.get("/api/me/notifications", summary="Which notification mail I get")
def my_prefs(session: SessionDep, caller: CallerDep) -> tuple[notifications.PrefView, ...]:
    return notifications.get_prefs(session=session, caller=caller)


@router.put("/api/me/notifications/{event}", summary="Turn one kind of notification mail on or off")
def set_my_pref(
    event: str, body: PrefBody, session: SessionDep, caller: CallerDep
) -> tuple[notifications.PrefView, ...]:
    return notifications.set_pref(
        session=session, caller=caller, event=event, enabled=body.enabled, digest_hour=body.digest_hour
    )


@router.get(
    "/api/sending/domain-advice",
    summary="SPF, DKIM and DMARC of a sending domain, as advice (admins; never blocks sending)",
)
def domain_advice(
    session: SessionDep,
    caller: CallerDep,
    domain: str | None = None,
    selector: Annotated[list[str] | None, Query(description="DKIM selectors to look up")] = None,
) -> dns_advice.DomainAdvice:
    """Default domain: the one of the tenant's notification sender."""
    current = system_mail.get_sending(session=session, caller=caller)  # admins only
    session.commit()  # no transaction held while the DNS answers
    return dns_advice.check_domain(domain or current.effective_from, tuple(selector or ()))


class WatchBody(BaseModel):
    account_ids: list[int] = Field(
        max_length=200, description="Shared inboxes to be told of new conversations"
    )


@router.get("/api/me/watched-inboxes", summary="The shared inboxes whose new conversations I am mailed")
def my_watched(session: SessionDep, caller: CallerDep) -> list[int]:
    return notifications.watched_inboxes(session=session, caller=caller)


@router.put(
    "/api/me/watched-inboxes", summary="Choose the shared inboxes whose new conversations I am mailed"
)
def set_my_watched(body: WatchBody, session: SessionDep, caller: CallerDep) -> list[int]:
    return notifications.watch_inboxes(session=session, caller=caller, account_ids=body.account_ids)


@router.get("/mail-log", include_in_schema=False)
def mail_log_page(request: Request, state: str = "", kind: str = "", address: str = "") -> Response:
    """The mail log as a page (no script): what the caller may see, newest first, filtered."""
    from inbox_api import web

    signed = web._signed_in(request)
    if signed is None:
        return RedirectResponse("/login", status_code=303)
    states = [s.value for s in OutboundState]
    kinds = [k.value for k in MailKind]
    with session_scope() as session:
        rows = queue.mail_log(
            session=session,
            caller=signed[0].caller,
            states=[OutboundState(state)] if state in states else (),
            kinds=[MailKind(kind)] if kind in kinds else (),
            address=address.strip()[:320] or None,
            limit=200,
        )
    return web._page(
        request,
        "mail_log.html",
        rows=rows,
        states=states,
        kinds=kinds,
        state=state,
        kind=kind,
        address=address[:320],
    )
