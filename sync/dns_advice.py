"""Sending-domain advice (issue 10, item 10): SPF, DKIM (for the selectors an admin names) and
DMARC of the From domain, looked up with dnspython and turned into advice. Advice only: nothing
here ever blocks sending, and a lookup that fails says so instead of guessing.

The lookups are thin (`_txt`); the reading of the records is pure (`advise_spf`, `advise_dkim`,
`advise_dmarc`) and follows RFC 7208 (SPF: one record, at most 10 DNS-querying terms, the `all`
qualifier), RFC 6376 (DKIM: `selector._domainkey.domain`, an empty `p=` means revoked) and
RFC 7489 (DMARC: `_dmarc.domain`, `p=none` only monitors).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import dns.exception
import dns.resolver

from core.errors import InvalidInput
from core.settings import Settings, get_settings

_DOMAIN = re.compile(r"^(?=.{1,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_SELECTOR = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
_LOOKUP_TERMS = re.compile(
    r"(?:^|\s)[+?~-]?(include:|a\b|a:|a/|mx\b|mx:|mx/|ptr\b|ptr:|exists:|redirect=)", re.I
)
MAX_SELECTORS = 10


@dataclass(frozen=True, slots=True)
class Finding:
    """One record's verdict: `ok` (fine), `warn` (works, could be better), `missing`, `error`
    (broken as published), or `unknown` (the lookup failed: nothing to conclude)."""

    check: str  # "spf", "dkim:<selector>", "dmarc"
    status: str
    record: str | None
    advice: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class DomainAdvice:
    domain: str
    findings: tuple[Finding, ...] = field(default_factory=tuple)

    @property
    def all_ok(self) -> bool:
        return all(f.status == "ok" for f in self.findings)


class LookupFailed(Exception):
    """The DNS did not answer (timeout, SERVFAIL): nothing can be concluded."""


def advise_spf(records: list[str], domain: str) -> Finding:
    spf = [r for r in records if r.lower().startswith("v=spf1")]
    if not spf:
        return Finding(
            "spf",
            "missing",
            None,
            (
                f"{domain} publishes no SPF record: receivers cannot tell which servers may send its "
                "mail. Publish one TXT record such as 'v=spf1 include:<your provider> ~all' (Google: "
                "include:_spf.google.com; Microsoft 365: include:spf.protection.outlook.com).",
            ),
        )
    if len(spf) > 1:
        return Finding(
            "spf",
            "error",
            " | ".join(spf),
            (
                f"{domain} publishes {len(spf)} SPF records; receivers treat that as an error (RFC 7208 "
                "4.5). Merge them into one.",
            ),
        )
    record = spf[0]
    terms = record.lower().split()
    advice: list[str] = []
    status = "ok"
    lookups = len(_LOOKUP_TERMS.findall(record))
    if lookups > 10:
        status = "error"
        advice.append(
            f"The record needs {lookups} DNS lookups; more than 10 is an error for receivers (RFC 7208 "
            "4.6.4). Flatten some includes."
        )
    last_all = next((t for t in reversed(terms) if t.lstrip("+-~?") == "all"), None)
    if last_all in ("+all", "all"):
        status = "error"
        advice.append("'+all' lets any server on the internet send as this domain: use '~all' or '-all'.")
    elif last_all == "?all":
        status = "warn" if status == "ok" else status
        advice.append("'?all' is neutral: receivers learn nothing. Use '~all' (soft fail) or '-all'.")
    elif last_all is None and not any(t.startswith("redirect=") for t in terms):
        status = "warn" if status == "ok" else status
        advice.append("The record has no 'all' term at its end: add '~all' or '-all'.")
    return Finding("spf", status, record, tuple(advice))


def advise_dkim(selector: str, records: list[str], domain: str) -> Finding:
    check = f"dkim:{selector}"
    name = f"{selector}._domainkey.{domain}"
    keys = [r for r in records if "p=" in r.replace(" ", "").lower() or r.lower().startswith("v=dkim1")]
    if not keys:
        return Finding(
            check,
            "missing",
            None,
            (
                f"No DKIM key at {name}. Publish the key your provider gives for selector '{selector}' "
                "(Google Admin: Authenticate email; Microsoft 365: the two CNAMEs selector1/selector2).",
            ),
        )
    record = keys[0]
    tags = dict(
        (part.split("=", 1)[0].strip().lower(), part.split("=", 1)[1].strip())
        for part in record.split(";")
        if "=" in part
    )
    if not tags.get("p", "").replace(" ", ""):
        return Finding(
            check, "error", record, (f"The key at {name} is revoked (empty 'p='): publish a new one.",)
        )
    if tags.get("t", "").lower().find("y") >= 0:
        return Finding(
            check,
            "warn",
            record,
            ("The key is in test mode (t=y): receivers may ignore failures.",),
        )
    return Finding(check, "ok", record)


def advise_dmarc(records: list[str], domain: str) -> Finding:
    dmarc = [r for r in records if r.replace(" ", "").lower().startswith("v=dmarc1")]
    if not dmarc:
        return Finding(
            "dmarc",
            "missing",
            None,
            (
                f"_dmarc.{domain} has no DMARC record. Start with 'v=DMARC1; p=none; rua=mailto:<you>' "
                "to receive reports, then move to p=quarantine once SPF and DKIM pass.",
            ),
        )
    if len(dmarc) > 1:
        return Finding(
            "dmarc", "error", " | ".join(dmarc), ("Several DMARC records: receivers ignore them all.",)
        )
    record = dmarc[0]
    tags = {
        part.split("=", 1)[0].strip().lower(): part.split("=", 1)[1].strip().lower()
        for part in record.split(";")
        if "=" in part
    }
    policy = tags.get("p")
    if policy not in ("none", "quarantine", "reject"):
        return Finding(
            "dmarc", "error", record, ("The record has no valid policy (p=none, quarantine or reject).",)
        )
    advice: list[str] = []
    status = "ok"
    if policy == "none":
        status = "warn"
        advice.append("p=none only monitors: once reports show your mail passes, move to p=quarantine.")
    if "rua" not in tags:
        advice.append("Add rua=mailto:... to receive aggregate reports.")
    return Finding("dmarc", status, record, tuple(advice))


def _resolver(settings: Settings) -> dns.resolver.Resolver:
    if not settings.dns_server:
        resolver = dns.resolver.Resolver()
    else:
        host, _, port = settings.dns_server.rpartition(":")
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [host or settings.dns_server]
        resolver.port = int(port) if host and port.isdigit() else 53
    resolver.lifetime = min(settings.connect_timeout_seconds, 10.0)
    return resolver


def _txt(resolver: dns.resolver.Resolver, name: str) -> list[str]:
    try:
        answer = resolver.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except (dns.exception.Timeout, dns.resolver.NoNameservers, dns.resolver.LifetimeTimeout) as exc:
        raise LookupFailed(name) from exc
    # A TXT record may be split into strings of 255 bytes: joined, they are one value.
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


def _unknown(check: str, name: str) -> Finding:
    return Finding(check, "unknown", None, (f"The DNS did not answer for {name}; try again later.",))


def check_domain(
    domain: str, selectors: tuple[str, ...] = (), *, settings: Settings | None = None
) -> DomainAdvice:
    settings = settings or get_settings()
    domain = domain.strip().lower().rstrip(".")
    if "@" in domain:
        domain = domain.rpartition("@")[2]
    if not _DOMAIN.match(domain):
        raise InvalidInput("domain_invalid", f"{domain[:100]!r} is not a domain name.", field="domain")
    clean = tuple(dict.fromkeys(s.strip().lower() for s in selectors if s.strip()))
    if len(clean) > MAX_SELECTORS or any(not _SELECTOR.match(s) for s in clean):
        raise InvalidInput(
            "selector_invalid",
            f"Give at most {MAX_SELECTORS} DKIM selectors (letters, digits, '-', '.').",
            field="selector",
        )
    resolver = _resolver(settings)
    findings: list[Finding] = []
    try:
        findings.append(advise_spf(_txt(resolver, domain), domain))
    except LookupFailed:
        findings.append(_unknown("spf", domain))
    for selector in clean:
        name = f"{selector}._domainkey.{domain}"
        try:
            findings.append(advise_dkim(selector, _txt(resolver, name), domain))
        except LookupFailed:
            findings.append(_unknown(f"dkim:{selector}", name))
    try:
        findings.append(advise_dmarc(_txt(resolver, f"_dmarc.{domain}"), domain))
    except LookupFailed:
        findings.append(_unknown("dmarc", f"_dmarc.{domain}"))
    return DomainAdvice(domain=domain, findings=tuple(findings))
