"""`crm-inbox` command line. Thin: parses arguments, calls the services, prints.

Secrets are never taken as arguments (they would show in `ps` and shell history): a password
comes from standard input or from an environment variable whose *name* is given.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from core.caller import Caller
from core.db import get_engine, migrate, session_scope
from core.errors import DomainError
from core.secrets import SecretBox
from crm import store, tenants
from crm_inbox.cli import admin as cli_admin
from crm_inbox.cli.accounts import account_app
from crm_inbox.cli.common import JsonOpt, err, fail, out, print_json
from crm_inbox.cli.errors import HandledGroup, report
from crm_inbox.cli.records import register as register_record_commands
from crm_inbox.cli.serve import register as register_serve
from crm_inbox.cli.users import token_app, user_app
from sync.types import FolderRole

app = typer.Typer(
    cls=HandledGroup, no_args_is_help=True, add_completion=False, help="Shared-inbox CRM e-mail sync."
)
app.add_typer(account_app, name="account")
app.add_typer(cli_admin.access_app, name="access")
app.add_typer(cli_admin.signature_app, name="signature")
app.add_typer(cli_admin.tenant_app, name="tenant")
register_record_commands(app)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
register_serve(app)


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
    """Create or upgrade the database, and the first tenant and its admin user if there is none."""
    engine = get_engine()
    migrate(engine)
    SecretBox.from_settings()  # creates the key file (0600) on first run
    with session_scope(engine) as session:
        existing = tenants.list_tenants(session=session)
        if not existing:
            created = tenants.create_tenant(
                session=session, name=tenant, account_quota=quota, own_domains=own_domain or []
            )
            tenants.create_user(
                session=session, caller=Caller.operator(created.id), email=admin_email, is_admin=True
            )
            result: dict[str, Any] = {"tenant_id": created.id, "created": True}
        else:
            result = {"tenant_id": existing[0].id, "created": False}
    result["database"] = engine.url.render_as_string(hide_password=True)
    if as_json:
        print_json(result)
    else:
        what = "created" if result["created"] else "already initialised"
        out.print(f"Database ready ({result['database']}); tenant {result['tenant_id']} {what}.")


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
    except DomainError as exc:  # raised outside a command (the group handles those inside)
        report(exc)
        sys.exit(1)
