"""Project and workflow streams (SSE), built on the same hub and replay as generation streams."""

from __future__ import annotations

import asyncio
from typing import Any
from uuid import UUID

import msgspec
from psycopg_pool import AsyncConnectionPool

from api.auth.keys import StreamCredential
from api.streams.encoding import sse_event
from api.streams.generation import REPLAY_PAGE, GenerationEventData, from_row, generation_message
from api.streams.hub import GENERATION_CHANNEL, PROJECT_CHANNEL, HubEvent, Subscription
from api.streams.loop import Messages, StreamLogic, stream_loop
from worker.core import store
from worker.core.models import Project
from worker.core.store import Cursor
from worker.storage.base import Storage
from worker.storage.fresh import fresh_node_data

NODE_BATCH_S = 0.1


def _project_message(project: Project | dict[str, Any], event_id: int) -> bytes:
    return sse_event("project", project, event_id)


BEGINNING: Cursor = ("0", 0)  # before every event; `Last-Event-ID: 0` asks for this


async def _start_cursor(
    pool: AsyncConnectionPool, project_id: UUID, last_event_id: int | None
) -> Cursor:
    if last_event_id == 0:
        return BEGINNING
    async with store.connection(pool) as conn:
        if last_event_id is not None:
            cursor = await store.project_cursor_of_event(conn, project_id, last_event_id)
            if cursor is not None:
                return cursor
        return await store.project_cursor_now(conn, project_id) or BEGINNING


async def _project_events_after(
    pool: AsyncConnectionPool, project_id: UUID, cursor: Cursor
) -> tuple[list[tuple[GenerationEventData, Cursor]], bool]:
    """The events past the cursor that can be sent in commit order, and whether committed ones
    wait behind the horizon (an older transaction, anywhere in the cluster, is still open)."""
    events: list[tuple[GenerationEventData, Cursor]] = []
    for event, ready in await store.project_events_after(pool, project_id, cursor, REPLAY_PAGE):
        if not ready:
            return events, True  # ordered by txid: every later one waits too
        events.append((from_row(event), (str(event.txid), event.id)))
    return events, False


POLL_S = 0.1  # how often a stream polls while committed events wait behind the horizon
MAX_WAITING = 10_000


class _ProjectStream(StreamLogic):
    def __init__(
        self, pool: AsyncConnectionPool, project_id: UUID, last_event_id: int | None
    ) -> None:
        self.pool = pool
        self.project_id = project_id
        self.last_event_id = last_event_id
        self.cursor: Cursor | None = None
        # Notified, but their transaction is not below the horizon yet.
        self.waiting: set[int] = set()
        # Committed events wait behind the horizon: poll, no notification will come.
        self.behind = False

    async def _catch_up(self) -> Messages:
        assert self.cursor is not None
        while True:
            batch, self.behind = await _project_events_after(
                self.pool, self.project_id, self.cursor
            )
            for event, position in batch:
                self.cursor = position
                self.waiting.discard(event.event_id)
                yield generation_message(event)
            if self.behind or len(batch) < REPLAY_PAGE:
                break

    async def _project_state(self) -> Messages:
        assert self.cursor is not None
        project = await store.get_project_for_stream(self.pool, self.project_id)
        if project is not None:
            yield _project_message(project, self.cursor[1])

    async def start(self) -> Messages:
        if self.cursor is None:
            self.cursor = await _start_cursor(self.pool, self.project_id, self.last_event_id)
        if self.last_event_id is not None:
            async for message in self._catch_up():
                yield message
        async for message in self._project_state():
            yield message

    async def notified(self, event: HubEvent) -> Messages:
        assert self.cursor is not None
        if event.channel == PROJECT_CHANNEL:
            yield _project_message(event.payload, self.cursor[1])
            return
        if event.channel == GENERATION_CHANNEL and len(self.waiting) < MAX_WAITING:
            self.waiting.add(int(event.payload.get("event_id", 0)))
        async for message in self._catch_up():
            yield message

    async def resync(self) -> Messages:
        async for message in self._catch_up():
            yield message
        self.waiting.clear()
        async for message in self._project_state():
            yield message

    def pending_s(self) -> float | None:
        return POLL_S if self.waiting or self.behind else None

    def timed_out(self) -> Messages:
        return self._catch_up()


def project_stream(
    pool: AsyncConnectionPool,
    subscription: Subscription,
    project_id: UUID,
    last_event_id: int | None,
    keepalive_s: float,
    credential: StreamCredential | None = None,
) -> Messages:
    """A `project` event first and on every counter change; a `generation` event for every
    change of any of its generations, in commit order; `Last-Event-ID` resumes after that event
    without skipping one that committed late (see sql/migrations/005_commit_ordered_events.sql)."""
    logic = _ProjectStream(pool, project_id, last_event_id)
    return stream_loop(logic, subscription, keepalive_s, credential)


class NodeState(msgspec.Struct):
    id: str
    node_type: str
    node_data: dict[str, Any]
    # Where the canvas draws it: React Flow's `{x, y}`, `{}` when never placed.
    position: dict[str, Any]


class NodeBatch(msgspec.Struct):
    workflow_id: UUID
    nodes: list[NodeState]


async def _nodes(
    pool: AsyncConnectionPool,
    storage: Storage | None,
    workflow_id: UUID,
    workspace_id: UUID,
    ids: list[str] | None,
) -> list[NodeState]:
    rows = await store.workflow_nodes(pool, workflow_id, workspace_id, ids)
    datas = [data for _, _, data, _ in rows]
    if storage is not None:
        datas = await fresh_node_data(storage, datas)
    return [
        NodeState(id=id, node_type=kind, node_data=data, position=position)
        for (id, kind, _, position), data in zip(rows, datas, strict=True)
    ]


class _WorkflowStream(StreamLogic):
    def __init__(
        self,
        pool: AsyncConnectionPool,
        storage: Storage | None,
        workflow_id: UUID,
        workspace_id: UUID,
    ) -> None:
        self.pool = pool
        self.storage = storage
        self.workflow_id = workflow_id
        self.workspace_id = workspace_id
        self.last_id = 0
        # The burst being coalesced: when it goes out, and which nodes changed (None: every one).
        self._deadline: float | None = None
        self._changed: set[str] | None = set()

    def _open_batch(self) -> None:
        if self._deadline is None:
            self._deadline = asyncio.get_running_loop().time() + NODE_BATCH_S
            self._changed = set()

    async def _message(self, ids: list[str] | None) -> Messages:
        nodes = await _nodes(self.pool, self.storage, self.workflow_id, self.workspace_id, ids)
        batch = NodeBatch(workflow_id=self.workflow_id, nodes=nodes)
        yield sse_event("node", batch, self.last_id)

    def start(self) -> Messages:
        return self._message(None)

    async def notified(self, event: HubEvent) -> Messages:
        self._open_batch()
        payload = event.payload
        if (
            self._changed is not None
            and payload.get("node_id")
            and payload.get("workspace_id") == str(self.workspace_id)
        ):
            # Clients choose workflow ids, so another workspace may use the same one: its
            # changes are none of this stream's business (not even their timing).
            self._changed.add(str(payload["node_id"]))
            self.last_id = max(self.last_id, int(payload.get("event_id", 0)))
        return
        yield

    async def resync(self) -> Messages:
        self._open_batch()
        self._changed = None
        return
        yield

    def pending_s(self) -> float | None:
        if self._deadline is None:
            return None
        return self._deadline - asyncio.get_running_loop().time()

    async def timed_out(self) -> Messages:
        changed, self._deadline, self._changed = self._changed, None, set()
        if changed is None or changed:
            async for message in self._message(None if changed is None else sorted(changed)):
                yield message


def workflow_stream(
    pool: AsyncConnectionPool,
    subscription: Subscription,
    workflow_id: UUID,
    workspace_id: UUID,
    keepalive_s: float,
    credential: StreamCredential | None = None,
    storage: Storage | None = None,
) -> Messages:
    """`node` events: every node first, then the nodes that changed, a burst (changes within
    ~100 ms) coalesced into one event. Node data is state, so a reconnect re-sends it all; its
    image URLs are made afresh from their keys when `storage` signs them."""
    logic = _WorkflowStream(pool, storage, workflow_id, workspace_id)
    return stream_loop(logic, subscription, keepalive_s, credential)
