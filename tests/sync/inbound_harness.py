"""A tenant with a forwarding channel and the real inbound listener on loopback, for the
inbound tests and the benchmark."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Any

from sqlalchemy import Engine

from core.caller import Caller, Role
from core.db import session_scope
from core.secrets import SecretBox
from core.settings import Settings
from crm import forwarding, tenants
from sync.inbound import InboundServer

DOMAIN = "in.example.com"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class World:
    tenant_id: int
    admin_id: int
    channel_id: int
    account_id: int
    address: str

    @property
    def admin(self) -> Caller:
        return Caller(tenant_id=self.tenant_id, user_id=self.admin_id, role=Role.ADMIN)


def make_world(db: Engine, *, create_tickets: bool = False, original: str = "sales@ourco.example") -> World:
    with session_scope(db) as session:
        tenant = tenants.create_tenant(
            session=session, name="OurCo", account_quota=5, own_domains=["ourco.example"]
        )
        op = Caller.operator(tenant.id)
        admin = tenants.create_user(session=session, caller=op, email="bob@ourco.example", is_admin=True)
        channel = forwarding.create_channel(
            session=session,
            caller=op,
            box=SecretBox.from_settings(),
            domain=DOMAIN,
            name="Sales",
            local_part="sales",
            original_address=original,
            create_tickets=create_tickets,
        )
        return World(tenant.id, admin.id, channel.id, channel.account_id, channel.address)


def inbound_settings(settings: Settings, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "inbound_domain": DOMAIN,
        "inbound_host": "127.0.0.1",
        "inbound_port": free_port(),
        "inbound_max_message_bytes": 200_000,
    }
    values.update(extra)
    return settings.model_copy(update=values)


@contextlib.contextmanager
def listener(settings: Settings, db: Engine | None = None) -> Iterator[InboundServer]:
    server = InboundServer(settings, db)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def mail(
    *,
    sender: str = "jane.doe@acme.example",
    to: str = "sales@ourco.example",
    subject: str = "Pricing question",
    body: str = "Could you send me the pricing for 50 seats?\n",
    message_id: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = message_id or make_msgid(domain="acme.example")
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return wire(msg)


def wire(msg: EmailMessage) -> bytes:
    """The bytes as an MTA sends them: CRLF line ends (smtplib sends bytes as they are)."""
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "forwards"
