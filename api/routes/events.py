"""SSE endpoints. Each stream subscribes to the process's hub; none holds a database connection."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Request, get
from litestar.datastructures import State
from litestar.params import FromPath, HeaderParameter
from litestar.response import ServerSentEvent

from api.auth import Principal
from api.routes.generations import fetch_generation
from api.sse import generation_stream, parse_last_event_id


@get(
    "/v1/generations/{generation_id:uuid}/events",
    media_type="text/event-stream",
    summary="Live progress of a generation (Server-Sent Events)",
    description="The first event is the current state; each event has `event: generation` and "
    "`id:` = image_events.id. `Last-Event-ID` resumes after that id. A comment keeps the "
    "connection alive every 15 s. The stream ends after the terminal event.",
    tags=["events"],
)
async def generation_events(
    generation_id: FromPath[UUID],
    request: Request[Principal, Any, Any],
    state: State,
    last_event_id: Annotated[str | None, HeaderParameter(name="Last-Event-ID")] = None,
) -> ServerSentEvent:
    await fetch_generation(state, generation_id, request.user.workspace_id)
    subscription = state.hub.subscribe(f"generation:{generation_id}")
    stream = generation_stream(
        state.pool,
        subscription,
        generation_id,
        parse_last_event_id(last_event_id),
        state.settings.sse_keepalive_s,
    )
    return ServerSentEvent(stream, headers={"X-Accel-Buffering": "no"})
