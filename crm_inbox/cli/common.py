"""Helpers shared by every `crm-inbox` command module: the tenant a command acts in and the
operator `Caller`, one JSON encoding (ISO dates, enum values, dataclasses as
objects), one way to fail with a usage message on stderr, one way to read a
password (never from argv: it would show in `ps` and shell history)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated, Any

import typer
from pydantic import SecretStr
from pydantic_core import to_jsonable_python
from rich.console import Console
from rich.markup import escape
from sqlmodel import Session

from core.caller import Caller
from core.db import session_scope
from core.errors import InvalidInput, NotFound, not_found
from crm import tenants

# soft_wrap: sentences are printed whole (scripts grep them; a terminal wraps them anyway).
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

# The `account` group. Defined here, not in `accounts`, because `oauth`, `sync` and `forwarding`
# add commands to it too: `crm-inbox sync` registers `account reset-folder` without importing
# the account commands' services (the group is shown only when `accounts` is loaded).
account_app = typer.Typer(no_args_is_help=True, help="Connected mail accounts.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
TenantOpt = Annotated[
    int | None, typer.Option("--tenant", help="Tenant id (may be omitted when only one tenant exists).")
]


def resolve_tenant(session: Session, tenant: int | None) -> int:
    """The tenant a command acts in: the one given, else the only one. Never a guess between
    several (an operator of many tenants must say which)."""
    choices = tenants.list_tenants(session=session)
    if tenant is not None:
        if all(t.id != tenant for t in choices):
            raise not_found("tenant", tenant)
        return tenant
    if not choices:
        raise NotFound("no_tenant", "No tenant exists yet.", what="tenant")
    if len(choices) > 1:
        names = ", ".join(f"{t.id} ({t.name})" for t in choices)
        raise InvalidInput(
            "tenant_required",
            f"Several tenants exist: {names}; say which one.",
            field="tenant",
            tenants=[t.id for t in choices],
        )
    return choices[0].id


def operator(session: Session, tenant: int | None) -> Caller:
    """The command line acts as the operator (the admin) of the resolved tenant."""
    return Caller.operator(resolve_tenant(session, tenant))


def tenant_id_of(session: Session, tenant: int | None) -> int:
    """The tenant a command acts in, resolved once: every record id is looked up within it."""
    return resolve_tenant(session, tenant)


@contextmanager
def acting(tenant: int | None) -> Iterator[tuple[Session, Caller]]:
    """One short session acting in the tenant (resolved explicitly) as its operator."""
    with session_scope() as session:
        yield session, Caller.operator(tenant_id_of(session, tenant))


def operator_of(tenant: int | None) -> Caller:
    """The operator of the tenant, for services that open their own short sessions."""
    with acting(tenant) as (_session, caller):
        return caller


def jsonable(value: Any) -> Any:
    """Plain JSON values (views, enums, datetimes in ISO 8601), by pydantic's own encoder."""
    return to_jsonable_python(value)


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(jsonable(value), indent=2, ensure_ascii=False) + "\n")


def say(text: str) -> None:
    out.print(text, highlight=False, markup=False)


def warn(text: str) -> None:
    err.print(f"[yellow]warning:[/yellow] {escape(text)}", highlight=False)


def emit(as_json: bool, data: Any, text: str) -> None:
    if as_json:
        print_json(data)
    else:
        say(text)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print a command-line (usage) error and return the exit to raise (`raise fail(...)`).
    Domain errors are not reported this way: they propagate to `crm_inbox.cli.errors`."""
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    return typer.Exit(code)


def read_password(password_stdin: bool, password_env: str | None) -> SecretStr:
    if password_env:
        value = os.environ.get(password_env)
        if not value:
            raise fail(f"environment variable {password_env} is not set or empty.")
        return SecretStr(value)
    if password_stdin:
        value = sys.stdin.readline().rstrip("\r\n")
        if not value:
            raise fail("no password on standard input.")
        return SecretStr(value)
    raise fail(
        "give the password with --password-stdin or --password-env NAME; "
        "it is never accepted as a command-line argument."
    )
