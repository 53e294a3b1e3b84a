"""Inbound forwarding benchmark: messages per second accepted AND stored by the listener,
against smtplib sending the very same messages to a bare aiosmtpd sink in the same run.

    .venv/bin/python bench/inbound_bench.py                      # 500 messages, SQLite
    .venv/bin/python bench/inbound_bench.py --messages 2000 --pg postgresql+psycopg://...

One run, one machine:

* baseline: an aiosmtpd `Controller` whose handler only appends the bytes to a list (what any
  SMTP server costs: the protocol and the loopback), fed by `--clients` smtplib connections
  sending `--messages` messages in total;
* inbound: `sync.inbound.InboundServer` on a fresh migrated database (SQLite file, or a fresh
  PostgreSQL database with `--pg`), one tenant, one forwarding channel, the same messages and
  clients. Each 250 means parsed, credited, stored, threaded, linked and committed.
  A fifth of the messages are inline forwards by a user (credit rewrite), a fifth replies.

The figures are printed and appended as a section to bench/RESULTS.md (unless --no-results).
"""

from __future__ import annotations

import argparse
import os
import random
import smtplib
import socket
import sys
import tempfile
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aiosmtpd.controller import Controller  # noqa: E402
from sqlalchemy import create_engine, func, text  # noqa: E402
from sqlmodel import select  # noqa: E402

from core.caller import Caller  # noqa: E402
from core.db import make_engine, migrate, session_scope, set_engine  # noqa: E402
from core.secrets import SecretBox  # noqa: E402
from core.settings import get_settings, reset_settings  # noqa: E402
from crm import forwarding, tenants  # noqa: E402
from crm.models import Message  # noqa: E402
from sync.inbound import InboundServer, InboundStore  # noqa: E402

DOMAIN = "in.example.com"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def messages(count: int, seed: int = 7) -> list[bytes]:
    rng = random.Random(seed)
    start = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
    out: list[bytes] = []
    ids: list[str] = []
    for n in range(count):
        msg = EmailMessage()
        customer = f"customer{rng.randrange(count // 3 + 1)}@client{rng.randrange(50)}.example"
        kind = rng.random()
        message_id = f"<bench-{n}-{uuid.uuid4().hex[:8]}@client.example>"
        if kind < 0.2:
            msg["From"] = "Bob Seller <bob@ourco.example>"
            msg["Subject"] = f"Fwd: Order {n}"
            body = (
                "FYI\n\n---------- Forwarded message ---------\n"
                f"From: Customer <{customer}>\nDate: Mon, Mar 2, 2026 at 9:00 AM\n"
                f"Subject: Order {n}\nTo: Bob <bob@ourco.example>\n\nPlease ship {n} units.\n"
            )
        else:
            msg["From"] = customer
            msg["Subject"] = f"Order {n}" if kind > 0.4 or not ids else "Re: Order"
            body = f"Hello,\n\nplease see order {n}.\n" + "Lorem ipsum dolor sit amet. " * rng.randrange(
                5, 60
            )
            if kind <= 0.4 and ids:
                msg["In-Reply-To"] = rng.choice(ids)
        msg["To"] = "sales@ourco.example"
        msg["Date"] = format_datetime(start + timedelta(minutes=n))
        msg["Message-ID"] = message_id
        msg["X-Forwarded-For"] = f"sales@ourco.example sales@{DOMAIN}"
        msg.set_content(body)
        ids.append(message_id)
        out.append(msg.as_bytes(policy=msg.policy.clone(linesep="\r\n")))
    return out


def send_all(port: int, rcpt: str, raws: list[bytes], clients: int) -> float:
    """Seconds to have every message answered 250, over `clients` parallel connections."""
    errors: list[BaseException] = []

    def worker(part: list[bytes]) -> None:
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=120) as client:
                for raw in part:
                    refused = client.sendmail("sales@ourco.example", [rcpt], raw)
                    assert refused == {}
        except BaseException as exc:  # reported after the join
            errors.append(exc)

    parts = [raws[i::clients] for i in range(clients)]
    threads = [threading.Thread(target=worker, args=(p,)) for p in parts]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


class Sink:
    def __init__(self) -> None:
        self.received: list[bytes] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.received.append(bytes(envelope.original_content))
        return "250 OK"


def baseline(raws: list[bytes], clients: int) -> float:
    sink = Sink()
    port = free_port()
    controller = Controller(sink, hostname="127.0.0.1", port=port, data_size_limit=None)
    controller.start()
    try:
        elapsed = send_all(port, f"sales@{DOMAIN}", raws, clients)
    finally:
        controller.stop()
    assert len(sink.received) == len(raws), (len(sink.received), len(raws))
    return elapsed


def inbound(
    raws: list[bytes], clients: int, url: str, *, group: int = InboundStore.MAX_GROUP
) -> tuple[float, int]:
    engine = make_engine(url)
    migrate(engine)
    set_engine(engine)
    with session_scope(engine) as session:
        tenant = tenants.create_tenant(
            session=session, name="OurCo", account_quota=5, own_domains=["ourco.example"]
        )
        op = Caller.operator(tenant.id)
        tenants.create_user(session=session, caller=op, email="bob@ourco.example", is_admin=True)
        channel = forwarding.create_channel(
            session=session,
            caller=op,
            box=SecretBox.from_settings(),
            domain=DOMAIN,
            name="Sales",
            local_part="sales",
        )
    settings = get_settings().model_copy(
        update={
            "inbound_domain": DOMAIN,
            "inbound_port": free_port(),
            "inbound_max_message_bytes": 10_000_000,
        }
    )
    server = InboundServer(settings, engine)
    server.store.MAX_GROUP = group
    server.start()
    try:
        elapsed = send_all(settings.inbound_port, channel.address, raws, clients)
    finally:
        server.stop()
    with session_scope(engine) as session:
        stored = int(session.exec(select(func.count()).select_from(Message)).one())
    engine.dispose()
    set_engine(None)
    return elapsed, stored


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=500)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument(
        "--pg", default="", help="PostgreSQL admin URL (a fresh database is made and dropped)"
    )
    parser.add_argument("--no-results", action="store_true")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="inbound-bench-"))
    os.environ["CRM_INBOX_DATA_DIR"] = str(tmp)
    os.environ["CRM_INBOX_SECRET_KEY"] = Fernet.generate_key().decode()
    reset_settings()
    raws = messages(args.messages)
    size = sum(map(len, raws)) / len(raws)
    print(f"{len(raws)} messages, {size:,.0f} bytes on average, {args.clients} clients")

    base = baseline(raws, args.clients)
    print(f"bare aiosmtpd sink:          {len(raws) / base:8.1f} msg/s ({base:.2f} s)")

    results: list[tuple[str, float, int]] = []
    for label, group, name in (
        ("SQLite", InboundStore.MAX_GROUP, "bench.db"),
        ("SQLite, no group commit", 1, "solo.db"),
    ):
        elapsed, stored = inbound(raws, args.clients, f"sqlite:///{tmp / name}", group=group)
        results.append((label, elapsed, stored))
        print(
            f"inbound, stored ({label}): {len(raws) / elapsed:8.1f} msg/s ({elapsed:.2f} s, {stored} stored)"
        )
    if args.pg:
        name = f"crm_inbox_bench_{uuid.uuid4().hex[:8]}"
        admin = create_engine(args.pg, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            elapsed, stored = inbound(raws, args.clients, args.pg.rsplit("/", 1)[0] + f"/{name}")
            results.append(("PostgreSQL", elapsed, stored))
            rate = len(raws) / elapsed
            print(f"inbound, stored (PostgreSQL):{rate:8.1f} msg/s ({elapsed:.2f} s, {stored} stored)")
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
            admin.dispose()

    if not args.no_results:
        write_results(len(raws), size, args.clients, base, results)


def write_results(
    count: int, size: float, clients: int, base: float, results: list[tuple[str, float, int]]
) -> None:
    lines = [
        "",
        f"## Inbound forwarding: accepted and stored ({datetime.now(UTC):%Y-%m-%d})",
        "",
        f"`bench/inbound_bench.py --messages {count} --clients {clients}`: {count} messages "
        f"({size:,.0f} bytes on average; a fifth inline forwards by a user, a fifth replies) sent with "
        "smtplib over loopback. Baseline in the same run: the same messages to a bare aiosmtpd sink "
        "(handler appends the bytes and answers 250). Inbound: each 250 is answered after the "
        "message was parsed, credited, stored, threaded, linked and committed.",
        "",
        "| target | msg/s | seconds | stored | vs. bare sink |",
        "|---|---|---|---|---|",
        f"| bare aiosmtpd sink | {count / base:.1f} | {base:.2f} | - | 1.0x |",
    ]
    for name, elapsed, stored in results:
        lines.append(
            f"| inbound listener, {name} | {count / elapsed:.1f} | {elapsed:.2f} | {stored} | "
            f"{base / elapsed:.2f}x |"
        )
    with (ROOT / "bench" / "RESULTS.md").open("a", encoding="utf-8") as handle:
        handle.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
