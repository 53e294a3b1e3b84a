"""`crm-inbox send`, `crm-inbox mail-log`, `crm-inbox send-queue` and `crm-inbox smtp-setup`:
outgoing mail for scripts.

Mail is always sent by a user of the tenant (`--user`), from an account that user may send from,
exactly as over the API. Scripts have nobody to press "undo", so the undo delay is 0 here unless
asked; `--now` works the queue at once instead of leaving it to the scheduler.
"""

from __future__ import annotations

import html
import mimetypes
from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from core.db import get_engine, session_scope
from core.secrets import SecretBox
from core.settings import get_settings
from core.types import Security
from crm import access, tenants
from crm.outbound import compose, limits, queue, smtp_setup
from crm.outbound.views import LimitUnit, MailKind, OutboundState, OutboundView
from crm_inbox.cli.common import JsonOpt, TenantOpt, emit, fail, operator, print_json, read_password, say
from sync.send_queue import work_queue

UserOpt = Annotated[str, typer.Option("--user", help="The sending user (id or e-mail).")]


def register(app: typer.Typer) -> None:
    app.command("send")(send)
    app.command("mail-log")(mail_log)
    app.command("send-queue")(send_queue)
    app.command("smtp-setup")(smtp_setup_command)
    app.command("daily-limit")(daily_limit)


def _line(view: OutboundView) -> str:
    to = ", ".join(r.email for r in (*view.to, *view.cc, *view.bcc))
    answer = f" [{view.last_response_code} {view.last_response}]" if view.last_response_code else ""
    error = f" ({view.error_code})" if view.error_code else ""
    return (
        f"#{view.id} {view.created_at:%Y-%m-%d %H:%M:%S} {view.state.value:<9} {view.kind.value:<8} "
        f"{view.from_email} -> {to}: {view.subject!r} attempts={view.attempts}{answer}{error}"
    )


def send(
    user: UserOpt,
    to: Annotated[list[str] | None, typer.Option("--to", help="Recipient (repeat for several).")] = None,
    cc: Annotated[list[str] | None, typer.Option("--cc")] = None,
    bcc: Annotated[list[str] | None, typer.Option("--bcc")] = None,
    subject: Annotated[str | None, typer.Option("--subject")] = None,
    body: Annotated[str, typer.Option("--body", help="Plain text body.")] = "",
    html_file: Annotated[Path | None, typer.Option("--html-file", help="HTML body from a file.")] = None,
    attach: Annotated[list[Path] | None, typer.Option("--attach", help="A file to attach (repeat).")] = None,
    account: Annotated[int | None, typer.Option("--account", help="Account id to send from.")] = None,
    reply_to: Annotated[
        int | None, typer.Option("--reply-to", help="Message id to answer (with --mode).")
    ] = None,
    mode: Annotated[compose.ComposeMode, typer.Option("--mode")] = compose.ComposeMode.REPLY,
    signature: Annotated[int | None, typer.Option("--signature", help="Another signature id.")] = None,
    no_signature: Annotated[bool, typer.Option("--no-signature")] = False,
    send_at: Annotated[
        datetime | None, typer.Option("--send-at", help="Send later (ISO 8601, with zone).")
    ] = None,
    undo_seconds: Annotated[int, typer.Option("--undo-seconds")] = 0,
    now: Annotated[bool, typer.Option("--now", help="Work the send queue right away.")] = False,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Send a mail from an account (or answer a stored message with --reply-to)."""
    if html_file is not None and body:
        raise fail("give either --body or --html-file, not both.")
    content = html_file.read_text(encoding="utf-8") if html_file is not None else ""
    if not content and body:
        content = "".join(f"<p>{html.escape(p).replace(chr(10), '<br>')}</p>" for p in body.split("\n\n"))
    files = tuple(
        compose.AttachmentIn(
            p.name, mimetypes.guess_type(p.name)[0] or "application/octet-stream", p.read_bytes()
        )
        for p in attach or ()
    )
    draft = compose.Draft(
        html=content,
        to=tuple(to or ()),
        cc=tuple(cc or ()),
        bcc=tuple(bcc or ()),
        subject=subject,
        signature_id=signature,
        no_signature=no_signature,
        attachments=files,
    )
    with session_scope() as session:
        op = operator(session, tenant)
        sender = tenants.find_user(session=session, caller=op, ref=user)
        caller = access.caller_for_user(session=session, tenant_id=op.tenant_id, user_id=sender.id)
        result = compose.send_mail(
            session=session,
            caller=caller,
            draft=draft,
            mode=mode if reply_to is not None else compose.ComposeMode.COMPOSE,
            account_id=account,
            message_pk=reply_to,
            send_at=send_at,
            undo_seconds=undo_seconds,
        )
    assert result.mail is not None  # no opened_at from the command line: never held
    outbound_id = result.mail.id
    if now:
        work_queue()
        with session_scope() as session:
            mail = queue.get_outbound(session=session, caller=caller, outbound_id=outbound_id)
    else:
        mail = result.mail
    emit(as_json, mail, _line(mail))


def mail_log(
    state: Annotated[list[OutboundState] | None, typer.Option("--state")] = None,
    kind: Annotated[list[MailKind] | None, typer.Option("--kind")] = None,
    since: Annotated[datetime | None, typer.Option("--since", help="ISO 8601, with zone.")] = None,
    until: Annotated[datetime | None, typer.Option("--until")] = None,
    address: Annotated[str | None, typer.Option("--address", help="Sender or recipient.")] = None,
    account: Annotated[int | None, typer.Option("--account")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 100,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Every outgoing mail of the tenant, newest first."""
    with session_scope() as session:
        rows = queue.mail_log(
            session=session,
            caller=operator(session, tenant),
            states=state or (),
            kinds=kind or (),
            since=since,
            until=until,
            address=address,
            account_id=account,
            limit=limit,
        )
    if as_json:
        print_json(rows)
        return
    for row in rows:
        say(_line(row))
    if not rows:
        say("No outgoing mail.")


def send_queue(as_json: JsonOpt = False) -> None:
    """Work the send queue once (the scheduler does this on its own)."""
    summary = work_queue()
    emit(
        as_json,
        summary,
        f"sent {summary.sent}, deferred {summary.deferred}, failed {summary.failed}, "
        f"recovered {summary.recovered}",
    )


def smtp_setup_command(
    account_id: int,
    host: Annotated[str, typer.Option("--host", help="The SMTP server.")],
    test_to: Annotated[str, typer.Option("--test-to", help="Where the test mail goes (one you read).")],
    security: Annotated[
        Security, typer.Option("--security", help="starttls (usually 587), tls (implicit, 465) or plain.")
    ] = Security.STARTTLS,
    port: Annotated[int | None, typer.Option("--port", help="Default: 587, 465 or 25 by --security.")] = None,
    username: Annotated[
        str | None,
        typer.Option(
            "--username",
            help="Default: the saved SMTP username, else the IMAP one (OAuth: the signed-in address).",
        ),
    ] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="Read the SMTP password.")] = False,
    password_env: Annotated[str | None, typer.Option("--password-env")] = None,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set an account's (or a forwarding address's) SMTP settings: a test mail is sent first, and
    they are saved only once the server accepted it (else the cause is said in words and nothing
    is saved). An account connected with OAuth logs in with its token: give no password."""
    from sync.smtp_setup import make_test_sender

    password = read_password(password_stdin, password_env) if password_stdin or password_env else None
    with session_scope() as session:
        caller = operator(session, tenant)
    box = SecretBox.from_settings()
    saved = smtp_setup.save_smtp_settings(
        sessions=session_scope,
        caller=caller,
        account_id=account_id,
        given=smtp_setup.SmtpSettingsIn(
            host=host, security=security, port=port, username=username, password=password, test_to=test_to
        ),
        box=box,
        # An OAuth account's test logs in with its token, read (and refreshed) from the database.
        send_test=make_test_sender(get_settings(), db=get_engine(), box=box),
    )
    emit(
        as_json,
        saved,
        f"SMTP of account {account_id}: {saved.host}:{saved.port} ({saved.security.value}) as "
        f"{saved.username}. {saved.message}",
    )


def daily_limit(
    account_id: int,
    per_day: Annotated[
        int | None, typer.Option("--per-day", min=0, help="Per rolling 24 h; 0 means no limit.")
    ] = None,
    unit: Annotated[LimitUnit | None, typer.Option("--unit", help="messages or recipients.")] = None,
    default: Annotated[bool, typer.Option("--default", help="Back to the provider's default.")] = False,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show an account's daily sending limit and its use; change it with --per-day or --default."""
    with session_scope() as session:
        caller = operator(session, tenant)
        if per_day is not None or default:
            if per_day is not None and default:
                raise fail("give either --per-day or --default, not both.")
            view = limits.set_limit(
                session=session, caller=caller, account_id=account_id, per_day=per_day, unit=unit
            )
        else:
            view = limits.get_limit(session=session, caller=caller, account_id=account_id)
    cap = f"{view.per_day} {view.unit.value}" if view.per_day is not None else "none"
    free = f", next frees up at {view.next_free_at:%Y-%m-%d %H:%M:%S} UTC" if view.next_free_at else ""
    emit(
        as_json,
        view,
        f"Account {account_id} ({view.provider}): limit {cap} per 24 h ({view.source}); used "
        f"{view.used_last_24h}, waiting {view.waiting}{free}",
    )
