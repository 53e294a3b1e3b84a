"""`crm-inbox account ...`: connect, edit, test, password, lifecycle, list, skipped mail.

Thin: parse, call `crm.mailboxes` acting as the tenant's operator, print. Domain errors are
reported by `crm_inbox.cli.errors` (no command catches them). Connection checks are composed
here: `sync.check.make_verifier` is injected into `crm.mailboxes` (`crm` does not import
`sync`), and the service runs it with no database session open (it is given `session_scope`).
"""

from __future__ import annotations

from datetime import UTC
from typing import Annotated, Any

import typer
from dateutil import parser as dateparser
from pydantic import SecretStr
from rich.table import Table

from core.caller import Caller
from core.db import session_scope
from core.secrets import SecretBox
from core.settings import get_settings
from core.types import FolderRole, Security
from crm import mailboxes
from crm_inbox.cli.common import (
    JsonOpt,
    TenantOpt,
    account_app,
    emit,
    err,
    jsonable,
    operator,
    out,
    print_json,
    read_password,
    say,
    warn,
)


def _optional_password(stdin: bool, env: str | None) -> SecretStr | None:
    if not stdin and not env:
        return None
    return read_password(stdin, env)


def _caller_for(tenant: int | None) -> Caller:
    """The operator of the tenant, resolved in a short session of its own (the service opens
    its own around the connection check)."""
    with session_scope() as session:
        return operator(session, tenant)


@account_app.command("add")
def account_add(
    email: Annotated[str, typer.Option(help="The mailbox address.")],
    imap_host: Annotated[str, typer.Option()],
    username: Annotated[str | None, typer.Option(help="Login (default: the e-mail).")] = None,
    imap_port: Annotated[int | None, typer.Option(help="Default 993 for tls, 143 otherwise.")] = None,
    security: Annotated[Security, typer.Option(help="tls (implicit), starttls, or plain.")] = Security.TLS,
    ca_file: Annotated[str | None, typer.Option(help="CA bundle for a private certificate.")] = None,
    smtp_host: Annotated[
        str | None,
        typer.Option(help="SMTP server; saved only once a test mail to --smtp-test-to was accepted."),
    ] = None,
    smtp_port: Annotated[int | None, typer.Option(help="Default: 587, 465 or 25 by --smtp-security.")] = None,
    smtp_security: Annotated[
        Security | None, typer.Option(help="starttls (default, usually 587), tls (implicit, 465) or plain.")
    ] = None,
    smtp_username: Annotated[str | None, typer.Option(help="Default: the IMAP username.")] = None,
    smtp_password_env: Annotated[
        str | None,
        typer.Option("--smtp-password-env", help="Env variable holding it (default: the IMAP one)."),
    ] = None,
    smtp_test_to: Annotated[
        str | None, typer.Option("--smtp-test-to", help="Where the SMTP test mail goes (required with SMTP).")
    ] = None,
    display_name: Annotated[str, typer.Option()] = "",
    since: Annotated[str | None, typer.Option(help="First sync only takes mail since this date.")] = None,
    interval: Annotated[int | None, typer.Option(help="Seconds between syncs.")] = None,
    tenant: TenantOpt = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
    password_env: Annotated[
        str | None, typer.Option("--password-env", help="Env variable holding it.")
    ] = None,
    no_check: Annotated[bool, typer.Option("--no-check", help="Save without logging in first.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Save even if the login check fails.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Connect a mailbox: logs in over IMAP before saving. With --smtp-host, a test mail is sent
    to --smtp-test-to and the account is created only once the server accepted it (else the
    cause is said and nothing is saved; leave SMTP out and run smtp-setup later to connect the
    mailbox first). --no-check and --force concern the IMAP login only."""
    from sync.check import make_verifier
    from sync.smtp_setup import make_test_sender

    settings = get_settings()
    password = read_password(password_stdin, password_env)
    port = imap_port or (993 if security is Security.TLS else 143)
    sync_since = dateparser.parse(since).replace(tzinfo=UTC) if since else None
    data = mailboxes.AccountInput(
        email=email,
        imap_host=imap_host,
        imap_port=port,
        imap_security=security,
        username=username or email,
        display_name=display_name,
        smtp_host=smtp_host,
        smtp_port=smtp_port,
        smtp_security=smtp_security,
        ca_file=ca_file,
        sync_interval_seconds=interval or settings.default_sync_interval_seconds,
        sync_since=sync_since,
    )
    saved = mailboxes.connect_account(
        sessions=session_scope,
        caller=_caller_for(tenant),
        data=data,
        password=password,
        box=SecretBox.from_settings(),
        smtp=mailboxes.SmtpInput(
            host=smtp_host,
            port=smtp_port,
            security=smtp_security,
            username=smtp_username,
            password=_optional_password(False, smtp_password_env),
            test_to=smtp_test_to,
        ),
        verify=None if no_check else make_verifier(settings),
        force=force,
        send_test=make_test_sender(settings),
    )
    if saved.check is not None and not saved.check.ok:
        warn(f"saved despite a failing check: {saved.check.message}")
    check = saved.check.message if saved.check else "Not checked (--no-check)."
    sending = (
        f"SMTP {saved.account.smtp}: the test mail to {smtp_test_to} was accepted."
        if saved.account.smtp
        else "No SMTP (set it up with crm-inbox smtp-setup)."
    )
    result = {
        "id": saved.account.id,
        "email": saved.account.email,
        "check": check,
        "smtp": saved.account.smtp,
    }
    emit(as_json, result, f"Account {saved.account.id} ({saved.account.email}) added. {check} {sending}")


@account_app.command("password")
def account_password(
    account_id: int,
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
    password_env: Annotated[str | None, typer.Option("--password-env")] = None,
    tenant: TenantOpt = None,
) -> None:
    """Replace an account's password (ends a 'needs new credentials' pause)."""
    password = read_password(password_stdin, password_env)
    with session_scope() as session:
        mailboxes.set_password(
            session=session,
            caller=operator(session, tenant),
            account_id=account_id,
            password=password,
            box=SecretBox.from_settings(),
        )
    say(f"Password of account {account_id} updated.")


@account_app.command("list")
def account_list(tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Each account's state and the last successful sync of each folder."""
    with session_scope() as session:
        views = mailboxes.list_accounts(session=session, caller=operator(session, tenant))
    if as_json:
        print_json(views)
        return
    table = Table("id", "email", "active", "status", "INBOX last sync", "Sent last sync", "last error")
    for view in views:
        folders = {f.role: f for f in view.folders}

        def when(role: FolderRole, folders: dict[Any, Any] = folders) -> str:
            folder = folders.get(role)
            if folder is None or folder.last_success_at is None:
                return "never"
            return f"{folder.last_success_at:%Y-%m-%d %H:%M:%S}"

        table.add_row(
            str(view.id),
            view.email,
            "yes" if view.active else "no",
            view.status.value if view.oauth is None else f"{view.status.value} ({_login_text(view)})",
            when(FolderRole.INBOX),
            when(FolderRole.SENT),
            view.last_error or "",
        )
    out.print(table)


def _login_text(view: mailboxes.AccountView) -> str:
    """How the account logs in: its password, or OAuth with the provider and the grant's state."""
    if view.oauth is None:
        return "password"
    state = "" if view.oauth.state == "connected" else ", needs to be reconnected"
    return f"OAuth {view.oauth.provider}{state}"


@account_app.command("show")
def account_show(account_id: int, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """One account: servers, state, last error, folders, and for OAuth the provider, granted
    scopes and when its token was last refreshed (never a token or a password)."""
    with session_scope() as session:
        view = mailboxes.get_account(session=session, caller=operator(session, tenant), account_id=account_id)
    if as_json:
        print_json(view)
        return
    stamp = "%Y-%m-%d %H:%M:%S UTC"
    lines = [
        f"Account {view.id}: {view.email}" + (f" ({view.display_name})" if view.display_name else ""),
        f"  status: {view.status.value}{'' if view.active else ' (deactivated)'}",
        f"  IMAP: {view.imap}; SMTP: {view.smtp or 'not set'}; username: {view.username}",
        f"  login: {_login_text(view)}",
    ]
    if view.oauth is not None:
        refreshed = f"{view.oauth.refreshed_at:{stamp}}" if view.oauth.refreshed_at else "not yet"
        lines += [
            f"  scopes: {' '.join(view.oauth.scopes) or '(none reported)'}",
            f"  connected: {view.oauth.connected_at:{stamp}}; token last refreshed: {refreshed}",
        ]
    if view.last_error:
        lines.append(f"  last error: {view.last_error}")
    for folder in view.folders:
        synced = f"{folder.last_success_at:{stamp}}" if folder.last_success_at else "never"
        lines.append(f"  {folder.role.value}: {folder.name}, last sync {synced}")
    for line in lines:
        out.print(line, highlight=False, markup=False)


@account_app.command("skipped")
def account_skipped(
    account_id: Annotated[int | None, typer.Argument(help="Only this account.")] = None,
    limit: Annotated[int, typer.Option(help="Newest first, at most this many.")] = 200,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Mail that was not synced as conversation mail, with the reason (e.g. over 100 recipients)."""
    with session_scope() as session:
        rows = mailboxes.list_skipped(
            session=session, caller=operator(session, tenant), account_id=account_id, limit=limit
        )
    if as_json:
        print_json(rows)
        return
    table = Table("account", "date (UTC)", "from", "subject", "recipients", "reason")
    for row in rows:
        when = f"{row.date:%Y-%m-%d %H:%M}" if row.date else ""
        table.add_row(
            str(row.account_id), when, row.from_email, row.subject, str(row.recipient_count), row.reason
        )
    out.print(table)


@account_app.command("deactivate")
def account_deactivate(account_id: int, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Stop syncing an account and hide it from inboxes; its mail is kept."""
    with session_scope() as session:
        view = mailboxes.deactivate_account(
            session=session, caller=operator(session, tenant), account_id=account_id
        )
    emit(as_json, view, f"Account {account_id} ({view.email}) deactivated; its mail is kept.")


@account_app.command("activate")
def account_activate(account_id: int, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Reactivate an account: sync resumes where it stopped (counts towards the quota)."""
    with session_scope() as session:
        view = mailboxes.reactivate_account(
            session=session, caller=operator(session, tenant), account_id=account_id
        )
    emit(as_json, view, f"Account {account_id} ({view.email}) is active; sync resumes where it stopped.")


@account_app.command("delete")
def account_delete(account_id: int, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Delete an account nobody uses and whose mail was never processed."""
    with session_scope() as session:
        mailboxes.delete_account(session=session, caller=operator(session, tenant), account_id=account_id)
    emit(as_json, {"id": account_id, "deleted": True}, f"Account {account_id} deleted.")


@account_app.command("test")
def account_test(account_id: int, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Log in with the stored settings (IMAP, and SMTP when set) and report the problem, if any."""
    from core.db import get_engine
    from sync.check import verify_connection
    from sync.oauth_flow import connection_settings

    with session_scope() as session:
        caller = operator(session, tenant)
    # An OAuth account is tested with a fresh access token in place of the password.
    settings = connection_settings(
        sessions=session_scope,
        caller=caller,
        account_id=account_id,
        box=SecretBox.from_settings(),
        db=get_engine(),
        settings=get_settings(),
    )
    # The session is closed: the servers may take their time.
    result = verify_connection(settings, config=get_settings())
    if as_json:
        print_json({"id": account_id, **jsonable(result)})
    elif result.ok:
        say(f"Account {account_id}: {result.message}")
    if not result.ok:
        if not as_json:
            err.print(f"[red]error:[/red] {result.message}", highlight=False, markup=False)
        raise typer.Exit(1)


@account_app.command("edit")
def account_edit(
    account_id: int,
    display_name: Annotated[str | None, typer.Option()] = None,
    imap_host: Annotated[str | None, typer.Option()] = None,
    imap_port: Annotated[int | None, typer.Option()] = None,
    security: Annotated[Security | None, typer.Option(help="IMAP: tls, starttls or plain.")] = None,
    username: Annotated[str | None, typer.Option()] = None,
    ca_file: Annotated[str | None, typer.Option(help="CA bundle; '' removes it.")] = None,
    # SMTP is set with `crm-inbox smtp-setup` (saved after a test mail); here '' only removes it.
    # The other SMTP flags stay (hidden) so an old script gets that hint instead of "no such option".
    smtp_host: Annotated[
        str | None, typer.Option(help="Only '' (removes SMTP); set SMTP with crm-inbox smtp-setup.")
    ] = None,
    smtp_port: Annotated[int | None, typer.Option(hidden=True)] = None,
    smtp_security: Annotated[Security | None, typer.Option(hidden=True)] = None,
    smtp_username: Annotated[str | None, typer.Option(hidden=True)] = None,
    interval: Annotated[int | None, typer.Option(help="Seconds between syncs.")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin", help="New IMAP password.")] = False,
    password_env: Annotated[str | None, typer.Option("--password-env")] = None,
    smtp_password_stdin: Annotated[bool, typer.Option("--smtp-password-stdin", hidden=True)] = False,
    smtp_password_env: Annotated[str | None, typer.Option("--smtp-password-env", hidden=True)] = None,
    same_smtp_password: Annotated[bool, typer.Option("--same-smtp-password", hidden=True)] = False,
    no_check: Annotated[bool, typer.Option("--no-check", help="Save without logging in first.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Save even if the login check fails.")] = False,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change an account's settings; new connection settings are checked by logging in first."""
    from core.db import get_engine
    from sync.oauth_flow import verifier_for_account

    changes = mailboxes.AccountChanges(
        display_name=display_name,
        imap_host=imap_host,
        imap_port=imap_port,
        imap_security=security,
        username=username,
        password=_optional_password(password_stdin, password_env),
        ca_file=ca_file,
        smtp_host=smtp_host,
        smtp_port=smtp_port,
        smtp_security=smtp_security,
        smtp_username=smtp_username,
        smtp_password=_optional_password(smtp_password_stdin, smtp_password_env),
        clear_smtp_password=same_smtp_password,
        sync_interval_seconds=interval,
    )
    saved = mailboxes.edit_account(
        sessions=session_scope,
        caller=_caller_for(tenant),
        account_id=account_id,
        changes=changes,
        box=SecretBox.from_settings(),
        verify=None
        if no_check
        else verifier_for_account(
            account_id, db=get_engine(), box=SecretBox.from_settings(), settings=get_settings()
        ),
        force=force,
    )
    check = saved.check.message if saved.check else ("skipped" if no_check else "not needed")
    if saved.check is not None and not saved.check.ok:
        warn(f"saved despite a failing check: {saved.check.message}")
    emit(
        as_json, {**jsonable(saved.account), "check": check}, f"Account {account_id} updated. Check: {check}"
    )
