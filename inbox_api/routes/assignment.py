"""Assignment rules per account (admins change them; users of the account may read them)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from crm import assignment
from crm.assignment import AssignMode, RuleView
from inbox_api.deps import CallerDep, SessionDep

router = APIRouter(prefix="/api", tags=["administration"])


class RuleIn(BaseModel):
    mode: AssignMode
    user_ids: list[int] = Field(
        default_factory=list, max_length=500, description="The round-robin rota, in order"
    )
    max_open: int | None = Field(default=None, description="Cap of open conversations per user")
    follow_up_days: int = Field(
        default=3, description="Our unanswered mail shows as waiting after this many days"
    )


@router.get(
    "/accounts/{account_id}/assignment-rule", summary="How new conversations of an account are assigned"
)
def get_rule(account_id: int, session: SessionDep, caller: CallerDep) -> RuleView:
    return assignment.get_rule(session=session, caller=caller, account_id=account_id)


@router.put("/accounts/{account_id}/assignment-rule", summary="Set an account's assignment rule (admins)")
def set_rule(account_id: int, body: RuleIn, session: SessionDep, caller: CallerDep) -> RuleView:
    return assignment.set_rule(
        session=session,
        caller=caller,
        account_id=account_id,
        mode=body.mode,
        user_ids=body.user_ids,
        max_open=body.max_open,
        follow_up_days=body.follow_up_days,
    )
