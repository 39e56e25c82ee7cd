"""The walking skeleton through HTTP against real API and worker processes."""

from __future__ import annotations

import asyncio
import io
import time
import uuid
from typing import Any

import httpx
import pytest
from PIL import Image
from psycopg_pool import AsyncConnectionPool

from tests.e2e.conftest import Stack
from tests.factories import insert_generation
from tests.sse_client import SSEComment, SSEEvent, read_sse

pytestmark = pytest.mark.e2e


async def create_project(http: httpx.AsyncClient) -> str:
    response = await http.post("/v1/projects", json={"name": "e2e"})
    assert response.status_code == 201
    return str(response.json()["id"])


async def create_generation(
    http: httpx.AsyncClient, project_id: str, prompt: str, **extra: Any
) -> dict[str, Any]:
    response = await http.post(
        "/v1/generations",
        json={"project_id": project_id, "prompt": prompt, "provider": "local", **extra},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_for(
    http: httpx.AsyncClient, generation_id: str, status: str, timeout: float = 30
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = (await http.get(f"/v1/generations/{generation_id}")).json()
        if body["status"] == status:
            return body
        assert time.monotonic() < deadline, f"{generation_id} stuck in {body['status']}"
        await asyncio.sleep(0.05)


async def stream_events(
    http: httpx.AsyncClient,
    generation_id: str,
    headers: dict[str, str] | None = None,
    timeout: float = 30,
) -> tuple[list[SSEEvent], list[SSEComment]]:
    events: list[SSEEvent] = []
    comments: list[SSEComment] = []
    async with (
        asyncio.timeout(timeout),
        http.stream(
            "GET", f"/v1/generations/{generation_id}/events", headers=headers or {}
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for item in read_sse(response):
            (events if isinstance(item, SSEEvent) else comments).append(item)  # type: ignore[arg-type]
    return events, comments


async def test_five_generations_complete_and_one_streams_every_step(
    http: httpx.AsyncClient, stack: Stack
) -> None:
    project_id = await create_project(http)
    generations = [
        await create_generation(http, project_id, f"a lighthouse at dusk #{i}") for i in range(5)
    ]
    # From the first event: a live-only subscription can start after `processing` has passed.
    events, _ = await stream_events(http, generations[0]["id"], headers={"Last-Event-ID": "0"})

    ids = [int(e.id or 0) for e in events]
    assert ids == sorted(set(ids)), "event ids must strictly increase"
    data = [e.json() for e in events]
    assert all(e.event == "generation" for e in events)
    progress = [d["progress"] for d in data]
    assert progress == sorted(progress)
    steps = [d["step"] for d in data]
    assert "processing" in steps and "saving" in steps
    final = data[-1]
    assert (final["status"], final["step"], final["progress"]) == ("completed", "completed", 100)
    assert final["label"] == "Processing finished successfully"
    assert final["id"] == generations[0]["id"]

    png = await http.get(final["result_image_url"])
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    with Image.open(io.BytesIO(png.content)) as image:
        assert image.format == "PNG"
        assert image.size == (512, 512)
    # Its thumbnail: set in the same update that completed it, beside the result, 256 px WebP.
    done = (await http.get(f"/v1/generations/{final['id']}")).json()
    assert done["result_image_url"] == final["result_image_url"]
    assert done["thumbnail_url"] == final["result_image_url"].removesuffix(".png") + "-thumb.webp"
    thumb = await http.get(done["thumbnail_url"])
    assert thumb.status_code == 200
    assert thumb.headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(thumb.content)) as image:
        assert image.format == "WEBP"
        assert image.size == (256, 256)

    finished = [await wait_for(http, g["id"], "completed") for g in generations]
    assert len({f["result_image_url"] for f in finished}) == 5
    project = (await http.get(f"/v1/projects/{project_id}")).json()
    assert (project["status"], project["completed_count"], project["image_count"]) == (
        "completed",
        5,
        5,
    )


async def test_late_subscriber_gets_the_terminal_state_and_the_stream_ends(
    http: httpx.AsyncClient,
) -> None:
    project_id = await create_project(http)
    generation = await create_generation(http, project_id, "late")
    await wait_for(http, generation["id"], "completed")
    events, _ = await stream_events(http, generation["id"], timeout=5)
    assert len(events) == 1
    assert events[0].json()["status"] == "completed"
    assert events[0].json()["result_image_url"].startswith("http://")


async def test_last_event_id_replays_what_was_missed(http: httpx.AsyncClient) -> None:
    project_id = await create_project(http)
    generation = await create_generation(http, project_id, "resume me")
    await wait_for(http, generation["id"], "completed")
    full, _ = await stream_events(http, generation["id"], headers={"Last-Event-ID": "0"})
    assert next(e.json()["step"] for e in full) == "queued"
    assert full[-1].json()["status"] == "completed"

    resumed, _ = await stream_events(
        http, generation["id"], headers={"Last-Event-ID": full[1].id or ""}
    )
    assert [e.id for e in resumed] == [e.id for e in full[2:]]


async def test_a_row_inserted_with_plain_sql_completes(
    http: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    project_id = await create_project(http)
    generation_id = await insert_generation(pool, uuid.UUID(project_id), prompt="typed into psql")
    done = await wait_for(http, str(generation_id), "completed")
    assert done["result_image_url"].endswith(".png")
    assert done["thumbnail_url"].endswith(f"/{generation_id}-thumb.webp")
    assert done["attempts"] == 1


async def read_for(
    http: httpx.AsyncClient, path: str, seconds: float
) -> tuple[list[SSEEvent], list[SSEComment]]:
    """Reads a stream that should stay open for `seconds`, then hangs up."""
    comments: list[SSEComment] = []
    events: list[SSEEvent] = []
    try:
        async with asyncio.timeout(seconds), http.stream("GET", path) as response:
            async for item in read_sse(response):
                (events if isinstance(item, SSEEvent) else comments).append(item)  # type: ignore[arg-type]
    except TimeoutError:
        return events, comments
    raise AssertionError(f"the stream {path} ended early")


async def test_keepalive_comments_on_an_idle_stream(
    http: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    project_id = await create_project(http)
    # A job id of our own: the trigger defers nothing, so the generation stays pending.
    generation_id = await insert_generation(pool, uuid.UUID(project_id), prompt="idle", job_id=-1)
    events, comments = await read_for(http, f"/v1/generations/{generation_id}/events", seconds=2.5)
    assert [e.json()["status"] for e in events] == ["pending"]
    assert len(comments) >= 2
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE image_generations SET status = 'cancelled' WHERE id = %s", (generation_id,)
        )


async def listen_backends(pool: AsyncConnectionPool) -> list[int]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query = 'LISTEN project_status'"
        )
        return [int(r[0]) for r in await cur.fetchall()]


async def test_many_streams_share_one_listen_connection_which_reconnects(
    http: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    project_id = await create_project(http)
    generations = [
        await create_generation(http, project_id, f"fan-out {i}", prompt_spec={"size": "128x128"})
        for i in range(10)
    ]

    async def follow(generation_id: str) -> list[dict[str, Any]]:
        events, _ = await stream_events(http, generation_id)
        return [e.json() for e in events]

    results = await asyncio.gather(*(follow(g["id"]) for g in generations))
    assert all(r[-1]["status"] == "completed" for r in results)
    backends = await listen_backends(pool)
    assert len(backends) == 1, "one LISTEN connection per API process, not one per client"

    async with pool.connection() as conn:
        await conn.execute("SELECT pg_terminate_backend(%s)", (backends[0],))
    deadline = time.monotonic() + 10
    while not (fresh := await listen_backends(pool)) or fresh == backends:
        assert time.monotonic() < deadline, "the hub did not reconnect"
        await asyncio.sleep(0.1)

    generation = await create_generation(http, project_id, "after reconnect")
    events, _ = await stream_events(http, generation["id"])
    assert events[-1].json()["status"] == "completed"


async def test_unknown_generation_stream_is_404(http: httpx.AsyncClient) -> None:
    response = await http.get(f"/v1/generations/{uuid.uuid4()}/events")
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
