"""`crm-inbox` command line. Thin: parses arguments, calls the services, prints.

Secrets are never taken as arguments (they would show in `ps` and shell history): a password
comes from standard input or from an environment variable whose *name* is given.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from datetime import UTC
from typing import Annotated, Any

import typer
from dateutil import parser as dateparser
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from core.db import get_engine, migrate, session_scope
from core.secrets import SecretBox
from core.settings import get_settings
from core.types import Security
from crm import accounts, store
from crm.errors import CrmError
from crm_inbox.cli import admin as cli_admin
from crm_inbox.cli.common import JsonOpt, err, fail, out, print_json, read_password
from crm_inbox.cli.records import register as register_record_commands
from sync.types import FolderRole

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Shared-inbox CRM e-mail sync.")
account_app = typer.Typer(no_args_is_help=True, help="Connected mail accounts.")
app.add_typer(account_app, name="account")
cli_admin.account_admin_commands(account_app)
app.add_typer(cli_admin.access_app, name="access")
app.add_typer(cli_admin.signature_app, name="signature")
app.add_typer(cli_admin.tenant_app, name="tenant")
register_record_commands(app)


@app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@app.command()
def init(
    tenant: Annotated[str, typer.Option(help="Name of the first tenant (company).")] = "My company",
    admin_email: Annotated[str, typer.Option(help="E-mail of the first admin user.")] = "admin@example.test",
    quota: Annotated[int, typer.Option(help="Mail accounts the tenant may connect.")] = 5,
    own_domain: Annotated[list[str] | None, typer.Option(help="The company's own mail domain(s).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create or upgrade the database, and the first tenant and admin if there is none."""
    engine = get_engine()
    migrate(engine)
    SecretBox.from_settings()  # creates the key file (0600) on first run
    with session_scope(engine) as session:
        existing = accounts.first_tenant(session=session)
        if existing is None:
            created = accounts.create_tenant(
                session=session, name=tenant, account_quota=quota, own_domains=own_domain or []
            )
            accounts.create_user(session=session, tenant_id=created.id or 0, email=admin_email, is_admin=True)
            result = {"tenant_id": created.id, "created": True}
        else:
            result = {"tenant_id": existing.id, "created": False}
    result["database"] = engine.url.render_as_string(hide_password=True)
    if as_json:
        print_json(result)
    else:
        what = "created" if result["created"] else "already initialised"
        out.print(f"Database ready ({result['database']}); tenant {result['tenant_id']} {what}.")


@account_app.command("add")
def account_add(
    email: Annotated[str, typer.Option(help="The mailbox address.")],
    imap_host: Annotated[str, typer.Option()],
    username: Annotated[str | None, typer.Option(help="Login (default: the e-mail).")] = None,
    imap_port: Annotated[int | None, typer.Option(help="Default 993 for tls, 143 otherwise.")] = None,
    security: Annotated[Security, typer.Option(help="tls (implicit), starttls, or plain.")] = Security.TLS,
    ca_file: Annotated[str | None, typer.Option(help="CA bundle for a private certificate.")] = None,
    smtp_host: Annotated[str | None, typer.Option()] = None,
    smtp_port: Annotated[int | None, typer.Option()] = None,
    smtp_security: Annotated[Security | None, typer.Option()] = None,
    display_name: Annotated[str, typer.Option()] = "",
    since: Annotated[str | None, typer.Option(help="First sync only takes mail since this date.")] = None,
    interval: Annotated[int | None, typer.Option(help="Seconds between syncs.")] = None,
    tenant_id: Annotated[int | None, typer.Option("--tenant")] = None,
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
    password_env: Annotated[
        str | None, typer.Option("--password-env", help="Env variable holding it.")
    ] = None,
    no_check: Annotated[bool, typer.Option("--no-check", help="Save without logging in first.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Save even if the login check fails.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Connect a mailbox: logs in over IMAP (and SMTP when given) before saving."""
    from crm import admin
    from sync.check import make_verifier

    settings = get_settings()
    password = read_password(password_stdin, password_env)
    port = imap_port or (993 if security is Security.TLS else 143)
    sync_since = dateparser.parse(since).replace(tzinfo=UTC) if since else None
    data = accounts.AccountInput(
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
    try:
        with session_scope() as session:
            tenant = accounts.get_tenant(session=session, tenant_id=tenant_id)
            saved = admin.connect_account(
                session=session,
                tenant_id=tenant.id or 0,
                data=data,
                password=password,
                box=SecretBox.from_settings(),
                verify=None if no_check else make_verifier(settings),
                force=force,
            )
            account_id = saved.account.id
    except CrmError as exc:
        raise fail(str(exc)) from None
    check = saved.check.message if saved.check else "Not checked (--no-check)."
    result = {"id": account_id, "email": email.lower(), "check": check}
    if as_json:
        print_json(result)
    else:
        out.print(f"Account {account_id} ({email}) added. {check}")


@account_app.command("password")
def account_password(
    account_id: int,
    password_stdin: Annotated[bool, typer.Option("--password-stdin")] = False,
    password_env: Annotated[str | None, typer.Option("--password-env")] = None,
) -> None:
    """Replace an account's password (ends a 'needs new credentials' pause)."""
    password = read_password(password_stdin, password_env)
    try:
        with session_scope() as session:
            accounts.set_password(
                session=session, account_id=account_id, password=password, box=SecretBox.from_settings()
            )
    except CrmError as exc:
        raise fail(str(exc)) from None
    out.print(f"Password of account {account_id} updated.")


@account_app.command("list")
def account_list(as_json: JsonOpt = False) -> None:
    """Each account's state and the last successful sync of each folder."""
    with session_scope() as session:
        views = accounts.list_accounts(session=session)
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
            view.status.value,
            when(FolderRole.INBOX),
            when(FolderRole.SENT),
            view.last_error or "",
        )
    out.print(table)


@account_app.command("skipped")
def account_skipped(
    account_id: Annotated[int | None, typer.Argument(help="Only this account.")] = None,
    limit: Annotated[int, typer.Option(help="Newest first, at most this many.")] = 200,
    tenant_id: Annotated[int | None, typer.Option("--tenant")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Mail that was not synced as conversation mail, with the reason (e.g. over 100 recipients)."""
    with session_scope() as session:
        tenant = accounts.get_tenant(session=session, tenant_id=tenant_id)
        rows = accounts.list_skipped(
            session=session, tenant_id=tenant.id or 0, account_id=account_id, limit=limit
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


@account_app.command("reset-folder")
def account_reset_folder(account_id: int, role: FolderRole) -> None:
    """Allow resyncs again on a folder paused for an unstable UIDVALIDITY."""
    from sqlmodel import select

    from crm.models import FolderState

    with session_scope() as session:
        folder = session.exec(
            select(FolderState).where(FolderState.account_id == account_id, FolderState.role == role)
        ).first()
        if folder is None or folder.id is None:
            raise fail(f"account {account_id} has no {role.value} folder state yet.")
        store.reset_folder(session=session, folder_id=folder.id)
    out.print(f"Folder {role.value} of account {account_id} reset.")


@app.command()
def sync(
    once: Annotated[bool, typer.Option("--once", help="One pass over the accounts, then exit.")] = False,
    account: Annotated[int | None, typer.Option("--account", help="Only this account.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Sync INBOX and Sent of every active account once (use `run` for the scheduler)."""
    if not once:
        raise fail("use `crm-inbox sync --once` for one pass, or `crm-inbox run` for the scheduler.", 2)
    from sync.engine import SyncEngine

    with session_scope() as session:
        ids = (
            [account] if account is not None else [i for i, _ in store.syncable_account_ids(session=session)]
        )
    show_progress = not as_json and err.is_terminal
    summaries = []
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=not show_progress,
        transient=True,
    ) as progress:
        tasks: dict[tuple[int, FolderRole], Any] = {}

        def on_progress(account_id: int, role: FolderRole, done: int, total: int) -> None:
            key = (account_id, role)
            if key not in tasks:
                tasks[key] = progress.add_task(f"account {account_id} {role.value}", total=total)
            progress.update(tasks[key], completed=done)

        with SyncEngine(progress=on_progress) as engine:
            for account_id in ids:
                # --account names one explicitly: run it now even while it is backing off.
                summaries.append(engine.sync_account(account_id, ignore_backoff=account is not None))
    if as_json:
        print_json(
            [{k: v for k, v in dataclasses.asdict(s).items() if k != "folder_problems"} for s in summaries]
        )
    else:
        table = Table(
            "account", "email", "result", "new", "skipped", "malformed", "quarantined", "expunged", "errors"
        )
        for s in summaries:
            result = s.status if not s.skip_reason else f"skipped: {s.skip_reason}"
            table.add_row(
                str(s.account_id),
                s.email,
                result,
                str(s.new_messages),
                _skipped_text(s.skipped, s.skipped_reasons),
                str(s.malformed),
                str(s.quarantined),
                str(s.expunged),
            )
        out.print(table)
        # Errors below the table, unwrapped: they are sentences meant to be read whole.
        for s in summaries:
            for error in s.errors:
                out.print(f"account {s.account_id} ({s.email}): {error}", soft_wrap=True, highlight=False)
    if any(s.status == "failed" for s in summaries):
        raise typer.Exit(1)


_REASONS = {"too_many_recipients": "over the recipient limit"}


def _skipped_text(count: int, reasons: dict[str, int]) -> str:
    if not count:
        return "0"
    return f"{count} (" + ", ".join(f"{n} {_REASONS.get(r, r)}" for r, n in sorted(reasons.items())) + ")"


@app.command()
def run() -> None:
    """Run the scheduler: each active account synced at its interval until SIGTERM/SIGINT."""
    from sync.engine import SyncEngine
    from sync.scheduler import Worker

    logging.getLogger().setLevel(logging.INFO)
    with SyncEngine() as engine:
        Worker(engine).run()


def main() -> None:
    try:
        app()
    except CrmError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        sys.exit(1)
