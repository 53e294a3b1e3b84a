"""Who is acting: resolved once per request or command by a face, passed to every service.

Zulip's `access_stream_by_id(user_profile, ...)` and the FastAPI template's `CurrentUser`: a
service never trusts an id on its own, it asks `crm.access` what this caller may see.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Role(enum.StrEnum):
    ADMIN = "admin"  # the whole tenant: every account, user and record
    MEMBER = "member"  # the mail of the accounts granted to them, and the tenant's records


@dataclass(frozen=True, slots=True)
class Caller:
    """The acting user. `user_id` is None only for the operator acting as a tenant's admin from
    the command line before any user exists (`crm-inbox init`, quotas)."""

    tenant_id: int
    user_id: int | None
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    @classmethod
    def operator(cls, tenant_id: int) -> Caller:
        """The deployment's operator acting in one tenant (CLI administration)."""
        return cls(tenant_id=tenant_id, user_id=None, role=Role.ADMIN)
