"""One syntax check for e-mail addresses found in mail (headers, forwarded blocks): email-validator.

Why a cache: the same correspondents recur in every batch, and linking normalizes each address
of each message more than once; email-validator costs ~25 µs a call, a cache hit well under 1.

What it accepts: the syntax email-validator accepts (no deliverability check: this runs offline
on every message), with `.test` allowed (RFC 2606 names appear in test tenants and in no real
mail). Other reserved names (`.local`, `localhost`, `.invalid`) are refused, as they are for
contacts, so such an address never links to a record.
"""

from __future__ import annotations

from functools import lru_cache

from email_validator import EmailNotValidError, validate_email

__all__ = ["checked_address"]


@lru_cache(maxsize=65_536)
def checked_address(raw: str) -> str | None:
    """The lower-cased address, or None when `raw` is not one (angle brackets, surrounding
    spaces and a trailing dot are tolerated)."""
    candidate = raw.strip().strip("<>").strip().rstrip(".")
    if "@" not in candidate:  # most non-addresses: no need to ask the validator
        return None
    try:
        checked = validate_email(candidate, check_deliverability=False, test_environment=True)
    except EmailNotValidError:
        return None
    return checked.normalized.lower()
