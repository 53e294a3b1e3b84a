"""`crm-inbox sync`, `crm-inbox run` and `crm-inbox account reset-folder`: the sync face.

Thin: resolves the tenant and the acting operator, calls `sync`/`crm.sync_state`, prints. The
sync errors speak of the product; the hints naming this CLI's commands and flags are added
here, by code (`HINTS`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Annotated, Any

import typer

from core.caller import Caller
from core.db import session_scope
from core.settings import get_settings
from core.types import FolderRole
from crm import sync_state
from crm_inbox.cli.common import JsonOpt, TenantOpt, err, fail, out, print_json, tenant_id_of

if TYPE_CHECKING:
    from sync.account_pass import ProgressCallback

_RECONNECT = "Reconnect it with `crm-inbox account connect --account {account} --provider NAME`."
# code -> what to do about it with this CLI ({account} is the account id).
HINTS: dict[str, str] = {
    "auth_failed": "Set the new password with `crm-inbox account password {account}`.",
    "auth_stopped": "Set the new password with `crm-inbox account password {account}`.",
    "credentials_unreadable": (
        "Restore the old key (the account then resumes), or `crm-inbox account password {account}`."
    ),
    "certificate_untrusted": "Give the CA file with `crm-inbox account edit {account} --ca-file PATH`.",
    "oauth_reconnect_needed": _RECONNECT,
    "oauth_disconnected": _RECONNECT,
    "uidvalidity_unstable": "Reset it with `crm-inbox account reset-folder {account} ROLE` (inbox or sent).",
}


def hint(code: str | None, account_id: int) -> str:
    template = HINTS.get(code or "")
    return " " + template.format(account=account_id) if template else ""


def register(app: typer.Typer, account_app: typer.Typer) -> None:
    """Add the sync commands to the main app and `reset-folder` to the `account` group."""
    app.command("sync")(sync)
    app.command("run")(run)
    account_app.command("reset-folder")(account_reset_folder)


def account_reset_folder(account_id: int, role: FolderRole, tenant: TenantOpt = None) -> None:
    """Allow resyncs again on a folder paused for an unstable UIDVALIDITY."""
    with session_scope() as session:
        caller = Caller.operator(tenant_id_of(session, tenant))
        done = sync_state.reset_folder(session=session, caller=caller, account_id=account_id, role=role)
    out.print(f"Folder {done.role.value} of account {done.account_id} reset.")


def sync(
    once: Annotated[bool, typer.Option("--once", help="One pass over the accounts, then exit.")] = False,
    account: Annotated[int | None, typer.Option("--account", help="Only this account.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Sync INBOX and Sent of every active account once (use `run` for the scheduler)."""
    if not once:
        raise fail("use `crm-inbox sync --once` for one pass, or `crm-inbox run` for the scheduler.", 2)
    from sync.account_pass import SyncEngine

    with session_scope() as session:
        ids = (
            [account]
            if account is not None
            else [i for i, _ in sync_state.syncable_account_ids(session=session)]
        )
    summaries = []
    show_progress = not as_json and err.is_terminal
    with _progress(show=show_progress) as on_progress, SyncEngine(progress=on_progress) as engine:
        for account_id in ids:
            # A person asked for a pass now: accounts backing off after errors are tried too
            # (the backoff paces the scheduler, `crm-inbox run`, not the operator).
            summaries.append(engine.sync_account(account_id, ignore_backoff=True))
    if as_json:
        print_json(summaries)
    else:
        from rich.table import Table

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
        # Errors below the table, unwrapped: they are sentences meant to be read whole. The
        # hint (this CLI's command for the fix) follows the error it belongs to.
        for s in summaries:
            codes = [p.code for p in s.folder_problems] + ([s.failure.code] if s.failure else [])
            for error, code in zip(s.errors, codes + [None] * len(s.errors), strict=False):
                text = f"account {s.account_id} ({s.email}): {error}{hint(code, s.account_id)}"
                out.print(text, soft_wrap=True, highlight=False)
    if any(s.status == "failed" for s in summaries):
        raise typer.Exit(1)


@contextmanager
def _progress(*, show: bool) -> Iterator[ProgressCallback | None]:
    """A progress bar per folder on a terminal; nothing otherwise (rich's progress machinery is
    then not even imported: `sync --once --json` in cron or a script starts faster)."""
    if not show:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as progress:
        tasks: dict[tuple[int, FolderRole], Any] = {}

        def on_progress(account_id: int, role: FolderRole, done: int, total: int) -> None:
            key = (account_id, role)
            if key not in tasks:
                tasks[key] = progress.add_task(f"account {account_id} {role.value}", total=total)
            progress.update(tasks[key], completed=done)

        yield on_progress


_REASONS = {"too_many_recipients": "over the recipient limit"}


def _skipped_text(count: int, reasons: dict[str, int]) -> str:
    if not count:
        return "0"
    return f"{count} (" + ", ".join(f"{n} {_REASONS.get(r, r)}" for r, n in sorted(reasons.items())) + ")"


def run(
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="Also serve the shared inbox.")] = True,
    host: Annotated[str, typer.Option(help="Address the shared inbox listens on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port of the shared inbox.")] = 8025,
) -> None:
    """Run everything until SIGTERM/SIGINT: each active account synced at its interval, the send
    queue, the inbound listener of the forwarding addresses (when inbound is enabled in the
    settings), and (unless --no-serve) the shared inbox's web page and API. On PostgreSQL the parts
    can run apart: `crm-inbox run --no-serve` on workers, `crm-inbox serve` behind a proxy."""
    from sync.account_pass import SyncEngine
    from sync.scheduler import Worker

    logging.getLogger().setLevel(logging.INFO)
    server = None
    if serve:
        import threading

        import uvicorn

        from inbox_api.app import create_app

        server = uvicorn.Server(uvicorn.Config(create_app(), host=host, port=port, log_level="warning"))
        threading.Thread(target=server.run, name="http", daemon=True).start()
        out.print(f"Shared inbox at http://{host}:{port}/")
    inbound = None
    settings = get_settings()
    if settings.inbound_enabled:
        from sync.inbound import InboundServer

        inbound = InboundServer(settings)
        inbound.start()
        out.print(
            f"Receiving forwarded mail on {settings.inbound_host}:{settings.inbound_port}", highlight=False
        )
    try:
        with SyncEngine() as engine:
            Worker(engine).run()
    finally:
        if server is not None:
            server.should_exit = True
        if inbound is not None:
            inbound.stop()
