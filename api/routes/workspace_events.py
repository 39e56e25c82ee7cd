"""`GET /v1/projects/events`: every project's counters of the workspace, live (the dashboard's
project list)."""

from __future__ import annotations

from typing import Any

from litestar import Request, get
from litestar.response import Stream

from api.auth.keys import QUERY_TOKEN_OPT, Principal
from api.deps import PoolDep, StreamsDep
from api.limits import TooManyRequests
from api.routes.events import QUERY_TOKEN_NOTE
from api.streams.workspace import workspace_project_stream


@get(
    "/v1/projects/events",
    media_type="text/event-stream",
    summary="Live counters of every project of the workspace (Server-Sent Events)",
    description="A `project` event (counters and status) for each project first, oldest first, "
    "then one for every counter change. Counters are state: a reconnect starts over."
    + QUERY_TOKEN_NOTE,
    tags=["events"],
    opt={QUERY_TOKEN_OPT: True},
    raises=[TooManyRequests],
)
async def workspace_project_events(
    request: Request[Principal, Any, Any],
    pool: PoolDep,
    streams: StreamsDep,
) -> Stream:
    workspace_id = request.user.workspace_id
    return streams.open(
        f"workspace:{workspace_id}",
        lambda subscription: workspace_project_stream(
            pool, subscription, workspace_id, streams.keepalive_s, streams.credential
        ),
    )
