"""Errors raised by the CRM services. Each message is a sentence a user can act on."""

from __future__ import annotations


class CrmError(Exception):
    """Root of every error `crm` raises on purpose."""


class NotFound(CrmError):
    pass


class QuotaExceeded(CrmError):
    pass


class InvalidInput(CrmError):
    pass


class Refused(CrmError):
    """An operation that the rules forbid in the current state (with the reason and a hint)."""
