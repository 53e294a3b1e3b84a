"""`crm-inbox` command line. Thin: parses arguments, calls the services, prints.

Secrets are never taken as arguments (they would show in `ps` and shell history): a password
comes from standard input or from an environment variable whose *name* is given.
"""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Iterable, Sequence
from typing import Annotated, Any

import typer

from core.errors import DomainError
from crm_inbox.cli.common import JsonOpt, account_app, out, print_json
from crm_inbox.cli.errors import HandledGroup, report

# The modules that add each top-level command (a group may get commands from several). `main()`
# imports only those its command line names, so `crm-inbox sync --once` starts without the
# record, mail, admin and forwarding commands' services (about half of the start-up imports);
# `app` (tests, --help, an unknown name) has them all. tests/test_cli.py checks this table.
COMMAND_MODULES: dict[str, tuple[str, ...]] = {
    "account": ("accounts", "oauth", "sync", "forwarding"),
    "access": ("admin",),
    "signature": ("admin",),
    "tenant": ("admin",),
    "contacts": ("records", "import_export"),
    "companies": ("records",),
    "deals": ("records",),
    "links": ("records",),
    "report": ("records", "import_export"),
    "user": ("users",),
    "token": ("users",),
    "serve": ("serve",),
    "secrets": ("secrets",),
    "sync": ("sync",),
    "run": ("sync",),
    "send": ("mail",),
    "mail-log": ("mail",),
    "send-queue": ("mail",),
    "smtp-setup": ("mail",),
    "daily-limit": ("mail",),
    "inbound": ("forwarding",),
    "sending": ("sending",),
    "notifications": ("sending",),
    "init": (),
}
# In the order they were always registered (the order --help lists the commands in).
_ALL_MODULES = (
    "accounts",
    "oauth",
    "admin",
    "records",
    "users",
    "serve",
    "secrets",
    "sync",
    "mail",
    "sending",
    "forwarding",
)

_app = typer.Typer(
    cls=HandledGroup, no_args_is_help=True, add_completion=False, help="Shared-inbox CRM e-mail sync."
)
_loaded: set[str] = set()


def load(modules: Iterable[str]) -> typer.Typer:
    """Register the commands of these CLI modules (each once) and return the app."""
    for name in modules:
        if name in _loaded:
            continue
        _loaded.add(name)
        module = importlib.import_module(f"crm_inbox.cli.{name}")
        if name == "import_export":  # its commands are registered by `records`, beside the others
            continue
        if name == "accounts":  # `oauth`, `sync` and `forwarding` add to its group too
            _app.add_typer(account_app, name="account")
        elif name == "oauth":
            module.register(account_app)
        elif name == "admin":
            _app.add_typer(module.access_app, name="access")
            _app.add_typer(module.signature_app, name="signature")
            _app.add_typer(module.tenant_app, name="tenant")
        elif name == "users":
            _app.add_typer(module.user_app, name="user")
            _app.add_typer(module.token_app, name="token")
        elif name in ("sync", "forwarding"):
            module.register(_app, account_app)
        else:
            module.register(_app)
    return _app


def modules_for(argv: Sequence[str]) -> tuple[str, ...]:
    """The CLI modules a command line needs: those of its command, or all of them."""
    command = next((arg for arg in argv if not arg.startswith("-")), None)
    if command is None or command not in COMMAND_MODULES:
        return _ALL_MODULES  # --help, no command, or a typo (whose error lists every command)
    return COMMAND_MODULES[command]


def __getattr__(name: str) -> Any:
    """`crm_inbox.cli.app`: the app with every command (tests and anything else that imports it)."""
    if name == "app":
        return load(_ALL_MODULES)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@_app.callback()
def _setup(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


@_app.command()
def init(
    tenant: Annotated[str, typer.Option(help="Name of the first tenant (company).")] = "My company",
    admin_email: Annotated[str, typer.Option(help="E-mail of the first admin user.")] = "admin@example.test",
    quota: Annotated[int, typer.Option(help="Mail accounts the tenant may connect.")] = 5,
    own_domain: Annotated[list[str] | None, typer.Option(help="The company's own mail domain(s).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create or upgrade the database, and the first tenant and its admin user if there is none."""
    from core.caller import Caller
    from core.db import get_engine, migrate, session_scope
    from core.secrets import SecretBox
    from crm import tenants

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


def main() -> None:
    try:
        load(modules_for(sys.argv[1:]))()
    except DomainError as exc:  # raised outside a command (the group handles those inside)
        report(exc)
        sys.exit(1)
