"""The one error handler of `crm-inbox`: a `DomainError` raised anywhere below a command becomes
`error: <message>` on stderr, the command line's own hint for its code (with flag and command
names, which services never mention), and exit code 1; with `--json`, also the error as a JSON
object on stdout (`{"error": {"code", "kind", "message", "fields"}}`) for scripts. Never a
traceback. Commands therefore do not catch domain errors themselves.

It is installed once, as the class of the root command group (`HandledGroup`): every command
runs inside the root group's `invoke`.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperGroup

from core.errors import DomainError

_ARGV_KEY = "crm_inbox.argv"

# code -> hint, formatted with the error's fields (a missing field leaves the hint out).
HINTS: dict[str, str] = {
    "oauth_provider_not_configured": (
        "set CRM_INBOX_OAUTH_<PROVIDER>_CLIENT_ID and _CLIENT_SECRET (README: Connecting Google and "
        "Microsoft 365 mailboxes)."
    ),
    "oauth_provider_not_found": "use google, microsoft, or a name from CRM_INBOX_OAUTH_PROVIDERS.",
    "oauth_state_invalid": "run crm-inbox account connect again and finish within a few minutes.",
    "oauth_reconnect_needed": "reconnect it: crm-inbox account connect --provider {provider} --account ID",
    "smtp_test_failed": "the attempt and the server's answer: crm-inbox mail-log --kind test",
    "test_address_required": (
        "give the address the test mail goes to: --smtp-test-to with account add, --test-to with smtp-setup."
    ),
    "smtp_password_oauth": "leave out the password options: the account's OAuth token logs in.",
    "connection_check_failed": (
        "fix the settings, or save anyway with --force (or skip the check with --no-check)."
    ),
    "quota_exceeded": (
        "deactivate an account (crm-inbox account deactivate ID) or raise the quota with "
        "crm-inbox tenant quota TENANT_ID QUOTA."
    ),
    "account_in_use": "deactivate it instead: crm-inbox account deactivate {account_id}",
    "account_exists": (
        "see it with crm-inbox account list; change it with crm-inbox account edit {account_id}"
    ),
    "account_inactive": (
        "reactivate it with crm-inbox account activate {account_id}, or choose another account."
    ),
    "no_account_access": "grant access first: crm-inbox access grant {account_id} {user_id}",
    "smtp_setup_required": (
        "set SMTP with crm-inbox smtp-setup {account_id} --host HOST --test-to ADDRESS (saved once its "
        "test mail is accepted); account edit --smtp-host '' only removes SMTP."
    ),
    "signature_limit_reached": (
        "edit (crm-inbox signature edit) or delete (crm-inbox signature delete) one of them."
    ),
    "tenant_required": "choose one with --tenant ID (crm-inbox tenant list shows them).",
    "no_tenant": "run crm-inbox init first.",
    "database_not_initialised": "run crm-inbox init first.",
    "data_dir_unusable": "set CRM_INBOX_DATA_DIR to a folder this user can create and write.",
    "database_url_invalid": "check CRM_INBOX_DATABASE_URL (empty: a SQLite file in the data folder).",
    "admin_required": "this command acts as the tenant's administrator.",
    "channel_activated": "the address is in use; create another with crm-inbox account add-forwarding.",
    "local_part_invalid": "give --local-part with letters or digits, e.g. --local-part sales.",
    "address_taken": "choose another local part.",
}


class _Fields(dict[str, Any]):
    def __missing__(self, key: str) -> str:
        raise KeyError(key)


def hint_for(error: DomainError) -> str | None:
    template = HINTS.get(error.code)
    if template is None:
        return None
    try:
        return template.format_map(_Fields(error.fields))
    except (KeyError, ValueError, IndexError):
        return None


def report(error: DomainError, *, as_json: bool = False) -> None:
    """Print a domain error the command-line way (stderr; and stdout JSON with --json)."""
    from crm_inbox.cli.common import err

    err.print(f"[red]error:[/red] {escape(error.message)}", highlight=False)
    hint = hint_for(error)
    if hint:
        err.print(f"hint: {hint}", highlight=False, markup=False)
    if as_json:
        sys.stdout.write(json.dumps({"error": error.to_dict()}, indent=2, ensure_ascii=False) + "\n")


class HandledGroup(TyperGroup):
    """The root group: runs the command and turns a `DomainError` into a reported exit 1."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        # The sub-command's parameters are not known here; remember the raw arguments so the
        # handler knows whether --json was asked for. `meta` is shared by every sub-context.
        ctx.meta[_ARGV_KEY] = tuple(args)
        return super().parse_args(ctx, args)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except DomainError as exc:
            argv: Sequence[str] = ctx.meta.get(_ARGV_KEY, ())
            report(exc, as_json="--json" in argv)
            raise typer.Exit(1) from None
