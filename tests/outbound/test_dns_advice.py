"""Sending-domain advice (issue 10, item 10) against a real DNS server the test starts on
loopback (a small dnspython UDP responder): SPF, DKIM selectors and DMARC read from its answers;
a failing server gives 'unknown', never a verdict."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from core.db import session_scope
from core.errors import DomainError
from core.settings import get_settings
from crm import auth
from inbox_api.app import create_app
from sync.dns_advice import advise_dmarc, advise_spf, check_domain
from tests.crm.world import build_world

ZONE: dict[str, list[str]] = {
    "good.test.": ["v=spf1 include:_spf.google.com -all", "google-site-verification=abc"],
    "google._domainkey.good.test.": ["v=DKIM1; k=rsa; p=" + "A" * 300],  # split over 255-byte strings
    "_dmarc.good.test.": ["v=DMARC1; p=reject; rua=mailto:dmarc@good.test"],
    "weak.test.": ["v=spf1 +all"],
    "old._domainkey.weak.test.": ["v=DKIM1; p="],
    "_dmarc.weak.test.": ["v=DMARC1; p=none"],
    "twice.test.": ["v=spf1 -all", "v=spf1 include:x.test ~all"],
}
BROKEN = {"broken.test.", "_dmarc.broken.test."}


class _Handler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        data, sock = self.request
        query = dns.message.from_wire(data)
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text().lower()
        if name in BROKEN:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name in ZONE and question.rdtype == dns.rdatatype.TXT:
            chunks = [" ".join(f'"{v[i : i + 255]}"' for i in range(0, len(v), 255)) for v in ZONE[name]]
            response.answer.append(dns.rrset.from_text_list(name, 60, "IN", "TXT", chunks))
        elif name not in ZONE:
            response.set_rcode(dns.rcode.NXDOMAIN)
        sock.sendto(response.to_wire(), self.client_address)


@pytest.fixture
def dns_server() -> Iterator[str]:
    server = socketserver.ThreadingUDPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings = get_settings()
    settings.dns_server = f"127.0.0.1:{server.server_address[1]}"
    settings.connect_timeout_seconds = 2.0
    try:
        yield settings.dns_server
    finally:
        server.shutdown()
        server.server_close()


def _by_check(domain: str, *selectors: str) -> dict[str, tuple[str, str | None, tuple[str, ...]]]:
    advice = check_domain(domain, selectors)
    return {f.check: (f.status, f.record, f.advice) for f in advice.findings}


def test_good_domain(dns_server: str) -> None:
    found = _by_check("good.test", "google", "missing")
    assert found["spf"][:2] == ("ok", "v=spf1 include:_spf.google.com -all")
    status, record, _ = found["dkim:google"]
    assert status == "ok" and record is not None and record.endswith("A" * 300)  # strings joined
    assert (
        found["dkim:missing"][0] == "missing"
        and "missing._domainkey.good.test" in found["dkim:missing"][2][0]
    )
    assert found["dmarc"][0] == "ok"


def test_weak_missing_and_broken(dns_server: str) -> None:
    weak = _by_check("someone@Weak.test", "old")
    assert weak["spf"][0] == "error" and "+all" in weak["spf"][2][0]
    assert weak["dkim:old"][0] == "error" and "revoked" in weak["dkim:old"][2][0]
    assert weak["dmarc"][0] == "warn" and any("quarantine" in a for a in weak["dmarc"][2])
    nothing = _by_check("nothing.test")
    assert nothing["spf"][0] == "missing" and nothing["dmarc"][0] == "missing"
    assert _by_check("twice.test")["spf"][0] == "error"
    broken = _by_check("broken.test")
    assert broken["spf"][0] == "unknown" and broken["dmarc"][0] == "unknown"
    with pytest.raises(DomainError) as bad:
        check_domain("not a domain")
    assert bad.value.code == "domain_invalid"
    with pytest.raises(DomainError) as selector:
        check_domain("good.test", ("../etc",))
    assert selector.value.code == "selector_invalid"


def test_pure_rules() -> None:
    many = "v=spf1 " + " ".join(f"include:s{i}.test" for i in range(11)) + " -all"
    assert advise_spf([many], "x.test").status == "error"
    assert advise_spf(["v=spf1 mx ?all"], "x.test").status == "warn"
    assert advise_dmarc(["v=DMARC1; p=bogus"], "x.test").status == "error"


def test_api(sqlite_db: Engine, dns_server: str) -> None:
    world = build_world(sqlite_db)
    with session_scope(sqlite_db) as s:
        admin = auth.create_token(
            session=s, caller=world.caller("admin"), user_id=world.users["admin"], name="t"
        ).secret.get_secret_value()
        member = auth.create_token(
            session=s, caller=world.caller("alice"), user_id=world.users["alice"], name="t"
        ).secret.get_secret_value()
    with TestClient(create_app(), base_url="http://testserver") as client:
        got = client.get(
            "/api/sending/domain-advice",
            params={"domain": "weak.test", "selector": ["old"]},
            headers={"Authorization": f"Bearer {admin}"},
        )
        assert got.status_code == 200, got.text
        assert [f["check"] for f in got.json()["findings"]] == ["spf", "dkim:old", "dmarc"]
        refused = client.get(
            "/api/sending/domain-advice",
            params={"domain": "weak.test"},
            headers={"Authorization": f"Bearer {member}"},
        )
        assert refused.status_code == 403
