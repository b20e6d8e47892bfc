"""GET /runs/{id}/events: the run's event log as Server-Sent Events.

Each SSE message is one stored event: `id:` is its store id (strictly increasing), `event:`
its type, `data:` the event as JSON. A client that reconnects with `Last-Event-ID` (header, as
EventSource sends it; or `?last_event_id=` for the first connection) receives exactly the
events after that id. The stream ends after the run's final `end` event; a reconnect after
that gets 204 No Content, which tells EventSource to stop reconnecting. Comments (`: ping`)
keep an idle connection alive.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio.to_thread
from fastapi import APIRouter, Depends, Header, HTTPException, Path, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent

from backend.app_services import Services, get_services
from backend.store import TERMINAL_STATUSES

router = APIRouter(tags=["runs"])

BATCH = 500  # events read per query; a replay of a long run arrives in such pages
RETRY_MS = 2000  # how long EventSource waits before reconnecting
MAX_ID = 2**62  # ids and cursors are SQLite integers
# Errors answer JSON, not an event stream: documented as such (the route's own media type is
# text/event-stream, which FastAPI would otherwise give every documented answer).
_JSON_ERROR = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorOut"}}}


@dataclass
class StreamStart:
    run_id: int
    cursor: int


def stream_start(
    run_id: int = Path(ge=1, le=2**62),
    last_event_id_header: str | None = Header(
        None, alias="Last-Event-ID", description="sent by EventSource when it reconnects"
    ),
    last_event_id: int | None = Query(
        None,
        ge=0,
        le=MAX_ID,
        description="start after this event id (the header wins when both are set)",
    ),
    svc: Services = Depends(get_services),
) -> StreamStart:
    """Checks that run before the stream starts: afterwards no error status can be sent."""
    cursor = last_event_id or 0
    if last_event_id_header is not None and last_event_id_header.strip():
        text = last_event_id_header.strip()
        # isdecimal, not isdigit: '²' is a digit that int() refuses. Bounded: the cursor goes
        # into an SQLite query, where a number beyond 64 bits failed mid-stream.
        if not (text.isascii() and text.isdecimal()) or len(text) > 19 or int(text) > MAX_ID:
            raise HTTPException(
                400, f"Last-Event-ID must be an event id (an integer ≤ 2**62), got {text[:40]!r}"
            )
        cursor = int(text)
    run = svc.run_row(run_id)
    if run["status"] in TERMINAL_STATUSES and svc.store.max_event_id(run_id) <= cursor:
        # Finished, and the client has everything: 204 makes EventSource stop reconnecting.
        raise HTTPException(204)
    return StreamStart(run_id, cursor)


@router.get(
    "/runs/{run_id}/events",
    response_class=EventSourceResponse,
    summary="Follow a run live (Server-Sent Events)",
    responses={
        204: {"description": "the run is finished and the client has all its events"},
        400: {"description": "a Last-Event-ID that is not an event id", "content": _JSON_ERROR},
        404: {"description": "no such run", "content": _JSON_ERROR},
    },
)
async def run_events(
    start: StreamStart = Depends(stream_start), svc: Services = Depends(get_services)
) -> AsyncIterator[ServerSentEvent]:
    run_id, cursor = start.run_id, start.cursor
    store, broker = svc.store, svc.broker
    # A first message at once: headers reach the client now, and `retry` paces reconnects.
    yield ServerSentEvent(comment=f"run {run_id}", retry=RETRY_MS)
    last_type: str | None = None
    while True:
        seen = broker.latest  # read before the query: see EventBroker for why nothing is lost
        rows = await anyio.to_thread.run_sync(store.events_after, run_id, cursor, BATCH)
        for event_id, kind, data in rows:
            yield ServerSentEvent(id=str(event_id), event=kind, raw_data=data)
            cursor, last_type = event_id, kind
        if len(rows) == BATCH:
            continue
        if last_type == "end":
            # Final only if the run is finished: a resumed run goes on after an earlier end.
            run = await anyio.to_thread.run_sync(store.get_run, run_id)
            if run is None or run["status"] in TERMINAL_STATUSES:
                return
        if rows:
            continue
        if not await broker.wait_newer(seen, svc.settings.sse_ping_s):
            yield ServerSentEvent(comment="ping")
