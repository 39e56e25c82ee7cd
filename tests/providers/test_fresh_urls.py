"""URLs that keep working (issue 17 part 3): with a private bucket, every reader gets URLs signed
from the storage keys at read time, not the ones signed when the files were stored.

The generation runs through the real pipeline into the Storage emulator; then every token the
emulator issued is revoked, so a stored URL is dead and only a freshly signed one serves."""

from __future__ import annotations

import io
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from litestar import Litestar, Request, post
from litestar.testing import AsyncTestClient
from PIL import Image
from psycopg_pool import AsyncConnectionPool

from api.app import create_app
from api.streams.project import _nodes
from tests.api.test_actions import png_data_url
from tests.conftest import Tenant
from tests.emulators.server import serve
from tests.emulators.supabase_storage import StorageState
from tests.factories import create_project, insert_generation
from tests.worker.conftest import generation_row
from worker.core.config import load_settings
from worker.providers.local import LocalProvider
from worker.queue.outgoing import deliver
from worker.queue.pipeline import run_edit, run_generation
from worker.queue.runtime import Runtime
from worker.storage.supabase import SupabaseStorage

BUCKET = "private-images"


@dataclass
class Receiver:
    url: str = ""
    bodies: list[bytes] = field(default_factory=list)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    @post("/hook", status_code=200)
    async def hook(request: Request[Any, Any, Any]) -> str:
        state.bodies.append(await request.body())
        return "ok"

    with serve(Litestar([hook], openapi_config=None)) as url:
        state.url = f"{url}/hook"
        yield state


@pytest.fixture
async def storage(supabase_storage: StorageState) -> AsyncIterator[SupabaseStorage]:
    private = SupabaseStorage(
        supabase_storage.url,
        supabase_storage.key,
        BUCKET,
        signed_urls=True,
        signed_url_ttl_s=3600,
        backoff_s=0.01,
    )
    await private.ensure_bucket()
    yield private
    await private.aclose()


@dataclass
class Completed:
    generation_id: uuid.UUID
    workflow_id: uuid.UUID
    stored: dict[str, Any]


@pytest.fixture
async def completed(
    pool: AsyncConnectionPool,
    tenant: Tenant,
    storage: SupabaseStorage,
    supabase_storage: StorageState,
    receiver: Receiver,
) -> Completed:
    """A generation on a canvas node, completed into the private bucket, whose stored URLs have
    since died (every token revoked, the storage's own cache emptied)."""
    project_id = await create_project(pool, tenant.workspace_id)
    workflow_id = uuid.uuid4()
    generation_id = await insert_generation(
        pool,
        project_id,
        prompt_spec='{"size": "512x512", "seed": 7}',
        workflow_id=workflow_id,
        node_id="n1",
        webhook_url=receiver.url,
    )
    settings = load_settings({"LOCAL_PROVIDER_DELAY_MS": "0"})
    runtime = Runtime(settings, pool, {"local": LocalProvider(delay_ms=0)}, storage)
    await run_generation(runtime, generation_id, attempt=1)
    stored = await generation_row(pool, generation_id)
    assert stored["status"] == "completed"
    supabase_storage.tokens.clear()
    storage._signed.clear()
    return Completed(generation_id, workflow_id, stored)


@asynccontextmanager
async def api(
    database_url: str, supabase_storage: StorageState, bucket: str, *, signed: bool
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    settings = load_settings(
        {
            "DATABASE_URL": database_url,
            "STORAGE_BACKEND": "supabase",
            "SUPABASE_URL": supabase_storage.url,
            "SUPABASE_SERVICE_ROLE_KEY": supabase_storage.key,
            "SUPABASE_BUCKET": bucket,
            "SUPABASE_SIGNED_URLS": "true" if signed else "false",
            "SUPABASE_SIGNED_URL_TTL_S": "3600",
        }
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


async def serves_image(url: str) -> bool:
    async with httpx.AsyncClient() as client:
        response = await client.get(url)
    if response.status_code != 200:
        return False
    with Image.open(io.BytesIO(response.content)) as image:
        image.verify()
    return True


async def test_the_stored_urls_are_dead_once_their_tokens_are(completed: Completed) -> None:
    """The premise of the tests below: a stored signed URL stops serving."""
    assert completed.stored["result_key"]
    assert not await serves_image(completed.stored["result_image_url"])
    assert not await serves_image(completed.stored["thumbnail_url"])


async def test_the_api_answers_with_freshly_signed_urls(
    completed: Completed, tenant: Tenant, database_url: str, supabase_storage: StorageState
) -> None:
    async with api(database_url, supabase_storage, BUCKET, signed=True) as client:
        one = await client.get(f"/v1/generations/{completed.generation_id}", headers=tenant.headers)
        listed = await client.get("/v1/generations", headers=tenant.headers)
    assert one.status_code == 200, one.text
    generation = one.json()
    assert generation["result_key"] == completed.stored["result_key"]
    assert generation["result_image_url"] != completed.stored["result_image_url"]
    assert await serves_image(generation["result_image_url"])
    assert await serves_image(generation["thumbnail_url"])
    [in_list] = [g for g in listed.json()["data"] if g["id"] == str(completed.generation_id)]
    assert await serves_image(in_list["result_image_url"])


async def test_the_workflow_streams_nodes_carry_freshly_signed_urls(
    completed: Completed, pool: AsyncConnectionPool, tenant: Tenant, storage: SupabaseStorage
) -> None:
    [node] = await _nodes(pool, storage, completed.workflow_id, tenant.workspace_id, None)
    assert node.node_data["imageKey"] == completed.stored["result_key"]
    assert node.node_data["imageUrl"] != completed.stored["result_image_url"]
    assert await serves_image(node.node_data["imageUrl"])
    assert await serves_image(node.node_data["thumbnailUrl"])


async def test_a_webhook_sent_later_carries_freshly_signed_urls(
    completed: Completed, pool: AsyncConnectionPool, storage: SupabaseStorage, receiver: Receiver
) -> None:
    receiver.bodies.clear()
    await deliver(
        pool, None, completed.generation_id, 1, "generation.completed", 2, storage=storage
    )
    [body] = receiver.bodies
    data = httpx.Response(200, content=body).json()["data"]
    assert data["result_image_url"] != completed.stored["result_image_url"]
    assert await serves_image(data["result_image_url"])


async def test_an_edit_run_after_its_urls_died_fetches_source_and_mask_by_fresh_urls(
    completed: Completed,
    pool: AsyncConnectionPool,
    tenant: Tenant,
    storage: SupabaseStorage,
    supabase_storage: StorageState,
    database_url: str,
) -> None:
    async with api(database_url, supabase_storage, BUCKET, signed=True) as client:
        created = await client.post(
            f"/v1/generations/{completed.generation_id}/edits",
            json={"prompt": "a red door", "mask": png_data_url((512, 512))},
            headers=tenant.headers,
        )
    assert created.status_code == 201, created.text
    edit_id = uuid.UUID(created.json()["id"])
    edit = await generation_row(pool, edit_id)
    assert edit["original_key"] == completed.stored["result_key"]
    assert edit["mask_key"] and str(edit["mask_key"]).endswith(".png")
    supabase_storage.tokens.clear()  # the source's and the mask's stored URLs die
    storage._signed.clear()

    runtime = Runtime(load_settings({}), pool, {"local": LocalProvider(delay_ms=0)}, storage)
    await run_edit(runtime, edit_id, attempt=1)

    row = await generation_row(pool, edit_id)
    assert row["status"] == "completed", row["error_message"]


async def test_a_public_bucket_hands_out_its_stored_urls(
    pool: AsyncConnectionPool, tenant: Tenant, supabase_storage: StorageState, database_url: str
) -> None:
    public = SupabaseStorage(supabase_storage.url, supabase_storage.key, "images", backoff_s=0.01)
    await public.ensure_bucket()
    project_id = await create_project(pool, tenant.workspace_id)
    generation_id = await insert_generation(pool, project_id, prompt_spec='{"seed": 1}')
    runtime = Runtime(load_settings({}), pool, {"local": LocalProvider(delay_ms=0)}, public)
    await run_generation(runtime, generation_id, attempt=1)
    await public.aclose()
    stored = await generation_row(pool, generation_id)
    supabase_storage.recorder.reset()

    async with api(database_url, supabase_storage, "images", signed=False) as client:
        answer = (
            await client.get(f"/v1/generations/{generation_id}", headers=tenant.headers)
        ).json()

    assert answer["result_image_url"] == stored["result_image_url"]
    assert await serves_image(answer["result_image_url"])
    assert not [r for r in supabase_storage.recorder.requests if r.method == "POST"]
