"""Pure checks of what goes into a header we write: no CR, LF or NUL in any value (header
injection), addresses that parse to exactly one plain mailbox. Every refusal names the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from email import policy

from core.errors import InvalidInput

_FORBIDDEN = re.compile(r"[\r\n\x00]")
# What we accept as an address we send to: one local part, one domain with a dot. Deliberately
# narrower than RFC 5322 (no quoted local parts, no comments, no IP literals): mail typed into a
# form or a script is never that exotic, and what a relay might misread is refused up front.
_ADDRESS = re.compile(
    r"^[A-Za-z0-9.!#$%&'*+/=?^_`{|}~-]+@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)+$"
)


def header_injection(field: str) -> InvalidInput:
    return InvalidInput(
        "header_invalid",
        f"The {field} must not contain line breaks or NUL characters.",
        field=field,
    )


def check_header(field: str, value: str) -> str:
    """A header value as given, or `header_invalid` naming the field."""
    if _FORBIDDEN.search(value):
        raise header_injection(field)
    return value


def parse_address(field: str, value: str) -> tuple[str, str]:
    """One mailbox ("Ann <ann@x.test>" or "ann@x.test") -> (email lowercased domain, name)."""
    check_header(field, value)
    try:
        # The stdlib's RFC 5322 parser (the one that writes our headers), strict about defects.
        parsed = policy.default.header_factory("to", value)
        addresses = parsed.addresses
    except Exception as exc:  # its parser raises IndexError and friends on some garbage
        raise address_invalid(field, value) from exc
    if parsed.defects or len(addresses) != 1:
        raise address_invalid(field, value)
    name, email = addresses[0].display_name, addresses[0].addr_spec
    if not _ADDRESS.match(email) or len(email) > 320:
        raise address_invalid(field, value)
    local, _, domain = email.rpartition("@")
    return f"{local}@{domain.lower()}", name.strip()


def parse_addresses(field: str, values: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """Several mailboxes, each checked; duplicates (same address) dropped, first one kept."""
    seen: dict[str, tuple[str, str]] = {}
    for value in values:
        email, name = parse_address(field, value)
        seen.setdefault(email.lower(), (email, name))
    return tuple(seen.values())


def address_invalid(field: str, value: str) -> InvalidInput:
    # The value goes into the fields for the caller's form, never into a header.
    return InvalidInput(
        "address_invalid",
        f"The {field} address {value[:200]!r} is not a valid e-mail address.",
        field=field,
        value=value[:200],
    )
