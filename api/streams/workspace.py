"""`project` events for every project of a workspace: what the dashboard's project list follows.

Counters are state, not history: the stream sends every project first (and again after the hub
lost notifications), then each counter change as it is notified. Reconnecting starts over.
"""

from __future__ import annotations

from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from api.auth.keys import StreamCredential
from api.streams.encoding import sse_event
from api.streams.hub import PROJECT_CHANNEL, HubEvent, Subscription
from api.streams.loop import Messages, StreamLogic, stream_loop
from worker.core import store
from worker.core.models import Project

MAX_PROJECTS = 200


def _message(project: object) -> bytes:
    return sse_event("project", project)


async def _projects(pool: AsyncConnectionPool, workspace_id: UUID) -> list[Project]:
    return await store.list_projects(
        pool, workspace_id, cursor_ts=None, cursor_id=None, limit=MAX_PROJECTS
    )


class _WorkspaceProjectStream(StreamLogic):
    def __init__(self, pool: AsyncConnectionPool, workspace_id: UUID) -> None:
        self.pool = pool
        self.workspace_id = workspace_id

    async def start(self) -> Messages:
        projects = await _projects(self.pool, self.workspace_id)
        # Oldest first, so a client that prepends ends with the newest on top.
        for project in reversed(projects):
            yield _message(project)

    def resync(self) -> Messages:
        return self.start()

    async def notified(self, event: HubEvent) -> Messages:
        if event.channel == PROJECT_CHANNEL:
            yield _message(event.payload)


def workspace_project_stream(
    pool: AsyncConnectionPool,
    subscription: Subscription,
    workspace_id: UUID,
    keepalive_s: float,
    credential: StreamCredential | None = None,
) -> Messages:
    logic = _WorkspaceProjectStream(pool, workspace_id)
    return stream_loop(logic, subscription, keepalive_s, credential)
