"""`crm-inbox` command line. Thin: parses arguments, calls the services, prints.

Secrets are never taken as arguments (they would show in `ps` and shell history): a password
comes from standard input or from an environment variable whose *name* is given.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated, Any

import typer

from core.caller import Caller
from core.db import get_engine, migrate, session_scope
from core.errors import DomainError
from core.secrets import SecretBox
from crm import tenants
from crm_inbox.cli import admin as cli_admin
from crm_inbox.cli.accounts import account_app
from crm_inbox.cli.common import JsonOpt, out, print_json
from crm_inbox.cli.errors import HandledGroup, report
from crm_inbox.cli.forwarding import register as register_forwarding
from crm_inbox.cli.mail import register as register_mail_commands
from crm_inbox.cli.oauth import register as register_oauth_commands
from crm_inbox.cli.records import register as register_record_commands
from crm_inbox.cli.secrets import register as register_secrets
from crm_inbox.cli.sending import register as register_sending
from crm_inbox.cli.serve import register as register_serve
from crm_inbox.cli.sync import register as register_sync_commands
from crm_inbox.cli.users import token_app, user_app

app = typer.Typer(
    cls=HandledGroup, no_args_is_help=True, add_completion=False, help="Shared-inbox CRM e-mail sync."
)
app.add_typer(account_app, name="account")
register_oauth_commands(account_app)
app.add_typer(cli_admin.access_app, name="access")
app.add_typer(cli_admin.signature_app, name="signature")
app.add_typer(cli_admin.tenant_app, name="tenant")
register_record_commands(app)
app.add_typer(user_app, name="user")
app.add_typer(token_app, name="token")
register_serve(app)
register_secrets(app)
register_sync_commands(app, account_app)
register_mail_commands(app)
register_sending(app)
register_forwarding(app, account_app)


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


def main() -> None:
    try:
        app()
    except DomainError as exc:  # raised outside a command (the group handles those inside)
        report(exc)
        sys.exit(1)
