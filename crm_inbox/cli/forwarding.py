"""`crm-inbox account add-forwarding`, `crm-inbox account forwarding ...` and
`crm-inbox inbound`: hosted forwarding addresses per team inbox and their SMTP/LMTP listener.

Thin like the other groups: parse, call `crm.forwarding` as the tenant's operator, print.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType
from typing import Annotated

import typer

from core.db import session_scope
from core.secrets import SecretBox
from core.settings import get_settings
from core.types import TicketPriority, TicketStage
from crm import forwarding
from crm.forwarding import tickets
from crm_inbox.cli.common import JsonOpt, TenantOpt, emit, operator, out, print_json, say

forwarding_app = typer.Typer(no_args_is_help=True, help="Hosted forwarding addresses of team inboxes.")


def register(app: typer.Typer, account_app: typer.Typer) -> None:
    account_app.command("add-forwarding")(add_forwarding)
    account_app.add_typer(forwarding_app, name="forwarding")
    app.command("inbound")(inbound)


def add_forwarding(
    name: Annotated[str, typer.Option(help='The team inbox, e.g. "Sales".')],
    local_part: Annotated[
        str | None, typer.Option(help="Before the random suffix (default: from the name).")
    ] = None,
    original_address: Annotated[
        str, typer.Option(help="The team's own address that will forward here.")
    ] = "",
    tickets_on: Annotated[
        bool, typer.Option("--tickets/--no-tickets", help="A ticket for each new conversation.")
    ] = False,
    ticket_stage: Annotated[TicketStage, typer.Option(help="Stage of new tickets.")] = TicketStage.NEW,
    ticket_priority: Annotated[
        TicketPriority, typer.Option(help="Priority of new tickets.")
    ] = TicketPriority.MEDIUM,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a forwarding address for a team inbox (an account of its own: quota, access,
    signatures and sending like a mailbox). Forward the team's mail to the address shown."""
    with session_scope() as session:
        view = forwarding.create_channel(
            session=session,
            caller=operator(session, tenant),
            box=SecretBox.from_settings(),
            domain=get_settings().inbound_domain,
            name=name,
            local_part=local_part,
            original_address=original_address,
            create_tickets=tickets_on,
            ticket_stage=ticket_stage,
            ticket_priority=ticket_priority,
        )
    emit(
        as_json,
        view,
        f"Forwarding address {view.address} created for {view.name} (account {view.account_id}, "
        f"channel {view.id}). Its local part can change until it is activated.",
    )


@forwarding_app.command("list")
def forwarding_list(tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """The forwarding addresses, with their warnings."""
    with session_scope() as session:
        views = forwarding.list_channels(session=session, caller=operator(session, tenant))
    if as_json:
        print_json(views)
        return
    for v in views:
        state = "active" if v.activated else "not yet activated"
        say(f"{v.id}  {v.address}  {v.name}  ({state}{', tickets' if v.create_tickets else ''})")
        if v.loop_warning:
            say(f"    warning: {v.loop_warning}")


@forwarding_app.command("rename")
def forwarding_rename(
    channel_id: int, local_part: str, tenant: TenantOpt = None, as_json: JsonOpt = False
) -> None:
    """Change the local part of an address not yet activated."""
    with session_scope() as session:
        view = forwarding.set_local_part(
            session=session,
            caller=operator(session, tenant),
            channel_id=channel_id,
            local_part=local_part,
            domain=get_settings().inbound_domain,
        )
    emit(as_json, view, f"The address is now {view.address}.")


@forwarding_app.command("activate")
def forwarding_activate(channel_id: int, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Fix the address for good (the first mail it receives does the same)."""
    with session_scope() as session:
        view = forwarding.activate(session=session, caller=operator(session, tenant), channel_id=channel_id)
    emit(as_json, view, f"{view.address} is active.")


@forwarding_app.command("confirmations")
def forwarding_confirmations(channel_id: int, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Providers' forwarding confirmations received (code and link to finish the setup)."""
    with session_scope() as session:
        found = forwarding.list_confirmations(
            session=session, caller=operator(session, tenant), channel_id=channel_id
        )
    if as_json:
        print_json(found)
        return
    if not found:
        say("No confirmation message has arrived yet.")
    for c in found:
        say(f"{c.received_at:%Y-%m-%d %H:%M} {c.provider}: code {c.code or '-'}  link {c.link or '-'}")


@forwarding_app.command("deliveries")
def forwarding_deliveries(
    channel_id: int, limit: int = 20, tenant: TenantOpt = None, as_json: JsonOpt = False
) -> None:
    """What arrived at the address and what became of it."""
    with session_scope() as session:
        found = forwarding.list_deliveries(
            session=session, caller=operator(session, tenant), channel_id=channel_id, limit=limit
        )
    if as_json:
        print_json(found)
        return
    for d in found:
        flag = " (original sender not found)" if d.unattributed else ""
        when = f"{d.received_at:%Y-%m-%d %H:%M}"
        say(f"{when} {d.outcome.value}: {d.credited_from} {d.subject!r} {d.detail}{flag}")


@forwarding_app.command("tickets")
def forwarding_tickets(tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Tickets, newest first."""
    with session_scope() as session:
        found = tickets.list_tickets(session=session, caller=operator(session, tenant))
    if as_json:
        print_json(found)
        return
    for t in found:
        say(f"#{t.number}  {t.stage.value}  {t.priority.value}  {t.subject}")


def inbound() -> None:
    """Receive mail for the forwarding addresses (SMTP, and LMTP when a port is set) until
    SIGTERM/SIGINT. `crm-inbox run` starts the same listener when inbound is enabled."""
    from sync.inbound import InboundServer

    logging.getLogger().setLevel(logging.INFO)
    settings = get_settings()
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = InboundServer(settings)
    server.start()
    lmtp = f", LMTP on port {settings.inbound_lmtp_port}" if settings.inbound_lmtp_port else ""
    where = f"{settings.inbound_host}:{settings.inbound_port}"
    out.print(f"Receiving mail for @{settings.inbound_domain} on {where}{lmtp}", highlight=False)
    try:
        stop.wait()
    finally:
        server.stop()
