"""Helpers shared by every `crm-inbox` command module: one JSON encoding (ISO dates, enum
values, dataclasses as objects), one way to fail with a message on stderr, one way to read a
password (never from argv: it would show in `ps` and shell history)."""

from __future__ import annotations

import dataclasses
import enum
import json
import os
import sys
from datetime import date
from typing import Annotated, Any

import typer
from pydantic import SecretStr
from rich.console import Console
from sqlmodel import Session

from crm import accounts

# soft_wrap: sentences are printed whole (scripts grep them; a terminal wraps them anyway).
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
TenantOpt = Annotated[int | None, typer.Option("--tenant", help="Tenant id (default: the first).")]


def tenant_id_of(session: Session, tenant: int | None) -> int:
    """The tenant a command acts in, resolved once: every record id is looked up within it."""
    return accounts.get_tenant(session=session, tenant_id=tenant).id or 0


def jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, date):  # datetime too (a subclass): both as ISO 8601
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    return value


def print_json(value: Any) -> None:
    sys.stdout.write(json.dumps(jsonable(value), indent=2, ensure_ascii=False) + "\n")


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print the error and return the exit to raise (`raise fail(...)`)."""
    err.print(f"[red]error:[/red] {message}", highlight=False)
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
