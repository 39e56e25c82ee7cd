"""SSE endpoints. Each stream subscribes to the process's hub; none holds a database connection.

The routes check what was asked for (the resource exists in the workspace, a stream slot is
free) and hand over to the stream (api/streams/)."""

from __future__ import annotations

from typing import Annotated, Any
from uuid import UUID

from litestar import Request, get
from litestar.exceptions import NotFoundException
from litestar.params import FromPath, HeaderParameter
from litestar.response import Stream

from api.auth.keys import QUERY_TOKEN_OPT, Principal
from api.deps import PoolDep, StorageDep, StreamsDep
from api.limits import TooManyRequests
from api.routes.generations import fetch_generation
from api.routes.projects import fetch_project
from api.streams.encoding import parse_last_event_id
from api.streams.generation import generation_stream
from api.streams.project import project_stream, workflow_stream
from worker.core import store

QUERY_TOKEN_NOTE = (
    " Browsers' EventSource cannot send headers: this route also accepts the key as "
    "`?access_token=` (only the SSE routes do). The credential is checked again at least every "
    "`AUTH_CACHE_TTL_S`: once revoked or expired, the stream ends with an `unauthorized` event."
)

LastEventId = Annotated[str | None, HeaderParameter(name="Last-Event-ID")]


@get(
    "/v1/generations/{generation_id:uuid}/events",
    media_type="text/event-stream",
    raises=[TooManyRequests],
    summary="Live progress of a generation (Server-Sent Events)",
    description="The first event is the current state; each event has `event: generation` and "
    "`id:` = image_events.id. `Last-Event-ID` resumes after that id. A comment keeps the "
    "connection alive every 15 s. The stream ends after the terminal event, also when resumed "
    "at or past it. A `Last-Event-ID` that is not an event id is ignored." + QUERY_TOKEN_NOTE,
    tags=["events"],
    opt={QUERY_TOKEN_OPT: True},
)
async def generation_events(
    generation_id: FromPath[UUID],
    request: Request[Principal, Any, Any],
    pool: PoolDep,
    streams: StreamsDep,
    last_event_id: LastEventId = None,
) -> Stream:
    await fetch_generation(pool, generation_id, request.user.workspace_id)
    after = parse_last_event_id(last_event_id)
    return streams.open(
        f"generation:{generation_id}",
        lambda subscription: generation_stream(
            pool, subscription, generation_id, after, streams.keepalive_s, streams.credential
        ),
    )


@get(
    "/v1/projects/{project_id:uuid}/events",
    media_type="text/event-stream",
    raises=[TooManyRequests],
    summary="Live counters of a project and changes of its generations (Server-Sent Events)",
    description="A `project` event (counters and status) first and on every change, and a "
    "`generation` event for each change of any of its generations. `Last-Event-ID` replays "
    "the generation events after that id." + QUERY_TOKEN_NOTE,
    tags=["events"],
    opt={QUERY_TOKEN_OPT: True},
)
async def project_events(
    project_id: FromPath[UUID],
    request: Request[Principal, Any, Any],
    pool: PoolDep,
    streams: StreamsDep,
    last_event_id: LastEventId = None,
) -> Stream:
    # Also while a delete of it runs: the stream shows its progress.
    await fetch_project(pool, project_id, request.user.workspace_id, deleting=True)
    after = parse_last_event_id(last_event_id)
    return streams.open(
        f"project:{project_id}",
        lambda subscription: project_stream(
            pool, subscription, project_id, after, streams.keepalive_s, streams.credential
        ),
    )


@get(
    "/v1/workflows/{workflow_id:uuid}/events",
    media_type="text/event-stream",
    raises=[TooManyRequests],
    summary="Canvas node updates of a workflow (Server-Sent Events, batched)",
    description="`node` events carrying "
    "`{workflow_id, nodes: [{id, node_type, node_data, position}]}`: every node first, then "
    "the nodes that changed; changes within ~100 ms go out together." + QUERY_TOKEN_NOTE,
    tags=["events"],
    opt={QUERY_TOKEN_OPT: True},
)
async def workflow_events(
    workflow_id: FromPath[UUID],
    request: Request[Principal, Any, Any],
    pool: PoolDep,
    streams: StreamsDep,
    storage: StorageDep,
) -> Stream:
    workspace_id = request.user.workspace_id
    if not await store.workflow_visible(pool, workflow_id, workspace_id):
        raise NotFoundException(f"workflow {workflow_id} not found")
    return streams.open(
        f"workflow:{workflow_id}",
        lambda subscription: workflow_stream(
            pool,
            subscription,
            workflow_id,
            workspace_id,
            streams.keepalive_s,
            streams.credential,
            storage,
        ),
    )
