"""Live events (Server-Sent Events) and presence.

The stream polls in short transactions run in the thread pool (SQLite and PostgreSQL alike; a
sync in another process is seen once its batch commits), so an idle stream costs one small query
per second and holds no database session between polls.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from core.caller import Caller
from core.db import session_scope
from core.errors import Unauthenticated
from core.types import utcnow
from crm import access, events
from crm.events import Cursor, PresenceView
from inbox_api.deps import CallerDep, SessionDep, caller_outside_request_session

router = APIRouter(prefix="/api", tags=["live events"])

POLL_SECONDS = 1.0


class PresenceIn(BaseModel):
    state: str = Field(pattern="^(viewing|replying|left)$", description="Repeat within 30 s to stay present.")


def _poll(caller: Caller, cursor: Cursor, since: datetime) -> tuple[list[events.Event], Cursor, datetime]:
    now = utcnow()
    with session_scope() as session:
        # A user deactivated while listening stops receiving at once.
        if not access.is_active(session, caller):
            raise Unauthenticated("invalid_credentials", "Sign in again: the credentials are not valid.")
        batch = events.poll(session=session, caller=caller, cursor=cursor)
        changes = events.presence_changes(session=session, caller=caller, since=since, now=now)
    return [*batch.events, *changes], batch.cursor, now


def _start() -> Cursor:
    with session_scope() as session:
        return events.start(session=session)


@router.get(
    "/events",
    summary="Live events for the caller (Server-Sent Events; resume with Last-Event-ID)",
    response_class=EventSourceResponse,
)
async def stream(
    request: Request, last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None
) -> EventSourceResponse:
    caller = await run_in_threadpool(caller_outside_request_session, request)
    resumed = Cursor.decode(last_event_id)
    cursor: Cursor = resumed if resumed is not None else await run_in_threadpool(_start)

    async def generate() -> AsyncIterator[dict[str, Any]]:
        nonlocal cursor
        since = utcnow()
        yield {"event": "ready", "id": cursor.encode(), "data": json.dumps({"cursor": cursor.encode()})}
        while not await request.is_disconnected():
            try:
                found, cursor, since = await run_in_threadpool(_poll, caller, cursor, since)
            except Unauthenticated:
                yield {"event": "signed_out", "data": "{}"}
                return
            for event in found:
                body = {"type": event.type, "thread_id": event.thread_id, **event.data}
                yield {"event": event.type, "id": cursor.encode(), "data": json.dumps(body, default=str)}
            await asyncio.sleep(POLL_SECONDS)

    return EventSourceResponse(generate(), ping=15)


@router.post("/threads/{thread_id}/presence", summary="I am viewing / replying to a conversation (heartbeat)")
def heartbeat(thread_id: int, body: PresenceIn, session: SessionDep, caller: CallerDep) -> list[PresenceView]:
    return list(events.heartbeat(session=session, caller=caller, thread_id=thread_id, state=body.state))


@router.get("/threads/{thread_id}/presence", summary="Who else is viewing or replying right now")
def present(thread_id: int, session: SessionDep, caller: CallerDep) -> list[PresenceView]:
    return list(events.present(session=session, caller=caller, thread_id=thread_id))
