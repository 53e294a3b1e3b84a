"""Admin commands: account lifecycle/edit/test, access, signatures, and the operator's tenant quota.

Thin like `crm_inbox.cli`: parse, call `crm.admin` in one short session, print. Refusals exit
non-zero with the service's message on stderr; `--json` where scripts read the output.

The connection check of `account edit` is composed here: `sync.check.make_verifier` is injected
into `crm.admin.edit_account` (`crm` does not import `sync`). `account test` reads the stored
settings in one session, closes it, then talks to the servers.

Output and password helpers come from `crm_inbox.cli.common`, so this module never imports
`cli.py` (which registers these commands).

Signature HTML is read from a file or standard input (`-`), never from an argument.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import SecretStr

from core.db import session_scope
from core.secrets import SecretBox
from core.settings import get_settings
from core.types import Security
from crm import admin
from crm.errors import CrmError
from crm.models import MailAccount, Signature
from crm_inbox.cli.common import (
    JsonOpt,
    TenantOpt,
    err,
    fail,
    jsonable,
    out,
    print_json,
    read_password,
    tenant_id_of,
)

access_app = typer.Typer(no_args_is_help=True, help="Which users see which mail accounts.")
signature_app = typer.Typer(no_args_is_help=True, help="E-mail signatures of an account (up to three).")
tenant_app = typer.Typer(no_args_is_help=True, help="Tenants (operator commands).")

UserArg = Annotated[str, typer.Argument(help="User id or e-mail.")]
MAX_SIGNATURE_BYTES = 256 * 1024


def _refuse(exc: Exception) -> NoReturn:
    raise fail(str(exc)) from None


def _say(text: str) -> None:
    out.print(text, highlight=False)


def _warn(text: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {text}", highlight=False)


def _emit(as_json: bool, data: Any, text: str) -> None:
    if as_json:
        print_json(data)
    else:
        _say(text)


def _account_data(account: MailAccount) -> dict[str, Any]:
    return {
        "id": account.id,
        "email": account.email,
        "display_name": account.display_name,
        "active": account.active,
        "deactivated_at": account.deactivated_at,
        "status": account.status,
        "imap": f"{account.imap_host}:{account.imap_port} ({account.imap_security.value})",
        "smtp": (
            f"{account.smtp_host}:{account.smtp_port} ({account.smtp_security.value})"
            if account.smtp_host and account.smtp_security
            else None
        ),
        "sync_interval_seconds": account.sync_interval_seconds,
    }


def _read_template(source: str | None, what: str) -> str | None:
    """A template from a file path or `-` (standard input), size-capped."""
    if source is None:
        return None
    if source == "-":
        data = sys.stdin.buffer.read(MAX_SIGNATURE_BYTES + 1)
    else:
        try:
            with Path(source).open("rb") as handle:
                data = handle.read(MAX_SIGNATURE_BYTES + 1)
        except OSError as exc:
            raise fail(f"cannot read the {what} file {source}: {exc.strerror}.") from None
    if len(data) > MAX_SIGNATURE_BYTES:
        raise fail(f"the {what} is larger than {MAX_SIGNATURE_BYTES // 1024} KiB; a signature is small.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise fail(f"the {what} is not UTF-8 text.") from None


def _optional_password(stdin: bool, env: str | None) -> SecretStr | None:
    if not stdin and not env:
        return None
    return read_password(stdin, env)


# ---------------------------------------------------------------------------------------------
# account deactivate | activate | delete | test | edit


def account_admin_commands(account_app: typer.Typer) -> None:
    """Add the lifecycle, test and edit commands to `crm_inbox.cli.account_app`."""

    @account_app.command("deactivate")
    def account_deactivate(account_id: int, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
        """Stop syncing an account and hide it from inboxes; its mail is kept."""
        try:
            with session_scope() as session:
                data = _account_data(
                    admin.deactivate_account(
                        session=session, tenant_id=tenant_id_of(session, tenant), account_id=account_id
                    )
                )
        except CrmError as exc:
            _refuse(exc)
        _emit(as_json, data, f"Account {account_id} ({data['email']}) deactivated; its mail is kept.")

    @account_app.command("activate")
    def account_activate(account_id: int, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
        """Reactivate an account: sync resumes where it stopped (counts towards the quota)."""
        try:
            with session_scope() as session:
                data = _account_data(
                    admin.reactivate_account(
                        session=session, tenant_id=tenant_id_of(session, tenant), account_id=account_id
                    )
                )
        except CrmError as exc:
            _refuse(exc)
        _emit(
            as_json, data, f"Account {account_id} ({data['email']}) is active; sync resumes where it stopped."
        )

    @account_app.command("delete")
    def account_delete(account_id: int, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
        """Delete an account nobody uses and whose mail was never processed."""
        try:
            with session_scope() as session:
                admin.delete_account(
                    session=session, tenant_id=tenant_id_of(session, tenant), account_id=account_id
                )
        except CrmError as exc:
            _refuse(exc)
        _emit(as_json, {"id": account_id, "deleted": True}, f"Account {account_id} deleted.")

    @account_app.command("test")
    def account_test(account_id: int, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
        """Log in with the stored settings (IMAP, and SMTP when set) and report the problem, if any."""
        from sync.check import verify_connection

        try:
            with session_scope() as session:
                settings = admin.connection_settings_of(
                    session=session,
                    tenant_id=tenant_id_of(session, tenant),
                    account_id=account_id,
                    box=SecretBox.from_settings(),
                )
        except CrmError as exc:
            _refuse(exc)
        result = verify_connection(settings, config=get_settings())
        if as_json:
            print_json({"id": account_id, **jsonable(result)})
        elif result.ok:
            _say(f"Account {account_id}: {result.message}")
        if not result.ok:
            if not as_json:
                err.print(f"[red]error:[/red] {result.message}", highlight=False)
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
        smtp_host: Annotated[str | None, typer.Option(help="'' removes SMTP.")] = None,
        smtp_port: Annotated[int | None, typer.Option()] = None,
        smtp_security: Annotated[Security | None, typer.Option()] = None,
        smtp_username: Annotated[str | None, typer.Option(help="'' means the IMAP username.")] = None,
        interval: Annotated[int | None, typer.Option(help="Seconds between syncs.")] = None,
        password_stdin: Annotated[bool, typer.Option("--password-stdin", help="New IMAP password.")] = False,
        password_env: Annotated[str | None, typer.Option("--password-env")] = None,
        smtp_password_stdin: Annotated[
            bool, typer.Option("--smtp-password-stdin", help="New SMTP password (line after the IMAP one).")
        ] = False,
        smtp_password_env: Annotated[str | None, typer.Option("--smtp-password-env")] = None,
        same_smtp_password: Annotated[
            bool, typer.Option("--same-smtp-password", help="SMTP uses the IMAP password again.")
        ] = False,
        no_check: Annotated[bool, typer.Option("--no-check", help="Save without logging in first.")] = False,
        force: Annotated[bool, typer.Option("--force", help="Save even if the login check fails.")] = False,
        tenant: TenantOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Change an account's settings; new connection settings are checked by logging in first."""
        from sync.check import make_verifier

        changes = admin.AccountChanges(
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
        try:
            with session_scope() as session:
                saved = admin.edit_account(
                    session=session,
                    tenant_id=tenant_id_of(session, tenant),
                    account_id=account_id,
                    changes=changes,
                    box=SecretBox.from_settings(),
                    verify=None if no_check else make_verifier(get_settings()),
                    force=force,
                )
                data = _account_data(saved.account)
        except CrmError as exc:
            _refuse(exc)
        check = saved.check.message if saved.check else ("skipped" if no_check else "not needed")
        if saved.check is not None and not saved.check.ok:
            _warn(f"saved despite a failing check: {saved.check.message}")
        _emit(as_json, {**data, "check": check}, f"Account {account_id} updated. Check: {check}")


# ---------------------------------------------------------------------------------------------
# access grant | revoke | default | list


@access_app.command("grant")
def access_grant(account_id: int, user: UserArg, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Let a user see an account's mail and send from it."""
    try:
        with session_scope() as session:
            tenant_id = tenant_id_of(session, tenant)
            found = admin.find_user(session=session, ref=user, tenant_id=tenant_id)
            admin.grant_access(
                session=session, tenant_id=tenant_id, account_id=account_id, user_id=found.id or 0
            )
            data = {"account_id": account_id, "user_id": found.id, "user": found.email, "granted": True}
    except CrmError as exc:
        _refuse(exc)
    _emit(as_json, data, f"{data['user']} has access to account {account_id}.")


@access_app.command("revoke")
def access_revoke(account_id: int, user: UserArg, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Take an account away from a user; its mail stays."""
    try:
        with session_scope() as session:
            tenant_id = tenant_id_of(session, tenant)
            found = admin.find_user(session=session, ref=user, tenant_id=tenant_id)
            admin.revoke_access(
                session=session, tenant_id=tenant_id, account_id=account_id, user_id=found.id or 0
            )
            data = {"account_id": account_id, "user_id": found.id, "user": found.email, "granted": False}
    except CrmError as exc:
        _refuse(exc)
    _emit(as_json, data, f"{data['user']} no longer has access to account {account_id}; the mail stays.")


@access_app.command("default")
def access_default(
    user: UserArg,
    account_id: Annotated[int | None, typer.Argument(help="Omit with --clear.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the user's default account.")] = False,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set the account a user composes from by default."""
    if (account_id is None) != clear:
        raise fail("give either an ACCOUNT_ID or --clear.", 2)
    try:
        with session_scope() as session:
            tenant_id = tenant_id_of(session, tenant)
            found = admin.find_user(session=session, ref=user, tenant_id=tenant_id)
            admin.set_default_account(
                session=session,
                tenant_id=tenant_id,
                user_id=found.id or 0,
                account_id=None if clear else account_id,
            )
            data = {"user_id": found.id, "user": found.email, "default_account_id": found.default_account_id}
    except CrmError as exc:
        _refuse(exc)
    what = f"account {data['default_account_id']}" if data["default_account_id"] else "none"
    _emit(as_json, data, f"Default account of {data['user']}: {what}.")


@access_app.command("list")
def access_list(user: UserArg, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """The active accounts a user sees, and their default."""
    try:
        with session_scope() as session:
            tenant_id = tenant_id_of(session, tenant)
            found = admin.find_user(session=session, ref=user, tenant_id=tenant_id)
            visible = [
                _account_data(a)
                for a in admin.accounts_visible_to(
                    session=session, tenant_id=tenant_id, user_id=found.id or 0
                )
            ]
            default = admin.default_account(session=session, tenant_id=tenant_id, user_id=found.id or 0)
            data = {
                "user": found.email,
                "default_account_id": default.id if default else None,
                "accounts": visible,
            }
    except CrmError as exc:
        _refuse(exc)
    lines = [
        f"{a['id']}  {a['email']}{'  (default)' if a['id'] == data['default_account_id'] else ''}"
        for a in visible
    ]
    _emit(as_json, data, "\n".join(lines) or f"{data['user']} sees no account.")


# ---------------------------------------------------------------------------------------------
# signature add | edit | delete | list | render | default


def _signature_data(signature: Signature) -> dict[str, Any]:
    return {
        "id": signature.id,
        "account_id": signature.account_id,
        "name": signature.name,
        "html": signature.html,
        "text": signature.text,
        "updated_at": signature.updated_at,
    }


HtmlFileOpt = Annotated[str | None, typer.Option("--html-file", help="HTML template file, or - for stdin.")]
TextFileOpt = Annotated[
    str | None, typer.Option("--text-file", help="Plain-text template (default: derived from the HTML).")
]


def _saved(saved: admin.SignatureSaved, as_json: bool, verb: str) -> None:
    for warning in saved.warnings:
        _warn(warning)
    data = {**_signature_data(saved.signature), "warnings": list(saved.warnings)}
    _emit(as_json, data, f"Signature {data['id']} ({data['name']}) {verb}.")


@signature_app.command("add")
def signature_add(
    account_id: int,
    name: Annotated[str, typer.Option("--name")],
    html_file: HtmlFileOpt = None,
    text_file: TextFileOpt = None,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a signature (sanitized; merge tags such as {{ sender.first_name }} checked)."""
    html = _read_template(html_file, "HTML")
    if html is None:
        raise fail("give the signature HTML with --html-file PATH (or - for standard input).", 2)
    text = _read_template(text_file, "text")
    try:
        with session_scope() as session:
            saved = admin.add_signature(
                session=session,
                tenant_id=tenant_id_of(session, tenant),
                account_id=account_id,
                name=name,
                html=html,
                text=text,
            )
    except CrmError as exc:
        _refuse(exc)
    _saved(saved, as_json, "saved")


@signature_app.command("edit")
def signature_edit(
    signature_id: int,
    name: Annotated[str | None, typer.Option("--name")] = None,
    html_file: HtmlFileOpt = None,
    text_file: TextFileOpt = None,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Rename a signature or replace its templates."""
    html = _read_template(html_file, "HTML")
    text = _read_template(text_file, "text")
    try:
        with session_scope() as session:
            saved = admin.update_signature(
                session=session,
                tenant_id=tenant_id_of(session, tenant),
                signature_id=signature_id,
                name=name,
                html=html,
                text=text,
            )
    except CrmError as exc:
        _refuse(exc)
    _saved(saved, as_json, "updated")


@signature_app.command("delete")
def signature_delete(signature_id: int, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Delete a signature (users who had it as default get none)."""
    try:
        with session_scope() as session:
            admin.delete_signature(
                session=session, tenant_id=tenant_id_of(session, tenant), signature_id=signature_id
            )
    except CrmError as exc:
        _refuse(exc)
    _emit(as_json, {"id": signature_id, "deleted": True}, f"Signature {signature_id} deleted.")


@signature_app.command("list")
def signature_list(account_id: int, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """An account's signatures."""
    try:
        with session_scope() as session:
            rows = [
                _signature_data(s)
                for s in admin.list_signatures(
                    session=session, tenant_id=tenant_id_of(session, tenant), account_id=account_id
                )
            ]
    except CrmError as exc:
        _refuse(exc)
    text = "\n".join(f"{r['id']}  {r['name']}" for r in rows) or f"Account {account_id} has no signature."
    _emit(as_json, rows, text)


@signature_app.command("render")
def signature_render(
    signature_id: int,
    user: Annotated[str, typer.Option("--user", help="The sender (id or e-mail).")],
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fill in a signature for one sender: HTML and text."""
    try:
        with session_scope() as session:
            tenant_id = tenant_id_of(session, tenant)
            found = admin.find_user(session=session, ref=user, tenant_id=tenant_id)
            rendered = admin.render_signature(
                session=session, tenant_id=tenant_id, signature_id=signature_id, user_id=found.id or 0
            )
    except CrmError as exc:
        _refuse(exc)
    if as_json:
        print_json({"id": signature_id, "html": rendered.html, "text": rendered.text})
    else:
        sys.stdout.write(f"{rendered.html}\n\n{rendered.text}\n")


@signature_app.command("default")
def signature_default(
    account_id: int,
    signature_id: Annotated[int | None, typer.Argument(help="Omit with --clear.")] = None,
    user: Annotated[str, typer.Option("--user", help="Whose default (id or e-mail).")] = "",
    clear: Annotated[bool, typer.Option("--clear", help="Remove the user's default.")] = False,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Set a user's default signature for one account."""
    if not user:
        raise fail("give the user with --user (id or e-mail).", 2)
    if (signature_id is None) != clear:
        raise fail("give either a SIGNATURE_ID or --clear.", 2)
    try:
        with session_scope() as session:
            tenant_id = tenant_id_of(session, tenant)
            found = admin.find_user(session=session, ref=user, tenant_id=tenant_id)
            access = admin.set_default_signature(
                session=session,
                tenant_id=tenant_id,
                user_id=found.id or 0,
                account_id=account_id,
                signature_id=None if clear else signature_id,
            )
            data = {
                "user": found.email,
                "account_id": account_id,
                "signature_id": access.default_signature_id,
            }
    except CrmError as exc:
        _refuse(exc)
    what = f"signature {data['signature_id']}" if data["signature_id"] else "none"
    _emit(as_json, data, f"Default signature of {data['user']} on account {account_id}: {what}.")


# ---------------------------------------------------------------------------------------------
# tenant quota | show


def _tenant_text(view: admin.TenantView) -> str:
    return (
        f"Tenant {view.id} ({view.name}): {view.active_accounts} of {view.account_quota} mail accounts "
        f"active, {view.inactive_accounts} deactivated, {view.users} user(s)."
    )


@tenant_app.command("quota")
def tenant_quota(tenant_id: int, quota: int, as_json: JsonOpt = False) -> None:
    """Set how many active mail accounts a tenant may have."""
    try:
        with session_scope() as session:
            view = admin.set_quota(session=session, tenant_id=tenant_id, quota=quota)
    except CrmError as exc:
        _refuse(exc)
    if view.active_accounts > view.account_quota and not as_json:
        _warn(
            f"{view.active_accounts} accounts are active, more than the new quota: they keep syncing, "
            "but none can be added or reactivated until enough are deactivated."
        )
    _emit(as_json, view, _tenant_text(view))


@tenant_app.command("show")
def tenant_show(
    tenant_id: Annotated[int | None, typer.Argument(help="Default: the first tenant.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """A tenant's quota and usage."""
    try:
        with session_scope() as session:
            view = admin.tenant_view(session=session, tenant_id=tenant_id)
    except CrmError as exc:
        _refuse(exc)
    _emit(as_json, view, _tenant_text(view))
