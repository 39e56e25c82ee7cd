"""Two workspaces streaming at once over real HTTP: each SSE subscriber only ever receives events
of its own workspace, however the activity of both interleaves."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from psycopg import sql
from psycopg_pool import AsyncConnectionPool

from tests.conftest import Tenant
from tests.sse_client import SSEEvent, read_sse


@dataclass
class Stream:
    """One SSE subscription read in the background, as a browser's EventSource would."""

    raw: list[str] = field(default_factory=list)
    events: list[SSEEvent] = field(default_factory=list)
    ended: bool = False
    task: asyncio.Task[None] | None = None

    def data(self, kind: str) -> list[dict[str, Any]]:
        return [e.json() for e in self.events if e.event == kind]


async def open_stream(
    http: httpx.AsyncClient, path: str, tenant: Tenant, headers: dict[str, str] | None = None
) -> Stream:
    stream = Stream()

    async def read() -> None:
        async with http.stream("GET", path, headers={**tenant.headers, **(headers or {})}) as r:
            assert r.status_code == 200, await r.aread()
            async for item in read_sse(r):
                if isinstance(item, SSEEvent):
                    stream.raw.append(f"{item.event}|{item.id}|{item.data}")
                    stream.events.append(item)
        stream.ended = True

    stream.task = asyncio.create_task(read())
    return stream


async def close(*streams: Stream) -> None:
    for stream in streams:
        assert stream.task is not None
        if stream.task.done():
            stream.task.result()  # a failed read fails the test
        stream.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await stream.task


async def wait_until(predicate: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


@dataclass
class Side:
    """One workspace's view: its tenant, project and generations."""

    tenant: Tenant
    project_id: str
    generations: list[str]
    name: str
    marker: str  # in every prompt

    def identifiers(self) -> set[str]:
        return {
            str(self.tenant.workspace_id),
            self.project_id,
            *self.generations,
            self.name,
            self.marker,
        }


async def create_side(http: httpx.AsyncClient, tenant: Tenant) -> Side:
    name, marker = f"project-{uuid.uuid4().hex}", f"marker-{uuid.uuid4().hex}"
    response = await http.post("/v1/projects", json={"name": name}, headers=tenant.headers)
    assert response.status_code == 201, response.text
    side = Side(tenant, str(response.json()["id"]), [], name, marker)
    await add_generation(http, side)
    return side


async def add_generation(http: httpx.AsyncClient, side: Side) -> str:
    response = await http.post(
        "/v1/generations",
        json={
            "project_id": side.project_id,
            "prompt": f"a fox, {side.marker}",
            "provider": "local",
        },
        headers=side.tenant.headers,
    )
    assert response.status_code == 201, response.text
    generation_id = str(response.json()["id"])
    side.generations.append(generation_id)
    return generation_id


async def advance(pool: AsyncConnectionPool, generation_id: str, **columns: Any) -> None:
    """What the worker would write, with plain SQL (no worker runs here)."""
    query = sql.SQL("UPDATE image_generations SET {} WHERE id = {}").format(
        sql.SQL(", ").join(
            sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder(name))
            for name in columns
        ),
        sql.Placeholder("__id"),
    )
    async with pool.connection() as conn:
        await conn.execute(query, {**columns, "__id": generation_id})


LIFECYCLE: list[dict[str, Any]] = [
    {"status": "processing", "step": "fetching", "progress": 10},
    {"step": "processing", "progress": 50},
    {"progress": 65},
    {"status": "completed", "result_image_url": "https://cdn.example.com/result.png"},
]


async def test_concurrent_streams_of_two_workspaces_only_see_their_own(
    api_url: str, pool: AsyncConnectionPool, tenant: Tenant, other_tenant: Tenant
) -> None:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        a, b = await create_side(http, tenant), await create_side(http, other_tenant)
        project_a = await open_stream(http, f"/v1/projects/{a.project_id}/events", a.tenant)
        project_b = await open_stream(http, f"/v1/projects/{b.project_id}/events", b.tenant)
        generation_a = await open_stream(
            http, f"/v1/generations/{a.generations[0]}/events", a.tenant
        )
        generation_b = await open_stream(
            http, f"/v1/generations/{b.generations[0]}/events", b.tenant
        )
        streams = (project_a, project_b, generation_a, generation_b)
        await wait_until(lambda: all(s.events for s in streams), "the first event of each stream")

        # Both workspaces busy at once, interleaved step by step.
        for columns in LIFECYCLE:
            await advance(pool, a.generations[0], **columns)
            await advance(pool, b.generations[0], **columns)
        second_b, second_a = await add_generation(http, b), await add_generation(http, a)
        await advance(pool, second_b, status="cancelled")
        await advance(pool, second_a, status="cancelled")

        await wait_until(lambda: generation_a.ended and generation_b.ended, "terminal events")

        def cancelled_seen(stream: Stream, generation_id: str) -> bool:
            return any(
                d["id"] == generation_id and d["status"] == "cancelled"
                for d in stream.data("generation")
            )

        await wait_until(
            lambda: cancelled_seen(project_a, second_a) and cancelled_seen(project_b, second_b),
            "the last event of each project",
        )
        # B's last change committed after A's: anything misrouted to A would be in by now.
        await wait_until(
            lambda: any(p["cancelled_count"] == 1 for p in project_b.data("project")),
            "B's last counters",
        )
        await asyncio.sleep(0.3)
        await close(*streams)

    for side, other, project, generation in (
        (a, b, project_a, generation_a),
        (b, a, project_b, generation_b),
    ):
        assert {d["id"] for d in project.data("generation")} == set(side.generations)
        # The first project event is the row (`id`), live ones the NOTIFY payload (`project_id`).
        project_ids = {d.get("id", d.get("project_id")) for d in project.data("project")}
        assert project_ids == {side.project_id}
        assert {d["workspace_id"] for d in project.data("project")} == {
            str(side.tenant.workspace_id)
        }
        assert len(project.data("project")) > 1
        assert {d["id"] for d in generation.data("generation")} == {side.generations[0]}
        assert generation.data("generation")[-1]["status"] == "completed"
        # Not even an identifier of the other workspace, in any field.
        for raw in project.raw + generation.raw:
            leaked = [value for value in other.identifiers() if value in raw]
            assert leaked == [], f"{raw} carries {leaked}"
        # And no prompt either: streams carry state, not the request.
        assert not any(side.marker in raw for raw in project.raw + generation.raw)


async def test_a_stream_cannot_be_opened_or_resumed_across_workspaces(
    api_url: str, pool: AsyncConnectionPool, tenant: Tenant, other_tenant: Tenant
) -> None:
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        a, b = await create_side(http, tenant), await create_side(http, other_tenant)
        for path in (
            f"/v1/projects/{b.project_id}/events",
            f"/v1/generations/{b.generations[0]}/events",
        ):
            response = await http.get(path, headers=a.tenant.headers)
            assert response.status_code == 404, path

        for columns in LIFECYCLE:
            await advance(pool, b.generations[0], **columns)
        await advance(pool, a.generations[0], status="cancelled")
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT max(id) FROM image_events WHERE generation_id = %s", (b.generations[0],)
            )
            row = await cur.fetchone()
            assert row is not None
            b_last = int(row[0])

        # Resuming A's streams from the start, or from an id of B's, replays A's events only.
        replays = [
            await open_stream(
                http, f"/v1/projects/{a.project_id}/events", a.tenant, {"Last-Event-ID": "0"}
            ),
            await open_stream(
                http,
                f"/v1/generations/{a.generations[0]}/events",
                a.tenant,
                {"Last-Event-ID": "0"},
            ),
            await open_stream(
                http,
                f"/v1/projects/{a.project_id}/events",
                a.tenant,
                {"Last-Event-ID": str(b_last)},
            ),
        ]
        await wait_until(lambda: replays[1].ended, "the end of A's generation stream")
        await wait_until(
            lambda: all(len(s.data("generation")) >= 2 for s in replays[:2]), "A's replay"
        )
        await asyncio.sleep(0.3)
        await close(*replays)

    for replay in replays:
        assert {d["id"] for d in replay.data("generation")} <= set(a.generations)
        for raw in replay.raw:
            assert not [value for value in b.identifiers() if value in raw], raw
    assert [d["status"] for d in replays[0].data("generation")] == ["pending", "cancelled"]


async def test_a_workflow_stream_ignores_another_workspace_using_the_same_workflow_id(
    api_url: str, pool: AsyncConnectionPool, tenant: Tenant, other_tenant: Tenant
) -> None:
    """Workflow ids are chosen by clients, so two workspaces may pick the same one."""
    workflow_id = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        a, b = await create_side(http, tenant), await create_side(http, other_tenant)
        nodes = {}
        for side, node in ((a, "node-a"), (b, "node-b")):
            response = await http.post(
                "/v1/generations",
                json={
                    "project_id": side.project_id,
                    "prompt": f"a fox, {side.marker}",
                    "workflow_id": workflow_id,
                    "node_id": node,
                },
                headers=side.tenant.headers,
            )
            assert response.status_code == 201, response.text
            side.generations.append(str(response.json()["id"]))
            nodes[node] = side
        stream = await open_stream(http, f"/v1/workflows/{workflow_id}/events", a.tenant)
        await wait_until(lambda: bool(stream.events), "the first node event")

        for columns in LIFECYCLE:
            await advance(pool, b.generations[-1], **columns)
        await asyncio.sleep(0.5)  # longer than a batch: B's changes are not merged into A's
        await advance(pool, a.generations[-1], status="cancelled")
        await wait_until(
            lambda: any(
                n["node_data"].get("status") == "error"
                for batch in stream.data("node")
                for n in batch["nodes"]
            ),
            "A's node change",
        )
        await asyncio.sleep(0.3)
        await close(stream)

    batches = stream.data("node")
    assert {n["id"] for batch in batches for n in batch["nodes"]} == {"node-a"}
    # B's activity gave A's stream nothing: no empty batch, no id of B's events.
    assert all(batch["nodes"] for batch in batches)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id FROM image_events WHERE generation_id = %s", (b.generations[-1],)
        )
        b_event_ids = {str(row[0]) for row in await cur.fetchall()}
    assert not {e.id for e in stream.events} & b_event_ids
    for raw in stream.raw:
        assert not [value for value in b.identifiers() if value in raw], raw
