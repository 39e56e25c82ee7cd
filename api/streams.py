"""Project and workflow streams (SSE), built on the same hub and replay as generation streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import msgspec
from litestar.response import ServerSentEventMessage
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from api.hub import GENERATION_CHANNEL, PROJECT_CHANNEL, RESYNC, Subscription
from api.sse import REPLAY_PAGE, GenerationEventData, from_notification, from_row
from worker.models import ImageEvent, Project
from worker.sqlfiles import query

NODE_BATCH_S = 0.1
_encoder = msgspec.json.Encoder()


def _project_message(project: Project | dict[str, Any], event_id: int) -> ServerSentEventMessage:
    return ServerSentEventMessage(
        data=_encoder.encode(project).decode(), event="project", id=event_id
    )


def _generation_message(event: GenerationEventData) -> ServerSentEventMessage:
    return ServerSentEventMessage(
        data=_encoder.encode(event).decode(), event="generation", id=event.event_id
    )


async def _project(pool: AsyncConnectionPool, project_id: UUID) -> tuple[Project | None, int]:
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=class_row(Project))
        await cur.execute(query("get_project_for_stream"), {"id": project_id})
        project: Project | None = await cur.fetchone()
        latest = await conn.execute(query("latest_project_event_id"), {"project_id": project_id})
        row = await latest.fetchone()
    return project, int(row[0]) if row else 0


async def _project_events_after(
    pool: AsyncConnectionPool, project_id: UUID, after_id: int
) -> list[GenerationEventData]:
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=class_row(ImageEvent))
        await cur.execute(
            query("project_events_after"),
            {"project_id": project_id, "after_id": after_id, "limit": REPLAY_PAGE},
        )
        return [from_row(row) for row in await cur.fetchall()]


async def project_stream(
    pool: AsyncConnectionPool,
    subscription: Subscription,
    project_id: UUID,
    last_event_id: int | None,
    keepalive_s: float,
) -> AsyncIterator[ServerSentEventMessage]:
    """A `project` event first and on every counter change; a `generation` event for every
    change of any of its generations; `Last-Event-ID` replays the generation events missed."""
    try:
        project, latest = await _project(pool, project_id)
        last_sent = latest if last_event_id is None else last_event_id
        if last_event_id is not None:
            for event in await _project_events_after(pool, project_id, last_sent):
                last_sent = event.event_id
                yield _generation_message(event)
        if project is not None:
            yield _project_message(project, last_sent)
        while True:
            item = await subscription.get(keepalive_s)
            if item is None:
                yield ServerSentEventMessage(comment="keepalive", data=None)
                continue
            if item is RESYNC or item.payload.get("truncated"):
                while batch := await _project_events_after(pool, project_id, last_sent):
                    for event in batch:
                        last_sent = event.event_id
                        yield _generation_message(event)
                project, _ = await _project(pool, project_id)
                if project is not None:
                    yield _project_message(project, last_sent)
            elif item.channel == PROJECT_CHANNEL:
                yield _project_message(item.payload, last_sent)
            elif item.channel == GENERATION_CHANNEL:
                event = from_notification(item.payload)
                if event.event_id > last_sent:
                    last_sent = event.event_id
                    yield _generation_message(event)
    finally:
        subscription.close()


class NodeState(msgspec.Struct):
    id: str
    node_type: str
    node_data: dict[str, Any]


class NodeBatch(msgspec.Struct):
    workflow_id: UUID
    nodes: list[NodeState]


async def _nodes(
    pool: AsyncConnectionPool, workflow_id: UUID, workspace_id: UUID, ids: list[str] | None
) -> list[NodeState]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            query("workflow_nodes"),
            {"workflow_id": workflow_id, "workspace_id": workspace_id, "ids": ids},
        )
        return [
            NodeState(id=str(r[0]), node_type=str(r[1]), node_data=dict(r[2]))
            for r in await cur.fetchall()
        ]


async def workflow_stream(
    pool: AsyncConnectionPool,
    subscription: Subscription,
    workflow_id: UUID,
    workspace_id: UUID,
    keepalive_s: float,
) -> AsyncIterator[ServerSentEventMessage]:
    """`node` events: every node first, then the nodes that changed, a burst (changes within
    ~100 ms) coalesced into one event. Node data is state, so a reconnect re-sends it all."""
    last_id = 0
    try:
        yield _node_message(
            workflow_id, await _nodes(pool, workflow_id, workspace_id, None), last_id
        )
        while True:
            item = await subscription.get(keepalive_s)
            if item is None:
                yield ServerSentEventMessage(comment="keepalive", data=None)
                continue
            changed: set[str] | None = set()
            deadline = asyncio.get_running_loop().time() + NODE_BATCH_S
            while item is not None:
                if item is RESYNC or changed is None:
                    changed = None
                elif item.payload.get("node_id"):
                    changed.add(str(item.payload["node_id"]))
                    last_id = max(last_id, int(item.payload.get("event_id", 0)))
                remaining = deadline - asyncio.get_running_loop().time()
                item = await subscription.get(remaining) if remaining > 0 else None
            if changed is None or changed:
                ids = None if changed is None else sorted(changed)
                yield _node_message(
                    workflow_id, await _nodes(pool, workflow_id, workspace_id, ids), last_id
                )
    finally:
        subscription.close()


def _node_message(
    workflow_id: UUID, nodes: list[NodeState], event_id: int
) -> ServerSentEventMessage:
    return ServerSentEventMessage(
        data=_encoder.encode(NodeBatch(workflow_id=workflow_id, nodes=nodes)).decode(),
        event="node",
        id=event_id,
    )
