"""`crm-inbox user ...` and `crm-inbox token ...`: the people who sign in, and their API tokens.

Passwords come from standard input or a named environment variable, never from argv; a token is
printed exactly once, when it is created.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from core.db import session_scope
from crm import auth, tenants
from crm_inbox.cli.common import JsonOpt, TenantOpt, operator, out, print_json, read_password

user_app = typer.Typer(no_args_is_help=True, help="Users: add, list, deactivate, set passwords.")
token_app = typer.Typer(no_args_is_help=True, help="Personal API tokens (Authorization: Bearer ...).")

PasswordStdin = Annotated[
    bool, typer.Option("--password-stdin", help="Read the password from standard input.")
]
PasswordEnv = Annotated[
    str | None, typer.Option("--password-env", help="Name of a variable holding the password.")
]


@user_app.command("add")
def user_add(
    email: str,
    name: Annotated[str, typer.Option(help="First and last name.")] = "",
    role: Annotated[str, typer.Option(help="admin or member.")] = "member",
    password_stdin: PasswordStdin = False,
    password_env: PasswordEnv = None,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a user who signs in to the web page; a password is optional (set it later)."""
    if role not in ("admin", "member"):
        raise typer.BadParameter("the role is admin or member", param_hint="--role")
    password = read_password(password_stdin, password_env) if (password_stdin or password_env) else None
    first, _, last = name.strip().partition(" ")
    with session_scope() as session:
        caller = operator(session, tenant)
        user = tenants.create_user(
            session=session,
            caller=caller,
            email=email,
            first_name=first,
            last_name=last,
            is_admin=role == "admin",
        )
        if password is not None:
            auth.set_password(session=session, caller=caller, user_id=user.id, password=password)
    if as_json:
        print_json(user)
    else:
        out.print(f"User {user.id} {user.email} added as {role}" + (" with a password." if password else "."))


@user_app.command("password")
def user_password(
    user: str,
    password_stdin: PasswordStdin = False,
    password_env: PasswordEnv = None,
    tenant: TenantOpt = None,
) -> None:
    """Set a user's password (from standard input or a named variable)."""
    password = read_password(password_stdin, password_env)
    with session_scope() as session:
        caller = operator(session, tenant)
        found = tenants.find_user(session=session, caller=caller, ref=user)
        auth.set_password(session=session, caller=caller, user_id=found.id, password=password)
    out.print(f"Password of {found.email} set.")


@user_app.command("list")
def user_list(tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    with session_scope() as session:
        users = tenants.list_users(session=session, caller=operator(session, tenant))
    if as_json:
        print_json(users)
        return
    table = Table("id", "e-mail", "name", "role", "active")
    for u in users:
        name = f"{u.first_name} {u.last_name}".strip()
        table.add_row(
            str(u.id), u.email, name, "admin" if u.is_admin else "member", "yes" if u.active else "no"
        )
    out.print(table)


def _set_active(user: str, tenant: int | None, active: bool, as_json: bool) -> None:
    with session_scope() as session:
        caller = operator(session, tenant)
        found = tenants.find_user(session=session, caller=caller, ref=user)
        view = tenants.set_user_active(session=session, caller=caller, user_id=found.id, active=active)
    if as_json:
        print_json(view)
    else:
        what = "reactivated" if active else "deactivated: their sessions and tokens stop now"
        out.print(f"User {view.email} {what}.")


@user_app.command("deactivate")
def user_deactivate(user: str, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Stop a user from signing in (history kept; sessions and tokens end at once)."""
    _set_active(user, tenant, False, as_json)


@user_app.command("activate")
def user_activate(user: str, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    _set_active(user, tenant, True, as_json)


@token_app.command("create")
def token_create(
    user: str,
    name: Annotated[str, typer.Option("--name", help="A label to recognise the token by.")] = "",
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a personal API token; it is printed once and stored only hashed."""
    with session_scope() as session:
        caller = operator(session, tenant)
        found = tenants.find_user(session=session, caller=caller, ref=user)
        created = auth.create_token(session=session, caller=caller, user_id=found.id, name=name)
    secret = created.secret.get_secret_value()
    if as_json:
        print_json({"token": created.token, "secret": secret})
    else:
        out.print(f"Token {created.token.id} for {found.email} (shown once, store it now):")
        out.print(secret, highlight=False)


@token_app.command("list")
def token_list(user: str, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    with session_scope() as session:
        caller = operator(session, tenant)
        found = tenants.find_user(session=session, caller=caller, ref=user)
        tokens = auth.list_tokens(session=session, caller=caller, user_id=found.id)
    if as_json:
        print_json(tokens)
        return
    table = Table("id", "name", "starts with", "created", "last used", "revoked")
    for t in tokens:
        last = f"{t.last_used_at:%Y-%m-%d %H:%M}" if t.last_used_at else "never"
        table.add_row(
            str(t.id), t.name, t.prefix + "…", f"{t.created_at:%Y-%m-%d}", last, "yes" if t.revoked else ""
        )
    out.print(table)


@token_app.command("revoke")
def token_revoke(token_id: int, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    with session_scope() as session:
        view = auth.revoke_token(session=session, caller=operator(session, tenant), token_id=token_id)
    if as_json:
        print_json(view)
    else:
        out.print(f"Token {view.id} revoked.")
