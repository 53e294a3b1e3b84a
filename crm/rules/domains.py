"""Domains as the linking rules see them: the domain of an address, its parents up to a public
suffix (the Public Suffix List bundled with `publicsuffixlist`, offline), the registrable domain
that the address index keys on, and consumer mailbox providers, whose domain says nothing about
a company. Pure and memoised: mail names the same few thousand domains over and over.
"""

from __future__ import annotations

import re
from functools import lru_cache

from publicsuffixlist import PublicSuffixList


@lru_cache(maxsize=16_384)  # the rules ask it of each address several times per message
def domain_of(email: str) -> str:
    """The lower-cased domain of an address ("" when there is none), without a trailing dot."""
    _, at, domain = email.strip().rpartition("@")
    return domain.strip().strip(">").rstrip(".").lower() if at else ""


@lru_cache(maxsize=1)
def _suffixes() -> PublicSuffixList:
    """The Public Suffix List snapshot bundled with `publicsuffixlist` (offline; ICANN and
    private sections: `github.io` is a suffix, `alice.github.io` a registrable domain). Loaded on
    first use, not at import."""
    return PublicSuffixList()


# The list lookups below encode every label to IDNA first (~100 us a domain); mail names the same
# few thousand domains over and over, so their answers are remembered (pure functions of a str).
_DOMAIN_CACHE = 8192


@lru_cache(maxsize=_DOMAIN_CACHE)
def is_public_suffix(domain: str) -> bool:
    """Is this a public suffix ("test", "com", "co.uk", "nhs.uk", "github.io"), under which
    unrelated organisations register names? An unknown TLD counts as one (the list's "*" rule)."""
    domain = domain.lower().strip(".")
    return not domain or bool(_suffixes().is_public(domain))


@lru_cache(maxsize=_DOMAIN_CACHE)
def domain_candidates(domain: str) -> tuple[str, ...]:
    """The domain itself, then each parent domain, stopping before a public suffix.

    `mail.eu.globex.test` gives (`mail.eu.globex.test`, `eu.globex.test`, `globex.test`).
    """
    domain = domain.lower().strip(".")
    out: list[str] = []
    while domain and not is_public_suffix(domain):
        out.append(domain)
        domain = domain.partition(".")[2]
    return tuple(out)


FREE_MAIL_DOMAINS: frozenset[str] = frozenset(
    {
        # Global
        "gmail.com",
        "googlemail.com",
        "outlook.com",
        "hotmail.com",
        "live.com",
        "msn.com",
        "passport.com",
        "yahoo.com",
        "ymail.com",
        "rocketmail.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "aol.com",
        "aim.com",
        "proton.me",
        "protonmail.com",
        "protonmail.ch",
        "pm.me",
        "tutanota.com",
        "tutanota.de",
        "tuta.io",
        "fastmail.com",
        "fastmail.fm",
        "hey.com",
        "zohomail.com",
        "mail.com",
        "email.com",
        "gmx.com",
        "gmx.net",
        "hushmail.com",
        "mailfence.com",
        "duck.com",
        # North America ISPs
        "comcast.net",
        "verizon.net",
        "att.net",
        "sbcglobal.net",
        "bellsouth.net",
        "cox.net",
        "charter.net",
        "earthlink.net",
        "optonline.net",
        "shaw.ca",
        "rogers.com",
        "sympatico.ca",
        "videotron.ca",
        # Europe
        "web.de",
        "t-online.de",
        "freenet.de",
        "arcor.de",
        "posteo.de",
        "mailbox.org",
        "orange.fr",
        "wanadoo.fr",
        "free.fr",
        "sfr.fr",
        "neuf.fr",
        "laposte.net",
        "bbox.fr",
        "numericable.fr",
        "libero.it",
        "virgilio.it",
        "tiscali.it",
        "alice.it",
        "tin.it",
        "btinternet.com",
        "sky.com",
        "virginmedia.com",
        "ntlworld.com",
        "talktalk.net",
        "blueyonder.co.uk",
        "telenet.be",
        "skynet.be",
        "ziggo.nl",
        "kpnmail.nl",
        "planet.nl",
        "home.nl",
        "bluewin.ch",
        "seznam.cz",
        "centrum.cz",
        "wp.pl",
        "o2.pl",
        "interia.pl",
        "onet.pl",
        "op.pl",
        "abv.bg",
        "freemail.hu",
        "sapo.pt",
        "terra.com.br",
        "uol.com.br",
        "bol.com.br",
        # Russia and neighbours
        "mail.ru",
        "bk.ru",
        "inbox.ru",
        "list.ru",
        "internet.ru",
        "ya.ru",
        "rambler.ru",
        "ukr.net",
        # Asia
        "qq.com",
        "foxmail.com",
        "163.com",
        "126.com",
        "yeah.net",
        "sina.com",
        "sina.cn",
        "sohu.com",
        "aliyun.com",
        "naver.com",
        "daum.net",
        "hanmail.net",
        "rediffmail.com",
    }
)

# Brands that hand out free mailboxes under many ccTLDs: gmx.de, yahoo.co.uk, hotmail.fr, ...
_FREE_MAIL_BRAND_RE = re.compile(
    r"(?:gmx|yahoo|ymail|yandex|hotmail|outlook|live|msn|windowslive|aol|gmail|googlemail|rambler)"
    r"\.[a-z]{2,3}(?:\.[a-z]{2})?"
)


@lru_cache(maxsize=_DOMAIN_CACHE)
def registrable_domain(domain: str) -> str:
    """The shortest parent of `domain` that is not a public suffix ("mail.globex.test" ->
    "globex.test", "x.trust1.nhs.uk" -> "trust1.nhs.uk"; "" when there is none). Indexed with
    each address, so mail of a company domain and all its subdomains is found with an equality
    lookup instead of a LIKE scan."""
    domain = domain.lower().strip(".")
    return (_suffixes().privatesuffix(domain) or "") if domain else ""


def is_free_mail(domain: str) -> bool:
    """Is this a consumer mailbox provider's domain (or a subdomain of one)?"""
    domain = domain.lower().strip(".")
    parents = [domain]
    while "." in parents[-1]:
        parents.append(parents[-1].partition(".")[2])
    return any(d in FREE_MAIL_DOMAINS or _FREE_MAIL_BRAND_RE.fullmatch(d) for d in parents)
