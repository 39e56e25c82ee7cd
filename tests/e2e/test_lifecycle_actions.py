"""Edits, cancel of a running job, outgoing webhooks, canvas nodes and project streams, through
real API and worker processes."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from litestar import Litestar, Request, Response, get, post
from PIL import Image
from psycopg_pool import AsyncConnectionPool
from standardwebhooks import Webhook

from tests.e2e.conftest import OUTGOING_SECRET, Stack
from tests.e2e.test_lifecycle import create_generation, create_project, stream_events, wait_for
from tests.emulators.server import serve
from tests.factories import insert_generation
from tests.sse_client import SSEEvent, read_sse

pytestmark = pytest.mark.e2e
# Slow enough to cancel a generation while the model is "working".
INCOMING_SECRET = "whsec_" + "ZTJlLWluY29taW5nLXNlY3JldA=="
STACK_ENV = {"LOCAL_PROVIDER_DELAY_MS": "1500", "WEBHOOK_SECRET": INCOMING_SECRET}


def mask_data_url() -> str:
    mask = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    mask.paste((255, 255, 255, 255), (50, 0, 100, 100))
    out = io.BytesIO()
    mask.save(out, format="PNG")
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


async def test_an_edit_produces_version_two_from_the_source(http: httpx.AsyncClient) -> None:
    project_id = await create_project(http)
    source = await create_generation(
        http, project_id, "a quiet harbour", prompt_spec={"size": "256x256"}
    )
    done = await wait_for(http, source["id"], "completed")
    response = await http.post(
        f"/v1/generations/{source['id']}/edits",
        json={"prompt": "a red boat", "mask": mask_data_url(), "mode": "add"},
    )
    assert response.status_code == 201, response.text
    edit = response.json()
    events, _ = await stream_events(http, edit["id"], headers={"Last-Event-ID": "0"})
    steps = [e.json()["step"] for e in events]
    assert steps == ["queued", "fetching", "preparing", "processing", "saving", "completed"]
    assert [e.json()["progress"] for e in events] == [0, 10, 25, 50, 80, 100]

    edited = (await http.get(f"/v1/generations/{edit['id']}")).json()
    assert (edited["version"], edited["parent_id"]) == (2, source["id"])
    before = Image.open(io.BytesIO((await http.get(done["result_image_url"])).content)).convert(
        "RGB"
    )
    after = Image.open(io.BytesIO((await http.get(edited["result_image_url"])).content)).convert(
        "RGB"
    )
    assert after.size == before.size == (256, 256), "the 100x100 mask was resized to the source"
    assert before.getpixel((20, 200)) == after.getpixel((20, 200)), "outside the mask: unchanged"
    assert before.tobytes() != after.tobytes(), "inside the mask: repainted"


async def test_cancel_a_running_generation(
    http: httpx.AsyncClient, stack: Stack, pool: AsyncConnectionPool
) -> None:
    project_id = await create_project(http)
    generation = await create_generation(http, project_id, "slow one")
    await wait_for(http, generation["id"], "processing")
    await asyncio.sleep(0.3)
    cancelled = await http.post(f"/v1/generations/{generation['id']}/cancel")
    assert cancelled.status_code == 200
    await asyncio.sleep(2.5)  # longer than the provider takes: a late finisher would have written
    final = (await http.get(f"/v1/generations/{generation['id']}")).json()
    assert (final["status"], final["result_image_url"]) == ("cancelled", None)
    assert not list(stack.storage.rglob(f"{generation['id']}*")), (
        "nothing uploaded after the cancel"
    )
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT status FROM procrastinate_jobs WHERE id = %s", (generation["job_id"],)
        )
        job = await cur.fetchone()
    assert job is not None and job[0] in ("aborted", "succeeded", "failed")
    project = (await http.get(f"/v1/projects/{project_id}")).json()
    assert (project["image_count"], project["cancelled_count"]) == (0, 1)


class Hooks:
    def __init__(self) -> None:
        self.url = ""
        self.received: list[dict[str, Any]] = []


@pytest.fixture(scope="module")
def hooks() -> Iterator[Hooks]:
    state = Hooks()

    @post("/hook", status_code=204)
    async def hook(request: Request[Any, Any, Any]) -> None:
        body = await request.body()
        state.received.append(Webhook(OUTGOING_SECRET).verify(body, dict(request.headers)))

    with serve(Litestar([hook], openapi_config=None)) as url:
        state.url = f"{url}/hook"
        yield state


async def test_outgoing_webhooks_arrive_signed_and_filtered(
    http: httpx.AsyncClient, hooks: Hooks
) -> None:
    project_id = await create_project(http)
    generation = await create_generation(
        http,
        project_id,
        "notify me",
        webhook_url=hooks.url,
        webhook_events_filter=["start", "completed"],
    )
    await wait_for(http, generation["id"], "completed")
    for _ in range(100):
        mine = [h for h in hooks.received if h["data"]["id"] == generation["id"]]
        if len(mine) == 2:
            break
        await asyncio.sleep(0.05)
    assert [h["type"] for h in mine] == ["generation.started", "generation.completed"]
    assert mine[-1]["data"]["result_image_url"].endswith(".png")


async def test_canvas_nodes_follow_their_generation_and_stream(
    http: httpx.AsyncClient, pool: AsyncConnectionPool, tenant: Any
) -> None:
    workflow_id = str(uuid.uuid4())
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO workflow_nodes (id, workflow_id, workspace_id, node_data) VALUES ('n1', %s, %s, %s)",
            (workflow_id, tenant.workspace_id, json.dumps({"label": "hero image"})),
        )
    nodes: list[dict[str, Any]] = []

    async def watch() -> None:
        async with http.stream("GET", f"/v1/workflows/{workflow_id}/events") as response:
            assert response.status_code == 200
            async for item in read_sse(response):
                if isinstance(item, SSEEvent):
                    assert item.event == "node"
                    nodes.extend(item.json()["nodes"])
                    if any(n["node_data"].get("status") == "completed" for n in nodes):
                        return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.3)
    project_id = await create_project(http)
    generation = await create_generation(
        http, project_id, "for the canvas", node_id="n1", workflow_id=workflow_id
    )
    await asyncio.wait_for(watcher, 30)
    final = nodes[-1]["node_data"]
    assert final["label"] == "hero image", "other keys of node_data are left alone"
    assert final["status"] == "completed"
    assert final["imageUrl"].endswith(".png")
    assert final["generationId"] == generation["id"]
    statuses = [n["node_data"].get("status") for n in nodes]
    assert statuses[0] is None and "completed" in statuses

    foreign = await http.get(f"/v1/workflows/{uuid.uuid4()}/events")
    assert foreign.status_code == 404


async def test_the_project_stream_shows_counters_changing_live(http: httpx.AsyncClient) -> None:
    project_id = await create_project(http)
    projects: list[dict[str, Any]] = []
    generations: list[dict[str, Any]] = []

    async def watch() -> None:
        async with http.stream("GET", f"/v1/projects/{project_id}/events") as response:
            async for item in read_sse(response):
                if not isinstance(item, SSEEvent):
                    continue
                (projects if item.event == "project" else generations).append(item.json())
                # The last transaction brings both a project and a generation event, in
                # either order: wait for both.
                done = sum(g["status"] == "completed" for g in generations)
                if projects and projects[-1]["completed_count"] == 2 and done == 2:
                    return

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.3)
    for i in range(2):
        await create_generation(
            http, project_id, f"project stream {i}", prompt_spec={"size": "64x64"}
        )
    await asyncio.wait_for(watcher, 30)
    assert projects[0]["image_count"] == 0
    assert [p["status"] for p in projects][-1] == "completed"
    assert any(p["status"] == "processing" for p in projects)
    assert {g["status"] for g in generations} >= {"pending", "processing", "completed"}


class Flaky:
    """Serves a PNG, but answers 404 until `ready` is set (a source that appears later)."""

    def __init__(self) -> None:
        self.url = ""
        self.ready = False


@pytest.fixture(scope="module")
def flaky() -> Iterator[Flaky]:
    state = Flaky()
    png = io.BytesIO()
    Image.new("RGB", (64, 64), (0, 200, 0)).save(png, format="PNG")

    @get("/image.png")
    async def image() -> Response[bytes]:
        if not state.ready:
            return Response(b"not yet", status_code=404)
        return Response(png.getvalue(), media_type="image/png")

    with serve(Litestar([image], openapi_config=None)) as url:
        state.url = f"{url}/image.png"
        yield state


async def test_cancel_a_running_generation_with_sql(
    http: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    project_id = await create_project(http)
    generation = await create_generation(http, project_id, "cancelled from psql")
    await wait_for(http, generation["id"], "processing")
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE image_generations SET status = 'cancelled' WHERE id = %s", (generation["id"],)
        )
    await asyncio.sleep(2.5)
    final = (await http.get(f"/v1/generations/{generation['id']}")).json()
    assert (final["status"], final["result_image_url"]) == ("cancelled", None)


async def test_retry_of_a_failed_generation_completes(
    http: httpx.AsyncClient, flaky: Flaky
) -> None:
    project_id = await create_project(http)
    generation = await create_generation(
        http, project_id, "from a source", original_image_url=flaky.url
    )
    failed = await wait_for(http, generation["id"], "failed")
    assert failed["error_code"] == "source_unreachable"
    flaky.ready = True
    retried = await http.post(f"/v1/generations/{generation['id']}/retry")
    assert retried.status_code == 200
    done = await wait_for(http, generation["id"], "completed")
    assert done["attempts"] == 1  # a retry starts a fresh attempt budget


async def test_a_cancelled_generation_runs_again_on_retry(http: httpx.AsyncClient) -> None:
    project_id = await create_project(http)
    generation = await create_generation(http, project_id, "cancelled, then wanted after all")
    await wait_for(http, generation["id"], "processing")
    assert (await http.post(f"/v1/generations/{generation['id']}/cancel")).status_code == 200
    retried = await http.post(f"/v1/generations/{generation['id']}/retry")
    assert retried.status_code == 200, retried.text
    assert (retried.json()["status"], retried.json()["attempts"]) == ("pending", 0)
    done = await wait_for(http, generation["id"], "completed")
    assert done["result_image_url"] and done["attempts"] == 1
    project = (await http.get(f"/v1/projects/{project_id}")).json()
    assert (project["completed_count"], project["cancelled_count"]) == (1, 0)


async def test_a_provider_callback_finishes_the_generation(
    http: httpx.AsyncClient, pool: AsyncConnectionPool, flaky: Flaky
) -> None:
    flaky.ready = True
    project_id = await create_project(http)
    generation_id = await insert_generation(
        pool, uuid.UUID(project_id), prompt="x", provider="fal", job_id=-1
    )
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE image_generations SET status = 'processing', provider_job_id = 'job-from-callback' WHERE id = %s",
            (generation_id,),
        )
    body = json.dumps(
        {
            "type": "image.generation.status",
            "data": {
                "job_id": "job-from-callback",
                "status": "completed",
                "images": [{"url": flaky.url}],
            },
        }
    )
    now = datetime.now(UTC)
    headers = {
        "webhook-id": f"msg_{uuid.uuid4().hex}",
        "webhook-timestamp": str(int(now.timestamp())),
        "content-type": "application/json",
    }
    headers["webhook-signature"] = Webhook(INCOMING_SECRET).sign(headers["webhook-id"], now, body)
    response = await http.post("/v1/webhooks/generic", content=body, headers=headers)
    assert response.status_code == 202
    done = await wait_for(http, str(generation_id), "completed")
    assert done["result_image_url"].endswith(".png")
    assert (done["metadata"]["width"], done["metadata"]["height"]) == (64, 64)
