"""The README's first command: a local Dovecot filled with sample mail, synced into embedded
SQLite, then a look at what was synced. Everything stays on loopback and in one folder."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pydantic import SecretStr
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, func
from sqlmodel import Session, col, select

from core.caller import Caller
from core.db import make_engine, migrate, session_scope, set_engine
from core.secrets import SecretBox
from core.settings import get_settings, reset_settings
from core.types import Security
from crm import auth, grants, inbox_views, mailboxes, records, reports, tenants
from crm.models import Company, Message, MessageLink, SkippedMessage, Thread
from devtools.devmail import LocalDovecot
from devtools.samples import COMPANIES, build_message, generate_mailbox

_PLURAL = {"company": "companies", "contact": "contacts", "deal": "deals"}


def _demo_records(session: Session, tenant_id: int) -> None:
    """The sample companies and their people, plus one open deal each, as a CRM would hold them
    before the mailbox is connected: the sync then files the mail onto them."""
    operator = Caller.operator(tenant_id)
    for company in COMPANIES:
        row = records.create_company(
            session=session, caller=operator, name=company.name, domains=[company.domain]
        )
        people = []
        for name, local in company.contacts[:1]:
            first, _, last = name.partition(" ")
            people.append(
                records.create_contact(
                    session=session,
                    caller=operator,
                    emails=[f"{local}@{company.domain}"],
                    first_name=first,
                    last_name=last,
                    company_id=row.id,
                ).id
            )
        records.create_deal(
            session=session,
            caller=operator,
            title=f"{company.name}: 2024 order",
            contact_ids=people,
            company_id=row.id,
        )


def _demo_people(engine: Engine, tenant_id: int, account_id: int) -> list[tuple[str, str, str]]:
    """The demo's admin (made with the tenant) and a sales member with access to the mailbox,
    each with a fresh random password printed once."""
    operator = Caller.operator(tenant_id)
    people = []
    with session_scope(engine) as session:
        sam = tenants.create_user(session=session, caller=operator, email="sam@acme.test", first_name="Sam")
        grants.grant_access(session=session, caller=operator, account_id=account_id, user_id=sam.id)
        dana = tenants.find_user(session=session, caller=operator, ref="dana@acme.test")
        for user, role in ((dana, "admin"), (sam, "member")):
            password = secrets.token_urlsafe(9)
            auth.set_password(session=session, caller=operator, user_id=user.id, password=SecretStr(password))
            people.append((user.email, role, password))
    return people


def run_demo(directory: str, count: int, out: Console, *, serve: bool = False, port: int = 8025) -> None:
    base = Path(directory).resolve()
    base.mkdir(parents=True, exist_ok=True)
    db_path = base / "crm-inbox.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db_path}{suffix}").unlink(missing_ok=True)
    # The demo talks to its own Dovecot on 127.0.0.1, so it allows loopback hosts.
    os.environ.update(
        CRM_INBOX_DATA_DIR=str(base),
        CRM_INBOX_DATABASE_URL=f"sqlite:///{db_path}",
        CRM_INBOX_ALLOW_PRIVATE_HOSTS="true",
    )
    reset_settings()
    settings = get_settings()
    engine = make_engine(settings.resolved_database_url)
    set_engine(engine)
    migrate(engine)

    with LocalDovecot(base / "dovecot", tls=True) as dovecot:
        ssl_port = dovecot.ssl_port
        assert ssl_port is not None  # started with tls=True
        password = secrets.token_urlsafe(16)
        dovecot.add_user("sales", password)
        out.print(f"Local Dovecot on 127.0.0.1:{dovecot.ssl_port} (TLS, private test CA {dovecot.ca_file})")
        mail = list(generate_mailbox(count, seed=7, own_address="sales@acme.test"))
        for folder in ("INBOX", "Sent"):
            dovecot.append_many("sales", folder, [m.raw for m in mail if m.folder == folder])
        # One mass mailing over the 100-recipient limit, to show how skipped mail is reported.
        crowd = [f"customer{i}@globex.test" for i in range(120)]
        dovecot.append(
            "sales", "INBOX", build_message(subject="Newsletter", from_="news@acme.test", to=crowd)
        )
        out.print(f"Loaded {len(mail) + 1} sample messages into INBOX and Sent.")

        with session_scope(engine) as session:
            tenant = tenants.create_tenant(session=session, name="Acme (demo)", own_domains=["acme.test"])
            tenants.create_user(
                session=session, caller=Caller.operator(tenant.id or 0), email="dana@acme.test", is_admin=True
            )
            _demo_records(session, tenant.id or 0)
            account = mailboxes.add_account(
                session=session,
                caller=Caller.operator(tenant.id or 0),
                data=mailboxes.AccountInput(
                    email="sales@acme.test",
                    imap_host=dovecot.host,
                    imap_port=ssl_port,
                    imap_security=Security.TLS,
                    username="sales",
                    ca_file=str(dovecot.ca_file),
                ),
                password=SecretStr(password),
                box=SecretBox.from_settings(settings),
            )
            account_id = account.id or 0
            tenant_id = tenant.id or 0

        from sync.account_pass import SyncEngine

        with SyncEngine(db=engine, settings=settings) as sync:
            first = sync.sync_account(account_id)
            second = sync.sync_account(account_id)

    table = Table("pass", "result", "new messages", "skipped (>100 recipients)", "malformed", "errors")
    for label, s in (("first sync", first), ("second sync", second)):
        table.add_row(
            label, s.status, str(s.new_messages), str(s.skipped), str(s.malformed), "; ".join(s.errors)
        )
    out.print(table)
    with session_scope(engine) as session:
        messages = session.exec(select(func.count(col(Message.id)))).one()
        threads = session.exec(select(func.count(col(Thread.id)))).one()
        skipped = session.exec(select(SkippedMessage)).all()
        # What the inbox service shows the team, newest activity first.
        latest = inbox_views.list_threads(session=session, caller=Caller.operator(tenant_id), limit=8).items
        views = mailboxes.list_accounts(session=session, caller=Caller.operator(tenant_id))
        responsiveness = reports.first_response(
            session=session, caller=Caller.operator(tenant_id), by=reports.ReportBy.COMPANY
        )
        linked = session.exec(
            select(MessageLink.record_kind, func.count(func.distinct(MessageLink.message_pk))).group_by(
                MessageLink.record_kind
            )
        ).all()
        per_company = session.exec(
            select(Company.name, func.count(func.distinct(MessageLink.message_pk)))
            .join(
                MessageLink,
                (col(MessageLink.record_id) == Company.id) & (col(MessageLink.record_kind) == "company"),
            )
            .group_by(Company.name)
            .order_by(Company.name)
        ).all()
    out.print(f"Stored {messages} messages in {threads} threads; {len(skipped)} skipped.")
    for row in skipped:
        out.print(f"  skipped: {row.subject!r} from {row.from_email}: {row.detail}")
    out.print(
        "Linked to CRM records: "
        + ", ".join(f"{n} messages on {_PLURAL.get(kind, kind)}" for kind, n in linked)
    )
    companies = Table("company", "linked messages")
    for name, n in per_company:
        companies.add_row(name, str(n))
    out.print(companies)
    answers = Table("company", "inbound threads", "answered", "median first response")
    for answer in responsiveness:
        median = f"{answer.median_seconds / 3600:.1f} h" if answer.median_seconds is not None else "-"
        answers.add_row(answer.label, str(answer.threads), str(answer.answered), median)
    out.print(answers)
    recent = Table("latest threads", "messages", "last message (UTC)")
    for thread in latest:
        recent.add_row(thread.subject[:60], str(thread.message_count), f"{thread.last_date:%Y-%m-%d %H:%M}")
    out.print(recent)
    for view in views:
        out.print(
            f"Account {view.id} {view.email}: {view.status.value}, folders: "
            + ", ".join(f"{f.name} (last sync {f.last_success_at:%H:%M:%S})" for f in view.folders)
        )
    out.print(f"Database: {db_path}")
    people = _demo_people(engine, tenant_id, account_id)
    out.print("Sign in to the shared inbox with (one-time demo passwords):")
    for email, role, password_ in people:
        out.print(f"  {email} ({role}): {password_}", highlight=False)
    if not serve:
        out.print(
            f"Serve it with: crm-inbox serve --port {port} (CRM_INBOX_DATABASE_URL=sqlite:///{db_path})"
        )
        return
    import uvicorn

    from inbox_api.app import create_app

    out.print(f"Shared inbox: http://127.0.0.1:{port}/  (Ctrl-C to stop)")
    uvicorn.run(create_app(), host="127.0.0.1", port=port, log_level="warning")


def main(argv: list[str] | None = None) -> None:
    """`python -m devtools.demo [--dir DIR] [--messages N]` (what `./scripts/demo` runs)."""
    import argparse

    parser = argparse.ArgumentParser(prog="demo", description=__doc__)
    parser.add_argument("--dir", default="demo-data", help="Where the demo keeps its files.")
    parser.add_argument("--messages", type=int, default=300, help="Sample messages in the demo mailbox.")
    parser.add_argument("--port", type=int, default=8025, help="Port of the shared inbox page.")
    parser.add_argument("--no-serve", action="store_true", help="Print the summary and exit (scripts, CI).")
    args = parser.parse_args(argv)
    run_demo(args.dir, args.messages, Console(soft_wrap=True), serve=not args.no_serve, port=args.port)


if __name__ == "__main__":
    main()
