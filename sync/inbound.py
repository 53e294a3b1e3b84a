"""The inbound SMTP (and LMTP) listener of the hosted forwarding addresses.

Mail for `<local>-<suffix>@<inbound_domain>` arrives here from the team's provider (a forwarding
rule, a Google Group, an alias) or from a person forwarding by hand. The protocol rules:

* RCPT is checked at once (RFC 5321 3.3): an address outside our domain is refused with 550
  5.7.1 (we are not a relay), an unknown or deactivated address with 550 5.1.1. Nothing is ever
  accepted and then dropped: a sender learns at RCPT time that a recipient does not exist.
* After DATA the message is parsed by the same bounded parser as synced mail and written by
  `crm.forwarding.store` through `crm.mailstore` in ONE transaction for all its recipients; 250
  is answered only after that commit. A crash before it: no 250, the sender retries. A crash
  after it: the retry carries the same envelope and Message-ID and is answered 250 without a
  second copy (`InboundDelivery.dedupe_key`). A database that is busy or down answers 451, a
  temporary failure the sender retries.
* LMTP (RFC 2033) answers DATA once per recipient, so one channel's failure does not make the
  MTA resend to the others.
* Limits: the message size (SIZE in EHLO, 552 past it, from aiosmtpd), the number of open
  connections per peer address (421 past it), the bounded parser. STARTTLS when a certificate
  is configured.

The blocking database work runs in a thread (`run_in_executor`) so the event loop keeps
serving other connections meanwhile.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import queue
import ssl
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from email.parser import BytesHeaderParser
from email.policy import compat32
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.lmtp import LMTP
from aiosmtpd.smtp import SMTP, Envelope, Session as SmtpSession
from sqlalchemy import Engine

from core.db import get_engine, session_scope
from core.settings import Settings
from core.types import DeliveryOutcome, SkipReason
from crm.forwarding import store
from crm.forwarding.channels import TEST_SUBJECT
from crm.rules.inbound import CreditKind, Ignore, credit_sender, find_confirmation, ignore_reason
from sync.message_data import to_message_data
from sync.parse import parse_message
from sync.types import ParsedMessage

log = logging.getLogger(__name__)

_HEADER_SCAN_BYTES = 256 * 1024
_MAX_RECEIVED = 50  # RFC 5321 6.3: a message with this many Received fields is looping
_SKIP_REASONS = {
    Ignore.BOUNCE: SkipReason.BOUNCE,
    Ignore.AUTOMATED: SkipReason.AUTOMATED,
    Ignore.OWN_MAIL: SkipReason.OWN_MAIL,
}

REPLY_OK = "250 2.0.0 OK: stored"
REPLY_DUPLICATE = "250 2.0.0 OK: already stored"
REPLY_LOOP = "554 5.4.6 Routing loop detected: this message keeps coming back"
REPLY_TEMPFAIL = "451 4.3.0 Temporary failure storing the message; try again later"
REPLY_RELAY = "550 5.7.1 Relaying denied: this server only accepts mail for its own addresses"
REPLY_UNKNOWN = "550 5.1.1 No such mailbox here"
REPLY_BUSY = "421 4.7.0 Too many connections from your address; try again later"


def top_headers(raw: bytes) -> list[tuple[str, str]]:
    """Every top-level header field, from at most the first 256 KiB (bounded, never raising)."""
    head = raw[:_HEADER_SCAN_BYTES]
    end = head.find(b"\r\n\r\n")
    if end < 0:
        end = head.find(b"\n\n")
    if end >= 0:
        head = head[: end + 2]
    try:
        parsed = BytesHeaderParser(policy=compat32).parsebytes(head)
        return [(str(k).lower(), str(v)) for k, v in parsed.items()]
    except Exception:
        return []


def dedupe_key(mail_from: str, rcpt: str, message_id: str) -> str:
    """Envelope + Message-ID: the same delivery retried hashes the same."""
    text = "\n".join((mail_from.strip().lower(), rcpt.strip().lower(), message_id))
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


@dataclass(frozen=True, slots=True)
class Delivered:
    """What one DATA became, per recipient (in RCPT order)."""

    replies: tuple[str, ...]

    def smtp_reply(self) -> str:
        """One SMTP reply for all recipients: a success when any channel took it (the others'
        outcomes are recorded on their channels), else the first refusal."""
        good = [r for r in self.replies if r.startswith("250")]
        if good:
            return good[0]
        return self.replies[0] if self.replies else REPLY_TEMPFAIL


@dataclass(slots=True)
class _Job:
    """One DATA waiting for the committer."""

    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    parsed: ParsedMessage
    headers: list[tuple[str, str]]
    done: threading.Event = field(default_factory=threading.Event)
    result: Delivered | None = None


_REPLIES = {
    store.Result.STORED: REPLY_OK,
    store.Result.DUPLICATE: REPLY_DUPLICATE,
    store.Result.LOOP: REPLY_LOOP,
}


class InboundStore:
    """Parse, decide and store DATA (blocking; the handler runs `deliver` in a thread).

    Group commit: parsing happens in the calling threads; one committer thread writes whatever
    has queued up meanwhile in ONE transaction (`store.deliver_many`), then releases each
    waiting caller with its replies. A message alone costs one transaction as before; under
    load, messages share the per-transaction and per-batch costs of `crm.mailstore`. Nobody
    gets a 250 before the commit of the group that holds their message. A group that fails is
    retried message by message, so one bad message only costs itself a 451."""

    MAX_GROUP = 64

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine
        # Test hooks around the commit (the kill -9 tests stop the process exactly there).
        self.before_commit: Callable[[], None] | None = None
        self.after_commit: Callable[[], None] | None = None
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._writer: threading.Thread | None = None
        self._lock = threading.Lock()
        self._known: dict[str, store.Route | None] = {}
        self._own: dict[int, tuple[frozenset[str], frozenset[str]]] = {}

    @property
    def db(self) -> Engine:
        return self.engine or get_engine()

    def resolve(self, address: str) -> store.Route | None:
        with session_scope(self.db) as session:
            return store.resolve(session=session, address=address)

    def deliver(self, *, mail_from: str, rcpt_tos: list[str], raw: bytes) -> Delivered:
        job = _Job(mail_from, list(rcpt_tos), raw, parse_message(raw), top_headers(raw))
        with self._lock:
            if self._writer is None or not self._writer.is_alive():
                self._writer = threading.Thread(target=self._run, name="inbound-commit", daemon=True)
                self._writer.start()
        self._queue.put(job)
        job.done.wait()
        assert job.result is not None
        return job.result

    def close(self) -> None:
        """Stop the committer once the queued messages are written."""
        with self._lock:
            writer, self._writer = self._writer, None
        if writer is not None:
            self._queue.put(None)
            writer.join(timeout=30)

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            while len(jobs) < self.MAX_GROUP:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._queue.put(None)  # stop after this group
                    break
                jobs.append(more)
            results = self._write(jobs)
            if results is None:  # the group failed: each message alone, so one bad one costs only itself
                alone = [(self._write([j]) if len(jobs) > 1 else None) or [_tempfail(j)] for j in jobs]
                results = [r[0] for r in alone]
            for one, result in zip(jobs, results, strict=True):
                one.result = result
                one.done.set()

    def _write(self, jobs: list[_Job]) -> list[Delivered] | None:
        """All `jobs` in one transaction; None when it failed (nothing of it is stored)."""
        replies: list[dict[str, str]] = [{} for _ in jobs]
        try:
            with session_scope(self.db) as session:
                self._known = {}  # per group: one lookup per address and tenant
                self._own = {}
                work: list[tuple[store.Route, store.Arrival]] = []
                where: list[tuple[int, list[str]]] = []  # (job, its recipients) per work item
                for n, job in enumerate(jobs):
                    received = sum(1 for k, _ in job.headers if k == "received")
                    by_channel: dict[int, list[str]] = {}
                    routes: dict[int, store.Route] = {}
                    for rcpt in job.rcpt_tos:
                        key = rcpt.strip().lower()
                        if key not in self._known:
                            self._known[key] = store.resolve(session=session, address=rcpt)
                        route = self._known[key]
                        if route is None:  # removed since RCPT: refused for this one only
                            replies[n][rcpt] = REPLY_UNKNOWN
                        elif received > _MAX_RECEIVED:
                            replies[n][rcpt] = REPLY_LOOP
                        else:  # one delivery per channel, whatever the aliases used
                            routes.setdefault(route.account_id, route)
                            by_channel.setdefault(route.account_id, []).append(rcpt)
                    for account_id, rcpts in by_channel.items():
                        route = routes[account_id]
                        arrival = self._arrival(session, route, job, rcpts[0])
                        work.append((route, arrival))
                        where.append((n, rcpts))
                stored = store.deliver_many(
                    session=session,
                    jobs=work,
                    loop_threshold=self.settings.inbound_loop_threshold,
                    identities={tenant: own[0] for tenant, own in self._own.items()},  # read once
                )
                for (route, arrival), (n, rcpts), result in zip(work, where, stored, strict=True):
                    if result.result is store.Result.LOOP:
                        log.warning("forwarding loop stopped at %s: %s", route.address, arrival.message_id)
                    for rcpt in rcpts:
                        replies[n][rcpt] = _REPLIES[result.result]
                if self.before_commit is not None:
                    self.before_commit()
        except Exception as exc:  # busy, down, or a bug: never a 250, never a dead committer
            log.warning("inbound mail not stored (%s); answering 451", type(exc).__name__)
            return None
        if self.after_commit is not None:
            self.after_commit()
        return [
            Delivered(tuple(r.get(rcpt, REPLY_TEMPFAIL) for rcpt in job.rcpt_tos))
            for job, r in zip(jobs, replies, strict=True)
        ]

    def _arrival(self, session: Any, route: store.Route, job: _Job, rcpt: str) -> store.Arrival:
        mail_from, raw, parsed, headers = job.mail_from, job.raw, job.parsed, job.headers
        message_id = parsed.message_id
        from_email = parsed.from_.email if parsed.from_ else ""
        base = store.Arrival(
            dedupe_key=dedupe_key(mail_from, rcpt, message_id),
            message_id=message_id,
            mail_from=mail_from,
            subject=parsed.subject,
            outcome=DeliveryOutcome.STORED,
            credited_from=from_email,
            date=parsed.date,
            recipient_count=parsed.recipient_count,
        )
        if route.test_token and f"{TEST_SUBJECT} {route.test_token}" in parsed.subject:
            base.outcome, base.detail = DeliveryOutcome.TEST, "the test came back through the forward"
            return base
        confirmation = find_confirmation(
            from_email=from_email, subject=parsed.subject, text_body=parsed.text_body
        )
        if confirmation is not None:
            base.outcome, base.detail = (
                DeliveryOutcome.CONFIRMATION,
                f"{confirmation.provider} forwarding confirmation",
            )
            base.facts = {
                "provider": confirmation.provider,
                "code": confirmation.code,
                "link": confirmation.link,
                "requested_by": confirmation.requested_by,
            }
            return base
        channel_addresses = frozenset(a for a in (route.address, route.original_address) if a)
        if route.tenant_id not in self._own:
            self._own[route.tenant_id] = store.own_addresses(session=session, tenant_id=route.tenant_id)
        identities, domains = self._own[route.tenant_id]

        def is_own(email: str) -> bool:
            domain = email.rpartition("@")[2]
            return email in identities or any(domain == d or domain.endswith("." + d) for d in domains)

        credit = credit_sender(
            headers=headers,
            from_=(from_email, parsed.from_.name) if parsed.from_ else None,
            envelope_from=mail_from,
            subject=parsed.subject,
            text_body=parsed.text_body,
            attached_senders=[(a.email, a.name) for a in parsed.attached_message_senders],
            is_own=is_own,
            channel_addresses=channel_addresses,
            hosted_address=route.address,
        )
        content_type = next((v for k, v in headers if k == "content-type"), "")
        ignored = ignore_reason(
            headers=headers,
            envelope_from=mail_from,
            # The credited author: a group that rewrote From to the team's address still
            # brings a customer's mail, while the channel writing to itself does not.
            from_email=credit.email,
            content_type=content_type,
            channel_addresses=channel_addresses,
            ours=store.is_ours(session=session, tenant_id=route.tenant_id, message_id=message_id),
        )
        if ignored is not None:
            base.outcome, base.detail = DeliveryOutcome.SKIPPED, ignored[1]
            base.skip = (_SKIP_REASONS[ignored[0]], ignored[1])
            return base
        if parsed.recipient_count > self.settings.max_recipients:
            # The same rule as synced mail (sync/folder_pass.py): a mass mailing is no conversation.
            detail = (
                f"Mail addressed to {parsed.recipient_count} recipients is over the limit of "
                f"{self.settings.max_recipients} and is not synced as conversation mail."
            )
            base.outcome, base.detail = DeliveryOutcome.SKIPPED, detail
            base.skip = (SkipReason.TOO_MANY_RECIPIENTS, detail)
            return base

        data = to_message_data(parsed, raw=raw if parsed.parse_errors else None)
        extra: list[tuple[str, str]] = [("x-crm-credit", credit.kind.value)]
        if credit.forwarded_by:
            extra.append(("x-crm-forwarded-by", credit.forwarded_by))
        if credit.rewritten:
            # Credited to the customer and addressed as the customer wrote to the team, so the
            # subject fallback threads it with that customer's conversation; the forwarder is
            # kept beside it ("forwarded by ...").
            data = replace(
                data,
                from_email=credit.email,
                from_name=credit.name,
                to=((route.original_address or route.address, ""),),
                cc=(),
                reply_to=(),
            )
        data = replace(data, headers=(*data.headers, *extra))
        base.data = data
        base.credited_from = credit.email
        base.forwarded_by = credit.forwarded_by
        base.unattributed = credit.kind is CreditKind.UNATTRIBUTED
        base.detail = f"credited ({credit.kind.value})" + (
            f", forwarded by {credit.forwarded_by}" if credit.forwarded_by else ""
        )
        return base


def _tempfail(job: _Job) -> Delivered:
    return Delivered(tuple(REPLY_TEMPFAIL for _ in job.rcpt_tos))


class _PeerLimit:
    """Open connections per peer address (shared by one listener's protocol instances, all on
    its one event loop thread)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open: Counter[str] = Counter()

    def acquire(self, peer: str) -> bool:
        if self.open[peer] >= self.limit:
            return False
        self.open[peer] += 1
        return True

    def release(self, peer: str) -> None:
        self.open[peer] -= 1
        if self.open[peer] <= 0:
            del self.open[peer]


class _Limited:
    """Mixin for aiosmtpd's SMTP/LMTP: refuse a peer over its connection limit with 421."""

    limiter: _PeerLimit
    _peer_ip: str | None = None
    _refused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if getattr(self, "_original_transport", None) is None and self._peer_ip is None:
            peer = transport.get_extra_info("peername")
            ip = str(peer[0]) if peer else "?"
            if not self.limiter.acquire(ip):
                self._refused = True
                transport.write(f"{REPLY_BUSY}\r\n".encode())  # type: ignore[attr-defined]
                transport.close()
                return
            self._peer_ip = ip
        super().connection_made(transport)  # type: ignore[misc]

    def connection_lost(self, error: Exception | None) -> None:
        if self._refused:
            return
        if self._peer_ip is not None:
            self.limiter.release(self._peer_ip)
            self._peer_ip = None
        super().connection_lost(error)  # type: ignore[misc]


class _LimitedSMTP(_Limited, SMTP):
    def __init__(self, handler: Any, *, limiter: _PeerLimit, **kwargs: Any) -> None:
        self.limiter = limiter
        super().__init__(handler, **kwargs)


class _LimitedLMTP(_Limited, LMTP):
    def __init__(self, handler: Any, *, limiter: _PeerLimit, **kwargs: Any) -> None:
        self.limiter = limiter
        super().__init__(handler, **kwargs)


class InboundHandler:
    """aiosmtpd handler: RCPT checked against the channels, DATA stored before the reply."""

    def __init__(self, inbound: InboundStore, *, lmtp: bool = False) -> None:
        self.inbound = inbound
        self.lmtp = lmtp
        self.domain = inbound.settings.inbound_domain

    async def handle_RCPT(
        self, server: SMTP, session: SmtpSession, envelope: Envelope, address: str, rcpt_options: list[str]
    ) -> str:
        domain = address.rpartition("@")[2].strip().lower()
        if domain != self.domain:
            return REPLY_RELAY
        try:
            route = await asyncio.get_running_loop().run_in_executor(None, self.inbound.resolve, address)
        except Exception:  # the database is busy or down: the sender tries again later
            return "451 4.3.0 Temporary failure checking the recipient; try again later"
        if route is None:
            return REPLY_UNKNOWN
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server: SMTP, session: SmtpSession, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8", "surrogateescape")
        delivered = await asyncio.get_running_loop().run_in_executor(
            None,
            lambda: self.inbound.deliver(
                mail_from=envelope.mail_from or "", rcpt_tos=list(envelope.rcpt_tos), raw=bytes(raw)
            ),
        )
        if self.lmtp:
            return "\r\n".join(delivered.replies)  # RFC 2033 4.2: one reply per recipient
        return delivered.smtp_reply()


def _tls_context(settings: Settings) -> ssl.SSLContext | None:
    if not settings.inbound_tls_cert or not settings.inbound_tls_key:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(settings.inbound_tls_cert), str(settings.inbound_tls_key))
    return context


class _Controller(Controller):
    def __init__(
        self, handler: InboundHandler, *, cls: type[SMTP], limiter: _PeerLimit, **kwargs: Any
    ) -> None:
        self._cls = cls
        self._limiter = limiter
        super().__init__(handler, **kwargs)

    def factory(self) -> SMTP:
        return self._cls(self.handler, limiter=self._limiter, **self.SMTP_kwargs)  # type: ignore[call-arg]


class InboundServer:
    """The SMTP listener (and the LMTP one when configured), each on its own event-loop thread."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.store = InboundStore(settings, engine)
        self.controllers: list[Controller] = []

    def start(self) -> None:
        # aiosmtpd logs every command (senders, recipients) at INFO: too chatty for a server
        # that logs at INFO, and addresses are personal data. Our own log says what matters.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
        s = self.settings
        tls = _tls_context(s)
        common: dict[str, Any] = {
            "hostname": s.inbound_host,
            "data_size_limit": s.inbound_max_message_bytes,
            "decode_data": False,
            "ident": "crm-inbox inbound",
            "timeout": 300,
        }
        if tls is not None:
            common["tls_context"] = tls
        plans: list[tuple[int, type[SMTP], bool]] = [(s.inbound_port, _LimitedSMTP, False)]
        if s.inbound_lmtp_port:
            plans.append((s.inbound_lmtp_port, _LimitedLMTP, True))
        for port, cls, lmtp in plans:
            server_kwargs = dict(common)
            hostname = server_kwargs.pop("hostname")
            controller = _Controller(
                InboundHandler(self.store, lmtp=lmtp),
                cls=cls,
                limiter=_PeerLimit(s.inbound_max_connections_per_peer),
                hostname=hostname,
                port=port,
                server_hostname=s.inbound_domain,
                **server_kwargs,
            )
            controller.start()
            self.controllers.append(controller)
        log.info("inbound mail for @%s on %s:%s", s.inbound_domain, s.inbound_host, s.inbound_port)

    def stop(self) -> None:
        for controller in self.controllers:
            controller.stop(no_assert=True)
        self.controllers.clear()
        self.store.close()

    def serve(self, stop: threading.Event) -> None:
        self.start()
        try:
            stop.wait()
        finally:
            self.stop()
