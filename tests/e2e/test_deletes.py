"""Deletes through real API and worker processes: a delete racing a running generation, and a
project deleted by the worker's job with its progress on the project stream."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from tests.e2e.conftest import Stack
from tests.e2e.test_lifecycle import create_generation, create_project, wait_for
from tests.sse_client import SSEEvent, read_sse

pytestmark = pytest.mark.e2e
# Slow enough to delete a generation while the model is "working".
STACK_ENV = {"LOCAL_PROVIDER_DELAY_MS": "1500"}


def files_of(stack: Stack, generation_id: str) -> list[str]:
    if not stack.storage.exists():
        return []
    return [str(p) for p in stack.storage.rglob(f"*{generation_id}*") if p.is_file()]


async def wait_processing(http: httpx.AsyncClient, generation_id: str) -> dict[str, Any]:
    for _ in range(600):
        body: dict[str, Any] = (await http.get(f"/v1/generations/{generation_id}")).json()
        if body["status"] == "processing" and body["step"] == "processing":
            return body
        await asyncio.sleep(0.02)
    raise AssertionError(f"{generation_id} never reached the model")


async def test_deleting_a_running_generation_leaves_nothing_and_no_result_lands(
    http: httpx.AsyncClient, stack: Stack, pool: AsyncConnectionPool
) -> None:
    project_id = await create_project(http)
    generation = await create_generation(http, project_id, "deleted while drawn")
    running = await wait_processing(http, generation["id"])

    response = await http.delete(f"/v1/generations/{generation['id']}")

    assert response.status_code == 204, response.text
    # Past the time the model would have taken, and then some: nothing came back.
    await asyncio.sleep(2.5)
    assert (await http.get(f"/v1/generations/{generation['id']}")).status_code == 404
    assert files_of(stack, generation["id"]) == []
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM image_generations WHERE id = %(id)s),"
            " (SELECT count(*) FROM image_events WHERE generation_id = %(id)s),"
            " (SELECT status FROM procrastinate_jobs WHERE id = %(job)s)",
            {"id": generation["id"], "job": running["job_id"]},
        )
        row = await cur.fetchone()
    assert row is not None
    assert row[0] == 0 and row[1] == 0
    assert row[2] in ("aborted", "failed", "cancelled")
    project = (await http.get(f"/v1/projects/{project_id}")).json()
    assert (project["image_count"], project["processing_count"]) == (0, 0)


async def test_a_project_is_deleted_by_the_worker_with_progress_on_its_stream(
    http: httpx.AsyncClient, stack: Stack
) -> None:
    project_id = await create_project(http)
    done = await create_generation(http, project_id, "finished first")
    await wait_for(http, done["id"], "completed")
    assert files_of(stack, done["id"])
    running = await create_generation(http, project_id, "still drawing")
    await wait_processing(http, running["id"])
    await create_generation(http, project_id, "still queued")
    events: list[dict[str, Any]] = []

    async def watch() -> None:
        async with http.stream("GET", f"/v1/projects/{project_id}/events") as response:
            assert response.status_code == 200
            async for item in read_sse(response):
                if isinstance(item, SSEEvent) and item.event == "project":
                    events.append(item.json())
                    if item.json().get("deleted"):
                        return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.3)
    response = await http.delete(f"/v1/projects/{project_id}")
    assert response.status_code == 202, response.text
    await asyncio.wait_for(watcher, 30)

    assert events[-1]["deleted"] is True and events[-1]["deletion"]["status"] == "done"
    progress = [e["deletion"] for e in events if "deletion" in e]
    assert progress and progress[-1]["generations"] == 3
    # The counters went down as the rows went, never below zero.
    counts = [e["image_count"] for e in events if "image_count" in e]
    assert counts == sorted(counts, reverse=True) and min(counts) >= 0
    polled = (await http.get(response.headers["location"])).json()
    assert polled["status"] == "done" and polled["deleted_at"]
    assert (await http.get(f"/v1/projects/{project_id}")).status_code == 404
    await asyncio.sleep(2)
    for generation in (done, running):
        assert files_of(stack, generation["id"]) == []
