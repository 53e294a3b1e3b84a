"""Live events (Server-Sent Events) and presence.

The stream reads events in short transactions run in the thread pool, and holds no database
session in between. When it reads again: on PostgreSQL, as soon as a transaction that stored
mail, activity or presence of the tenant commits, in any process (LISTEN/NOTIFY, see
`inbox_api.live`), and at least every `LISTENING_POLL_SECONDS` (presence expires by time, not by
a write); on SQLite, and while the listening connection is down, every `POLL_SECONDS`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from pydantic import BaseModel, Field
from sse_starlette.sse import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from core.caller import Caller
from core.db import get_engine, session_scope
from core.errors import Unauthenticated
from core.types import utcnow
from crm import access, events
from crm.events import Cursor, PresenceView
from inbox_api import live
from inbox_api.deps import CallerDep, SessionDep, caller_outside_request_session

router = APIRouter(prefix="/api", tags=["live events"])

POLL_SECONDS = 1.0
LISTENING_POLL_SECONDS = 5.0


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

    listener = live.listener_for(get_engine())

    async def generate() -> AsyncIterator[dict[str, Any]]:
        nonlocal cursor
        since = utcnow()
        yield {"event": "ready", "id": cursor.encode(), "data": json.dumps({"cursor": cursor.encode()})}
        with contextlib.ExitStack() as stack:
            wake = stack.enter_context(listener.subscribe(caller.tenant_id)) if listener else None
            while not await request.is_disconnected():
                if wake is not None:
                    wake.clear()  # before reading: a commit during the read wakes the next wait
                try:
                    found, cursor, since = await run_in_threadpool(_poll, caller, cursor, since)
                except Unauthenticated:
                    yield {"event": "signed_out", "data": "{}"}
                    return
                for event in found:
                    body = {"type": event.type, "thread_id": event.thread_id, **event.data}
                    yield {"event": event.type, "id": cursor.encode(), "data": json.dumps(body, default=str)}
                await _until_woken(wake, listening=listener is not None and listener.listening)

    return EventSourceResponse(generate(), ping=15)


async def _until_woken(wake: asyncio.Event | None, *, listening: bool) -> None:
    """Wait for a notification of the tenant (listening) or for the next poll."""
    if wake is None:
        await asyncio.sleep(POLL_SECONDS)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), LISTENING_POLL_SECONDS if listening else POLL_SECONDS)


@router.post("/threads/{thread_id}/presence", summary="I am viewing / replying to a conversation (heartbeat)")
def heartbeat(thread_id: int, body: PresenceIn, session: SessionDep, caller: CallerDep) -> list[PresenceView]:
    return list(events.heartbeat(session=session, caller=caller, thread_id=thread_id, state=body.state))


@router.get("/threads/{thread_id}/presence", summary="Who else is viewing or replying right now")
def present(thread_id: int, session: SessionDep, caller: CallerDep) -> list[PresenceView]:
    return list(events.present(session=session, caller=caller, thread_id=thread_id))
