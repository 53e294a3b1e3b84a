"""Working a conversation: assign, status and snooze, read marks, notes, history; sidebar counts,
mentions and (admins) the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from core.types import ConversationStatus
from crm import conversations, inbox_counts, links, thread_edits
from crm.conversations import ActivityView, ConversationState, NoteView
from crm.inbox_counts import ViewCounts
from crm.links import LinkExplanation
from crm.rules.linking import RecordKind
from crm.thread_edits import ThreadChange, ThreadingWhy
from inbox_api.deps import CallerDep, SessionDep

router = APIRouter(prefix="/api", tags=["conversations"])


class AssignIn(BaseModel):
    assignee_user_id: int | None = Field(description="A colleague's user id; null unassigns.")


class StatusIn(BaseModel):
    status: ConversationStatus
    snoozed_until: datetime | None = Field(default=None, description="Required with status snoozed.")


class NoteIn(BaseModel):
    body: str = Field(
        min_length=1, max_length=conversations.MAX_NOTE_LENGTH, description="@name mentions a colleague"
    )


@router.get("/views/counts", summary="Conversation counts per view (sidebar)")
def view_counts(session: SessionDep, caller: CallerDep) -> ViewCounts:
    return inbox_counts.view_counts(session=session, caller=caller)


@router.post("/threads/{thread_id}/assign", summary="Assign a conversation (or unassign with null)")
def assign(thread_id: int, body: AssignIn, session: SessionDep, caller: CallerDep) -> ConversationState:
    return conversations.assign(
        session=session, caller=caller, thread_id=thread_id, assignee_user_id=body.assignee_user_id
    )


@router.post("/threads/{thread_id}/status", summary="Open, pending, snooze until a time, or close")
def set_status(thread_id: int, body: StatusIn, session: SessionDep, caller: CallerDep) -> ConversationState:
    return conversations.set_status(
        session=session,
        caller=caller,
        thread_id=thread_id,
        status=body.status,
        snoozed_until=body.snoozed_until,
    )


@router.post(
    "/threads/{thread_id}/read", status_code=204, summary="Mark read for me (never the server's flag)"
)
def mark_read(thread_id: int, session: SessionDep, caller: CallerDep) -> None:
    conversations.mark_read(session=session, caller=caller, thread_id=thread_id, read=True)


@router.delete("/threads/{thread_id}/read", status_code=204, summary="Mark unread for me")
def mark_unread(thread_id: int, session: SessionDep, caller: CallerDep) -> None:
    conversations.mark_read(session=session, caller=caller, thread_id=thread_id, read=False)


@router.get("/threads/{thread_id}/notes", summary="Internal notes of a conversation")
def list_notes(thread_id: int, session: SessionDep, caller: CallerDep) -> list[NoteView]:
    return list(conversations.list_notes(session=session, caller=caller, thread_id=thread_id))


@router.post("/threads/{thread_id}/notes", status_code=201, summary="Add an internal note (@mentions notify)")
def add_note(thread_id: int, body: NoteIn, session: SessionDep, caller: CallerDep) -> NoteView:
    return conversations.add_note(session=session, caller=caller, thread_id=thread_id, body=body.body)


@router.get("/threads/{thread_id}/history", summary="Who did what to a conversation, oldest first")
def history(thread_id: int, session: SessionDep, caller: CallerDep) -> list[ActivityView]:
    return list(conversations.history(session=session, caller=caller, thread_id=thread_id))


@router.get("/mentions", summary="Where I was mentioned, newest first")
def mentions(session: SessionDep, caller: CallerDep) -> list[ActivityView]:
    return list(conversations.mentions_of(session=session, caller=caller))


@router.get("/audit-log", summary="The tenant's activity, newest first (admins)")
def audit_log(
    session: SessionDep,
    caller: CallerDep,
    before_id: int | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> list[ActivityView]:
    return list(conversations.audit_log(session=session, caller=caller, before_id=before_id, limit=limit))


class MergeIn(BaseModel):
    source_id: int = Field(description="The conversation that joins this one (and disappears)")


@router.post("/threads/{thread_id}/merge", summary="Merge another conversation into this one (remembered)")
def merge(thread_id: int, body: MergeIn, session: SessionDep, caller: CallerDep) -> ThreadChange:
    return thread_edits.merge(session=session, caller=caller, target_id=thread_id, source_id=body.source_id)


@router.post("/messages/{message_pk}/split", summary="Move a message into its own conversation (kept apart)")
def split(message_pk: int, session: SessionDep, caller: CallerDep) -> ThreadChange:
    return thread_edits.split(session=session, caller=caller, message_pk=message_pk)


@router.get("/messages/{message_pk}/threading", summary="Why is this message in this conversation")
def threading_why(message_pk: int, session: SessionDep, caller: CallerDep) -> ThreadingWhy:
    return thread_edits.why(session=session, caller=caller, message_pk=message_pk)


class LinkIn(BaseModel):
    record_kind: RecordKind
    record_id: int
    whole_conversation: bool = Field(default=False, description="Every message of the conversation I see")


class LinkResult(BaseModel):
    messages: int = Field(description="How many messages the change touched")


@router.get("/messages/{message_pk}/links", summary="The records a message is on, and why")
def links_why(message_pk: int, session: SessionDep, caller: CallerDep) -> list[LinkExplanation]:
    return list(links.why(session=session, caller=caller, message_pk=message_pk))


@router.post("/messages/{message_pk}/links", summary="Link a message (or its conversation) to a record")
def link(message_pk: int, body: LinkIn, session: SessionDep, caller: CallerDep) -> LinkResult:
    count = links.link_manually(
        session=session,
        caller=caller,
        message_pk=message_pk,
        kind=body.record_kind,
        record_id=body.record_id,
        whole_thread=body.whole_conversation,
    )
    return LinkResult(messages=count)


@router.post("/messages/{message_pk}/unlink", summary="Unlink a record (sticky for the whole conversation)")
def unlink(message_pk: int, body: LinkIn, session: SessionDep, caller: CallerDep) -> LinkResult:
    count = links.unlink(
        session=session,
        caller=caller,
        message_pk=message_pk,
        kind=body.record_kind,
        record_id=body.record_id,
        whole_thread=body.whole_conversation,
    )
    return LinkResult(messages=count)
