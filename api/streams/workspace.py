"""`project` events for every project of a workspace: what the dashboard's project list follows.

Counters are state, not history: the stream sends every project first (and again after the hub
lost notifications), then each counter change as it is notified. Reconnecting starts over.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from uuid import UUID

import msgspec
import psycopg
from litestar.response import ServerSentEventMessage
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from api.streams.generation import DATABASE_RETRY_S, KEEPALIVE, RECONNECT, WAITING
from api.streams.hub import PROJECT_CHANNEL, RESYNC, SHUTDOWN, Subscription
from worker.core.models import Project
from worker.core.sqlfiles import query

MAX_PROJECTS = 200
_encoder = msgspec.json.Encoder()


def _message(project: object) -> ServerSentEventMessage:
    return ServerSentEventMessage(data=_encoder.encode(project).decode(), event="project")


async def _projects(pool: AsyncConnectionPool, workspace_id: UUID) -> list[Project]:
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=class_row(Project))
        await cur.execute(
            query("list_projects"),
            {
                "workspace_id": workspace_id,
                "cursor_ts": None,
                "cursor_id": None,
                "limit": MAX_PROJECTS,
            },
        )
        return await cur.fetchall()


async def workspace_project_stream(
    pool: AsyncConnectionPool,
    subscription: Subscription,
    workspace_id: UUID,
    keepalive_s: float,
) -> AsyncGenerator[ServerSentEventMessage, None]:
    resend = True
    try:
        while True:
            if resend:
                try:
                    projects = await _projects(pool, workspace_id)
                except psycopg.OperationalError:
                    subscription.stale = True
                    yield WAITING
                    await asyncio.sleep(DATABASE_RETRY_S)
                    continue
                resend = False
                # Oldest first, so a client that prepends ends with the newest on top.
                for project in reversed(projects):
                    yield _message(project)
            item = await subscription.get(keepalive_s)
            if item is SHUTDOWN:
                yield RECONNECT
                return
            if item is None:
                yield KEEPALIVE
            elif item is RESYNC:
                resend = True
            elif item.channel == PROJECT_CHANNEL:
                yield _message(item.payload)
    finally:
        subscription.close()
