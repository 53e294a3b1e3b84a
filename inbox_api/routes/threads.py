"""Conversations (threads) and messages, as the caller may see them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from core.types import ConversationStatus, Direction
from crm import inbox_views
from crm.inbox_views import Assignee, MessageView, ThreadFilter, ThreadPage, ThreadView
from inbox_api.deps import CallerDep, SessionDep

router = APIRouter(prefix="/api", tags=["conversations"])


@router.get("/threads", summary="Conversations the caller may see, newest activity first (keyset pages)")
def list_threads(
    session: SessionDep,
    caller: CallerDep,
    account_id: int | None = None,
    contact_id: int | None = None,
    company_id: int | None = None,
    deal_id: int | None = None,
    deal_stage: Annotated[
        str | None,
        Query(max_length=100, description="Linked to a deal in this stage (per_deal_stage of the counts)"),
    ] = None,
    direction: Direction | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    status: ConversationStatus | None = None,
    assignee: Annotated[
        str | None,
        Query(pattern=r"^(me|unassigned|any|\d+)$", description="me, unassigned, any or a user id"),
    ] = None,
    unread: bool | None = None,
    has_attachment: bool | None = None,
    waiting: Annotated[bool | None, Query(description="Our last message unanswered past follow-up")] = None,
    q: Annotated[str | None, Query(max_length=200, description="Text in the subject or a sender")] = None,
    limit: Annotated[int, Query(ge=1, le=inbox_views.MAX_PAGE)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=200, description="next_cursor of the previous page")
    ] = None,
) -> ThreadPage:
    filters = ThreadFilter(
        account_id=account_id,
        contact_id=contact_id,
        company_id=company_id,
        deal_id=deal_id,
        deal_stage=deal_stage,
        direction=direction,
        since=since,
        until=until,
        text=q,
        status=status,
        assignee=(int(assignee) if assignee.isdigit() else Assignee(assignee)) if assignee else None,
        unread=unread,
        has_attachment=has_attachment,
        waiting=waiting,
    )
    return inbox_views.list_threads(
        session=session, caller=caller, filters=filters, limit=limit, cursor=cursor
    )


@router.get("/threads/{thread_id}", summary="One conversation with the messages the caller may see")
def get_thread(thread_id: int, session: SessionDep, caller: CallerDep) -> ThreadView:
    return inbox_views.get_thread(session=session, caller=caller, thread_id=thread_id)


@router.get("/messages/{message_pk}", summary="One message (text, sanitized HTML, attachments, links)")
def get_message(message_pk: int, session: SessionDep, caller: CallerDep) -> MessageView:
    return inbox_views.get_message(session=session, caller=caller, message_pk=message_pk)


@router.get("/messages", summary="Find a message by its Message-ID header")
def find_message(
    session: SessionDep,
    caller: CallerDep,
    message_id: Annotated[str, Query(min_length=1, max_length=1000)],
) -> MessageView:
    return inbox_views.find_by_message_id(session=session, caller=caller, message_id=message_id)
