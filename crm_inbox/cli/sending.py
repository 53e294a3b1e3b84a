"""`crm-inbox sending ...` and `crm-inbox notifications templates ...`: the tenant's system mail
(how notification mail leaves, the branded sender address and its verification, notification
mail on or off) and the wording of each notification event, as the API offers them.

The operator acts as the tenant's administrator. A template is read from a file (`--file`, a
JSON object with "subject", "text" and "html", or a directory holding subject.txt, text.txt and
body.html): templates are multi-line and jinja2, which argv mangles.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from core.db import session_scope
from crm.outbound import notifications, senders, system_mail
from crm.outbound.system_mail import SendingMode, SendingView
from crm_inbox.cli.common import JsonOpt, TenantOpt, emit, fail, operator, print_json, say

sending_app = typer.Typer(help="How the tenant's notification and system mail is sent.", no_args_is_help=True)
notifications_app = typer.Typer(help="Notification mail.", no_args_is_help=True)
templates_app = typer.Typer(help="The wording of each notification event.", no_args_is_help=True)
notifications_app.add_typer(templates_app, name="templates")

MAX_FILE = 4 * notifications.MAX_TEMPLATE  # three parts and JSON quoting, nothing more


def register(app: typer.Typer) -> None:
    app.add_typer(sending_app, name="sending")
    app.add_typer(notifications_app, name="notifications")


def _describe(view: SendingView) -> str:
    mode = {
        SendingMode.DEFAULT: "the deployment's sender",
        SendingMode.BRANDED: "a branded (verified) address through the deployment's SMTP",
        SendingMode.OWN: f"the tenant's own SMTP (account {view.own_account_id})",
    }[view.mode]
    lines = [
        f"Mode: {view.mode.value} ({mode})",
        f"Notification mail goes from: {view.effective_name} <{view.effective_from}> via {view.via}",
        f"Verified sender address: {view.from_email or 'none'}",
        f"Notification mail: {'on' if view.notifications_enabled else 'off'}",
    ]
    if not view.deployment_smtp_configured and view.via == "deployment":
        lines.append("Warning: the deployment's SMTP is not configured (CRM_INBOX_SYSTEM_SMTP_HOST).")
    return "\n".join(lines)


@sending_app.command("show")
def sending_show(tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """The sending mode, the sender in use, and the addresses waiting for verification."""
    with session_scope() as session:
        caller = operator(session, tenant)
        view = system_mail.get_sending(session=session, caller=caller)
        waiting = senders.pending(session=session, caller=caller)
    if as_json:
        print_json({"sending": view, "pending_senders": waiting})
        return
    say(_describe(view))
    for p in waiting:
        resend = f", resend from {p.next_resend_at:%Y-%m-%d %H:%M:%S} UTC" if p.next_resend_at else ""
        say(f"Waiting for verification: #{p.id} {p.email} (sent {p.sends} times{resend})")


@sending_app.command("mode")
def sending_mode(
    mode: Annotated[SendingMode, typer.Argument(help="default, branded or own (recommended).")],
    account: Annotated[
        int | None, typer.Option("--account", help="With own: the account whose SMTP sends.")
    ] = None,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Choose how notification mail leaves: own needs an account with SMTP set up (smtp-setup),
    branded a verified address (crm-inbox sending sender ADDRESS)."""
    with session_scope() as session:
        view = system_mail.set_sending(
            session=session, caller=operator(session, tenant), mode=mode, own_account_id=account
        )
    emit(as_json, view, _describe(view))


@sending_app.command("notifications")
def sending_notifications(
    state: Annotated[str, typer.Argument(help="on or off: all notification mail of the tenant.")],
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Turn the tenant's notification mail on or off (password-reset and verification mail are
    always sent)."""
    if state not in ("on", "off"):
        raise fail("say on or off.")
    with session_scope() as session:
        view = system_mail.set_sending(
            session=session, caller=operator(session, tenant), notifications_enabled=state == "on"
        )
    emit(as_json, view, _describe(view))


@sending_app.command("sender")
def sending_sender(
    email: Annotated[str, typer.Argument(help="The address notification mail should come from.")],
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Verify a new sender address: a link valid 24 h is mailed to it. The verified address in
    use stays until the new one is confirmed."""
    with session_scope() as session:
        view = senders.request_verification(session=session, caller=operator(session, tenant), email=email)
    emit(
        as_json,
        view,
        f"A verification link was queued for {view.email} (request #{view.id}); open it within 24 h. "
        f"Resend with: crm-inbox sending verify-resend {view.id}",
    )


@sending_app.command("verify-resend")
def sending_verify_resend(
    request_id: Annotated[int, typer.Argument(help="The request's id (crm-inbox sending show).")],
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mail the verification link again (the old link stops working); once a minute, five times."""
    with session_scope() as session:
        view = senders.resend(session=session, caller=operator(session, tenant), request_id=request_id)
    emit(as_json, view, f"The verification link was queued again for {view.email} ({view.sends} sends).")


# ---------------------------------------------------------------------------------------------
# Templates


def _template_text(view: notifications.TemplateView) -> str:
    origin = "customized" if view.customized else "built-in"
    return (
        f"{view.event.value} ({origin})\nmerge tags: {', '.join(view.merge_tags)}\n"
        f"subject: {view.subject}\n--- text ---\n{view.text}\n--- html ---\n{view.html}"
    )


@templates_app.command("list")
def templates_list(tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Every event, whether the tenant reworded it, and its merge tags."""
    with session_scope() as session:
        views = notifications.list_templates(session=session, caller=operator(session, tenant))
    if as_json:
        print_json(views)
        return
    for v in views:
        origin = "customized" if v.customized else "built-in"
        say(f"{v.event.value:<22} {origin:<10} tags: {', '.join(v.merge_tags)}")


@templates_app.command("show")
def templates_show(event: str, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """One event's wording (the tenant's, else the built-in one) and its merge tags."""
    with session_scope() as session:
        view = notifications.get_template(session=session, caller=operator(session, tenant), event=event)
    emit(as_json, view, _template_text(view))


def _read_template(path: Path) -> tuple[str, str, str]:
    """(subject, text, html) from a JSON file or a directory of three files."""
    if path.is_dir():
        parts = {name: path / name for name in ("subject.txt", "text.txt", "body.html")}
        missing = [n for n, p in parts.items() if not p.is_file()]
        if missing:
            raise fail(f"{path} lacks {', '.join(missing)} (a template directory holds all three).")
        values = [_read_small(p) for p in parts.values()]
        return values[0].strip(), values[1], values[2]
    data = _read_small(path)
    try:
        parsed = json.loads(data)
    except json.JSONDecodeError as exc:
        raise fail(f"{path} is not JSON ({exc.msg} at line {exc.lineno}).") from exc
    if not isinstance(parsed, dict) or not all(
        isinstance(parsed.get(k), str) for k in ("subject", "text", "html")
    ):
        raise fail(f'{path} must be a JSON object with "subject", "text" and "html" strings.')
    return parsed["subject"], parsed["text"], parsed["html"]


def _read_small(path: Path) -> str:
    if not path.is_file():
        raise fail(f"{path} is not a readable file.")
    if path.stat().st_size > MAX_FILE:
        raise fail(f"{path} is larger than a template may be ({MAX_FILE} bytes).")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise fail(f"{path} cannot be read as UTF-8 text ({exc}).") from exc


FileOpt = Annotated[
    Path,
    typer.Option(
        "--file",
        help='A JSON object {"subject", "text", "html"}, or a directory with subject.txt, text.txt '
        "and body.html.",
    ),
]


@templates_app.command("set")
def templates_set(event: str, file: FileOpt, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Reword one event; merge tags the event does not have and bad syntax are refused here."""
    subject, text, html = _read_template(file)
    with session_scope() as session:
        view = notifications.save_template(
            session=session,
            caller=operator(session, tenant),
            event=event,
            subject=subject,
            text=text,
            html=html,
        )
    emit(
        as_json,
        view,
        f"Saved the wording of {view.event.value}. "
        f"Preview: crm-inbox notifications templates preview {view.event.value}",
    )


@templates_app.command("reset")
def templates_reset(event: str, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Back to the built-in wording."""
    with session_scope() as session:
        view = notifications.reset_template(session=session, caller=operator(session, tenant), event=event)
    emit(as_json, view, f"{view.event.value} uses the built-in wording again.")


@templates_app.command("preview")
def templates_preview(
    event: str,
    file: Annotated[
        Path | None, typer.Option("--file", help="Preview this wording instead of the saved one.")
    ] = None,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The event's mail filled with sample values (the saved wording, or the one in --file)."""
    subject = text = html = None
    if file is not None:
        subject, text, html = _read_template(file)
    with session_scope() as session:
        shown = notifications.preview(
            session=session,
            caller=operator(session, tenant),
            event=event,
            subject=subject,
            text=text,
            html=html,
        )
    emit(as_json, shown, f"Subject: {shown.subject}\n\n{shown.text}\n--- html ---\n{shown.html}")
