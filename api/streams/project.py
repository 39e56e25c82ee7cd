"""Project and workflow streams (SSE), built on the same hub and replay as generation streams."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from litestar.response import ServerSentEventMessage
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from api.streams.generation import (
    DATABASE_RETRY_S,
    KEEPALIVE,
    RECONNECT,
    REPLAY_PAGE,
    WAITING,
    GenerationEventData,
    from_row,
)
from api.streams.hub import GENERATION_CHANNEL, PROJECT_CHANNEL, RESYNC, SHUTDOWN, Subscription
from worker.core.models import ImageEvent, Project
from worker.core.sqlfiles import query

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


async def _project(pool: AsyncConnectionPool, project_id: UUID) -> Project | None:
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=class_row(Project))
        await cur.execute(query("get_project_for_stream"), {"id": project_id})
        project: Project | None = await cur.fetchone()
    return project


Cursor = tuple[str, int]  # (txid, id): the position of the last event sent, in commit order
BEGINNING: Cursor = ("0", 0)  # before every event; `Last-Event-ID: 0` asks for this


async def _start_cursor(
    pool: AsyncConnectionPool, project_id: UUID, last_event_id: int | None
) -> Cursor:
    if last_event_id == 0:
        return BEGINNING
    async with pool.connection() as conn:
        if last_event_id is not None:
            cur = await conn.execute(
                query("project_cursor_of_event"), {"id": last_event_id, "project_id": project_id}
            )
            row = await cur.fetchone()
            if row is not None:
                return str(row[0]), last_event_id
        cur = await conn.execute(query("project_cursor_now"), {"project_id": project_id})
        latest = await cur.fetchone()
    return (str(latest[0]), int(latest[1])) if latest is not None else BEGINNING


async def _project_events_after(
    pool: AsyncConnectionPool, project_id: UUID, cursor: Cursor
) -> tuple[list[tuple[GenerationEventData, Cursor]], bool]:
    """The events past the cursor that can be sent in commit order, and whether committed ones
    wait behind the horizon (an older transaction, anywhere in the cluster, is still open)."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            query("project_events_after"),
            {
                "project_id": project_id,
                "txid": cursor[0],
                "after_id": cursor[1],
                "limit": REPLAY_PAGE,
            },
        )
        assert cur.description is not None
        names = [column.name for column in cur.description]
        rows = [dict(zip(names, row, strict=True)) for row in await cur.fetchall()]
    events: list[tuple[GenerationEventData, Cursor]] = []
    for row in rows:
        if not row.pop("ready"):
            return events, True  # ordered by txid: every later one waits too
        event = ImageEvent(**row)
        events.append((from_row(event), (str(event.txid), event.id)))
    return events, False


async def project_stream(
    pool: AsyncConnectionPool,
    subscription: Subscription,
    project_id: UUID,
    last_event_id: int | None,
    keepalive_s: float,
) -> AsyncGenerator[ServerSentEventMessage, None]:
    """A `project` event first and on every counter change; a `generation` event for every
    change of any of its generations, in commit order; `Last-Event-ID` resumes after that event
    without skipping one that committed late (see sql/migrations/005_commit_ordered_events.sql)."""
    cursor: Cursor | None = None
    waiting: set[int] = set()  # notified, but their transaction is not below the horizon yet
    behind = False  # committed events wait behind the horizon: poll, no notification will come

    async def catch_up() -> AsyncIterator[ServerSentEventMessage]:
        nonlocal cursor, behind
        assert cursor is not None
        while True:
            batch, behind = await _project_events_after(pool, project_id, cursor)
            for event, position in batch:
                cursor = position
                waiting.discard(event.event_id)
                yield _generation_message(event)
            if behind or len(batch) < REPLAY_PAGE:
                break

    try:
        while True:
            try:
                if cursor is None:
                    cursor = await _start_cursor(pool, project_id, last_event_id)
                if last_event_id is not None:
                    async for message in catch_up():
                        yield message
                project = await _project(pool, project_id)
                break
            except psycopg.OperationalError:
                yield WAITING
                await asyncio.sleep(DATABASE_RETRY_S)
        if project is not None:
            yield _project_message(project, cursor[1])
        while True:
            item = await subscription.get(0.1 if waiting or behind else keepalive_s)
            if item is SHUTDOWN:
                yield RECONNECT
                return
            if item is None and not (waiting or behind):
                yield KEEPALIVE
                continue
            if item is not None and item.channel == PROJECT_CHANNEL:
                yield _project_message(item.payload, cursor[1])
                continue
            if (
                item is not None
                and item is not RESYNC
                and item.channel == GENERATION_CHANNEL
                and len(waiting) < 10_000
            ):
                waiting.add(int(item.payload.get("event_id", 0)))
            try:
                async for message in catch_up():
                    yield message
            except psycopg.OperationalError:
                # The database is away: keep the client, try again shortly.
                subscription.stale = True
                await asyncio.sleep(DATABASE_RETRY_S)
                yield WAITING
                continue
            if item is RESYNC:
                waiting.clear()
                project = await _project(pool, project_id)
                if project is not None:
                    yield _project_message(project, cursor[1])
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
) -> AsyncGenerator[ServerSentEventMessage, None]:
    """`node` events: every node first, then the nodes that changed, a burst (changes within
    ~100 ms) coalesced into one event. Node data is state, so a reconnect re-sends it all."""
    last_id = 0
    try:
        yield _node_message(
            workflow_id, await _nodes(pool, workflow_id, workspace_id, None), last_id
        )
        while True:
            item = await subscription.get(keepalive_s)
            if item is SHUTDOWN:
                yield RECONNECT
                return
            if item is None:
                yield KEEPALIVE
                continue
            changed: set[str] | None = set()
            deadline = asyncio.get_running_loop().time() + NODE_BATCH_S
            while item is not None:
                if item is SHUTDOWN:
                    yield RECONNECT
                    return
                if item is RESYNC or changed is None:
                    changed = None
                elif item.payload.get("node_id") and item.payload.get("workspace_id") == str(
                    workspace_id
                ):
                    # Clients choose workflow ids, so another workspace may use the same one:
                    # its changes are none of this stream's business (not even their timing).
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
