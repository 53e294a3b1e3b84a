"""A small world for visibility tests, inserted as rows (no server, no sync):

tenant Acme: accounts A (active), B (active), C (deactivated);
  users: admin, alice (A), bob (B only), carol (C only, deactivated), nobody (no grant);
  threads: "Alpha" (one message in A), "Beta" (two in B), "Shared" (one message in A and B,
  and a reply only in B), "Gamma" (one in C);
tenant Other: its admin, account X, thread "Xeno" (one message in X).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine

from core.caller import Caller, Role
from core.db import session_scope
from core.types import Direction, FolderRole, Security, UidState
from crm.link_service import address_rows
from crm.models import (
    AccountAccess,
    FolderState,
    ImapUid,
    MailAccount,
    Message,
    MessageAddress,
    MessageLink,
    Tenant,
    Thread,
    User,
)
from crm.rules.linking import LinkReason, RecordKind

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


@dataclass
class World:
    tenant: int = 0
    other_tenant: int = 0
    accounts: dict[str, int] = field(default_factory=dict)
    users: dict[str, int] = field(default_factory=dict)
    threads: dict[str, int] = field(default_factory=dict)
    messages: dict[str, int] = field(default_factory=dict)
    contact_id: int = 4242  # a record id the links below point at

    def caller(self, name: str) -> Caller:
        if name == "other_admin":
            return Caller(self.other_tenant, self.users[name], Role.ADMIN)
        role = Role.ADMIN if name == "admin" else Role.MEMBER
        return Caller(self.tenant, self.users[name], role)


def build_world(db: Engine) -> World:
    w = World()
    with session_scope(db) as s:
        acme = Tenant(name="Acme", account_quota=10, own_domains=["acme.test"])
        other = Tenant(name="Other", account_quota=10, own_domains=["other.test"])
        s.add_all([acme, other])
        s.flush()
        w.tenant, w.other_tenant = acme.id or 0, other.id or 0

        def account(tenant: int, key: str, active: bool = True) -> MailAccount:
            row = MailAccount(
                tenant_id=tenant,
                email=f"{key.lower()}@{'acme' if tenant == w.tenant else 'other'}.test",
                imap_host="imap.example.test",
                imap_port=993,
                imap_security=Security.TLS,
                username=key,
                secret_encrypted="not-a-real-token",
                active=active,
            )
            s.add(row)
            s.flush()
            w.accounts[key] = row.id or 0
            return row

        for key, active in (("A", True), ("B", True), ("C", False)):
            account(w.tenant, key, active)
        account(w.other_tenant, "X")

        def user(tenant: int, name: str, admin: bool = False, grants: tuple[str, ...] = ()) -> None:
            row = User(tenant_id=tenant, email=f"{name}@{'acme' if tenant == w.tenant else 'other'}.test")
            row.is_admin = admin
            s.add(row)
            s.flush()
            w.users[name] = row.id or 0
            for key in grants:
                s.add(AccountAccess(user_id=row.id or 0, account_id=w.accounts[key]))

        user(w.tenant, "admin", admin=True)
        user(w.tenant, "alice", grants=("A",))
        user(w.tenant, "bob", grants=("B",))
        user(w.tenant, "carol", grants=("C",))
        user(w.tenant, "nobody")
        user(w.other_tenant, "other_admin", admin=True)

        folders: dict[str, int] = {}
        for key, ident in w.accounts.items():
            folder = FolderState(account_id=ident, role=FolderRole.INBOX, name="INBOX", uidvalidity=1)
            s.add(folder)
            s.flush()
            folders[key] = folder.id or 0

        uid = iter(range(1, 10_000))

        def thread(tenant: int, name: str, subject: str) -> int:
            row = Thread(tenant_id=tenant, subject=subject, normalized_subject=subject.lower())
            s.add(row)
            s.flush()
            w.threads[name] = row.id or 0
            return row.id or 0

        def message(
            tenant: int, key: str, thread_name: str, where: tuple[str, ...], hours: int, sender: str
        ) -> None:
            row = Message(
                tenant_id=tenant,
                message_id=f"<{key}@mail.test>",
                content_hash=key,
                subject=f"Re: {thread_name}",
                date=T0 + timedelta(hours=hours),
                from_email=sender,
                from_name=sender.split("@")[0].title(),
                to_addrs=[{"email": "team@acme.test", "name": ""}],
                bcc_addrs=[{"email": "secret@globex.test", "name": ""}],
                text_body=f"Body of {key}\n> quoted older mail",
                html_body=f"<p onclick='x()'>Body of {key}</p><script>alert(1)</script>",
                direction=Direction.INBOUND,
                thread_id=w.threads[thread_name],
            )
            s.add(row)
            s.flush()
            w.messages[key] = row.id or 0
            for account_key in where:
                s.add(
                    ImapUid(
                        account_id=w.accounts[account_key],
                        folder_id=folders[account_key],
                        uidvalidity=1,
                        uid=next(uid),
                        state=UidState.STORED,
                        message_pk=row.id,
                    )
                )
            s.add(
                MessageLink(
                    tenant_id=tenant,
                    message_pk=row.id or 0,
                    record_kind=RecordKind.CONTACT,
                    record_id=w.contact_id,
                    reason=LinkReason.ADDRESS,
                )
            )
            # The address index the store writes, so records added later find this mail.
            for address in address_rows(row):
                s.add(MessageAddress.model_validate(address))
            t = s.get(Thread, w.threads[thread_name])
            assert t is not None and row.date is not None
            t.first_date = min(t.first_date or row.date, row.date)
            t.last_date = max(t.last_date or row.date, row.date)
            t.message_count += 1

        thread(w.tenant, "Alpha", "Alpha")
        message(w.tenant, "alpha1", "Alpha", ("A",), 1, "ann@globex.test")
        thread(w.tenant, "Beta", "Beta")
        message(w.tenant, "beta1", "Beta", ("B",), 2, "ben@initech.test")
        message(w.tenant, "beta2", "Beta", ("B",), 3, "ben@initech.test")
        thread(w.tenant, "Shared", "Shared")
        message(w.tenant, "shared1", "Shared", ("A", "B"), 4, "sue@globex.test")
        message(w.tenant, "shared2", "Shared", ("B",), 5, "bob@acme.test")
        thread(w.tenant, "Gamma", "Gamma")
        message(w.tenant, "gamma1", "Gamma", ("C",), 6, "gus@umbrella.test")
        thread(w.other_tenant, "Xeno", "Xeno")
        message(w.other_tenant, "xeno1", "Xeno", ("X",), 7, "xavier@globex.test")
    return w
