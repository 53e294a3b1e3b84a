"""Admin commands: access grants and defaults, signatures, and the operator's tenant commands.

Thin: parse, call the services acting as the tenant's operator in one short session, print.
Domain errors are reported by `crm_inbox.cli.errors`; `--json` where scripts read the output.
Signature HTML is read from a file or standard input (`-`), never from an argument.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from core.db import session_scope
from crm import grants, signature_service, tenants
from crm_inbox.cli.common import JsonOpt, TenantOpt, emit, fail, jsonable, operator, print_json, warn

access_app = typer.Typer(no_args_is_help=True, help="Which users see which mail accounts.")
signature_app = typer.Typer(no_args_is_help=True, help="E-mail signatures of an account (up to three).")
tenant_app = typer.Typer(no_args_is_help=True, help="Tenants (operator commands).")

UserArg = Annotated[str, typer.Argument(help="User id or e-mail.")]
MAX_SIGNATURE_BYTES = 256 * 1024


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


# ---------------------------------------------------------------------------------------------
# access grant | revoke | default | list


@access_app.command("grant")
def access_grant(account_id: int, user: UserArg, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Let a user see an account's mail and send from it."""
    with session_scope() as session:
        caller = operator(session, tenant)
        found = tenants.find_user(session=session, caller=caller, ref=user)
        grant = grants.grant_access(session=session, caller=caller, account_id=account_id, user_id=found.id)
    data = {"account_id": account_id, "user_id": grant.user_id, "user": grant.user_email, "granted": True}
    emit(as_json, data, f"{grant.user_email} has access to account {account_id}.")


@access_app.command("revoke")
def access_revoke(account_id: int, user: UserArg, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Take an account away from a user; its mail stays."""
    with session_scope() as session:
        caller = operator(session, tenant)
        found = tenants.find_user(session=session, caller=caller, ref=user)
        grants.revoke_access(session=session, caller=caller, account_id=account_id, user_id=found.id)
    data = {"account_id": account_id, "user_id": found.id, "user": found.email, "granted": False}
    emit(as_json, data, f"{found.email} no longer has access to account {account_id}; the mail stays.")


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
    with session_scope() as session:
        caller = operator(session, tenant)
        found = tenants.find_user(session=session, caller=caller, ref=user)
        updated = grants.set_default_account(
            session=session, caller=caller, user_id=found.id, account_id=None if clear else account_id
        )
    data = {"user_id": updated.id, "user": updated.email, "default_account_id": updated.default_account_id}
    what = f"account {updated.default_account_id}" if updated.default_account_id else "none"
    emit(as_json, data, f"Default account of {updated.email}: {what}.")


@access_app.command("list")
def access_list(user: UserArg, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """The active accounts a user sees, and their default."""
    with session_scope() as session:
        caller = operator(session, tenant)
        found = tenants.find_user(session=session, caller=caller, ref=user)
        visible = grants.granted_accounts(session=session, caller=caller, user_id=found.id)
        default = grants.default_account(session=session, caller=caller, user_id=found.id)
    default_id = default.id if default else None
    data = {"user": found.email, "default_account_id": default_id, "accounts": visible}
    lines = [f"{a.id}  {a.email}{'  (default)' if a.id == default_id else ''}" for a in visible]
    emit(as_json, data, "\n".join(lines) or f"{found.email} sees no account.")


# ---------------------------------------------------------------------------------------------
# signature add | edit | delete | list | render | default


HtmlFileOpt = Annotated[str | None, typer.Option("--html-file", help="HTML template file, or - for stdin.")]
TextFileOpt = Annotated[
    str | None, typer.Option("--text-file", help="Plain-text template (default: derived from the HTML).")
]


def _saved(saved: signature_service.SignatureSaved, as_json: bool, verb: str) -> None:
    for warning in saved.warnings:
        warn(warning)
    data: dict[str, Any] = {**_plain(saved.signature), "warnings": list(saved.warnings)}
    emit(as_json, data, f"Signature {data['id']} ({data['name']}) {verb}.")


def _plain(view: Any) -> dict[str, Any]:
    result: dict[str, Any] = jsonable(view)
    return result


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
    with session_scope() as session:
        saved = signature_service.add_signature(
            session=session,
            caller=operator(session, tenant),
            account_id=account_id,
            name=name,
            html=html,
            text=text,
        )
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
    with session_scope() as session:
        saved = signature_service.update_signature(
            session=session,
            caller=operator(session, tenant),
            signature_id=signature_id,
            name=name,
            html=html,
            text=text,
        )
    _saved(saved, as_json, "updated")


@signature_app.command("delete")
def signature_delete(signature_id: int, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Delete a signature (users who had it as default get none)."""
    with session_scope() as session:
        signature_service.delete_signature(
            session=session, caller=operator(session, tenant), signature_id=signature_id
        )
    emit(as_json, {"id": signature_id, "deleted": True}, f"Signature {signature_id} deleted.")


@signature_app.command("list")
def signature_list(account_id: int, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """An account's signatures."""
    with session_scope() as session:
        rows = signature_service.list_signatures(
            session=session, caller=operator(session, tenant), account_id=account_id
        )
    text = "\n".join(f"{r.id}  {r.name}" for r in rows) or f"Account {account_id} has no signature."
    emit(as_json, rows, text)


@signature_app.command("render")
def signature_render(
    signature_id: int,
    user: Annotated[str, typer.Option("--user", help="The sender (id or e-mail).")],
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Fill in a signature for one sender: HTML and text."""
    with session_scope() as session:
        caller = operator(session, tenant)
        found = tenants.find_user(session=session, caller=caller, ref=user)
        rendered = signature_service.render_signature(
            session=session, caller=caller, signature_id=signature_id, user_id=found.id
        )
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
    with session_scope() as session:
        caller = operator(session, tenant)
        found = tenants.find_user(session=session, caller=caller, ref=user)
        grant = grants.set_default_signature(
            session=session,
            caller=caller,
            user_id=found.id,
            account_id=account_id,
            signature_id=None if clear else signature_id,
        )
    data = {"user": grant.user_email, "account_id": account_id, "signature_id": grant.default_signature_id}
    what = f"signature {grant.default_signature_id}" if grant.default_signature_id else "none"
    emit(as_json, data, f"Default signature of {grant.user_email} on account {account_id}: {what}.")


# ---------------------------------------------------------------------------------------------
# tenant list | show | quota


def _tenant_text(view: tenants.TenantView) -> str:
    return (
        f"Tenant {view.id} ({view.name}): {view.active_accounts} of {view.account_quota} mail accounts "
        f"active, {view.inactive_accounts} deactivated, {view.users} user(s)."
    )


@tenant_app.command("list")
def tenant_list(as_json: JsonOpt = False) -> None:
    """Every tenant with its quota and usage."""
    with session_scope() as session:
        views = tenants.list_tenants(session=session)
    emit(as_json, views, "\n".join(_tenant_text(v) for v in views) or "No tenant yet.")


@tenant_app.command("quota")
def tenant_quota(tenant_id: int, quota: int, as_json: JsonOpt = False) -> None:
    """Set how many active mail accounts a tenant may have."""
    with session_scope() as session:
        view = tenants.set_quota(session=session, caller=operator(session, tenant_id), quota=quota)
    if view.active_accounts > view.account_quota and not as_json:
        warn(
            f"{view.active_accounts} accounts are active, more than the new quota: they keep syncing, "
            "but none can be added or reactivated until enough are deactivated."
        )
    emit(as_json, view, _tenant_text(view))


@tenant_app.command("show")
def tenant_show(
    tenant_id: Annotated[int | None, typer.Argument(help="Default: the only tenant.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """A tenant's quota and usage."""
    with session_scope() as session:
        view = tenants.tenant_view(session=session, caller=operator(session, tenant_id))
    emit(as_json, view, _tenant_text(view))
