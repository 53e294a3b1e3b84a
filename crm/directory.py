"""The team as every user of a tenant sees it: names for assignees, mentions and presence."""

from __future__ import annotations

from dataclasses import dataclass

from sqlmodel import Session, col, select

from core.caller import Caller, Role
from crm import access
from crm.models import User


@dataclass(frozen=True, slots=True)
class TeamMember:
    id: int
    email: str
    name: str
    role: Role
    active: bool


def _member(user: User) -> TeamMember:
    return TeamMember(
        id=user.id or 0,
        email=user.email,
        name=f"{user.first_name} {user.last_name}".strip() or user.email.split("@", 1)[0],
        role=Role.ADMIN if user.is_admin else Role.MEMBER,
        active=user.active,
    )


def team(*, session: Session, caller: Caller) -> tuple[TeamMember, ...]:
    rows = session.exec(
        select(User).where(User.tenant_id == caller.tenant_id).order_by(col(User.email))
    ).all()
    return tuple(_member(u) for u in rows)


def me(*, session: Session, caller: Caller) -> TeamMember | None:
    """The caller as a team member (None for the operator acting without a user)."""
    if caller.user_id is None:
        return None
    return _member(access.get_user(session, caller, caller.user_id))
