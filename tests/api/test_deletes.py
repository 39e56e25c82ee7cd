"""DELETE /v1/generations/{id} (`?cascade=versions`), DELETE /v1/projects/{id} and
GET /v1/deletions/{id}, through the API (no worker: the project job is run by hand)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from tests.conftest import Tenant
from tests.emulators.recorder import Scripted
from tests.emulators.supabase_storage import StorageState
from tests.providers.supabase_fixtures import supabase_storage  # noqa: F401
from tests.sql.helpers import assert_project_consistent, update_generation
from worker.storage import deletes
from worker.storage.supabase import SupabaseStorage

Client = AsyncTestClient[Litestar]


async def new_project(client: Client, tenant: Tenant) -> str:
    response = await client.post("/v1/projects", json={"name": "deletes"}, headers=tenant.headers)
    return str(response.json()["id"])


async def new_generation(client: Client, tenant: Tenant, project_id: str) -> dict[str, Any]:
    response = await client.post(
        "/v1/generations",
        json={"project_id": project_id, "prompt": "to be deleted"},
        headers=tenant.headers,
    )
    assert response.status_code == 201
    return dict(response.json())


async def audit_rows(pool: AsyncConnectionPool, target_id: str) -> list[dict[str, Any]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT to_jsonb(d) FROM imagejobs_deletions d WHERE target_id = %s ORDER BY id",
            (target_id,),
        )
        return [row[0] for row in await cur.fetchall()]


async def test_delete_answers_204_then_404_and_records_who(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    project_id = await new_project(client, tenant)
    generation = await new_generation(client, tenant, project_id)
    path = f"/v1/generations/{generation['id']}"

    first = await client.delete(path, headers=tenant.headers)
    assert first.status_code == 204, first.text
    assert (await client.get(path, headers=tenant.headers)).status_code == 404
    again = await client.delete(path, headers=tenant.headers)
    assert again.status_code == 404
    assert again.headers["content-type"].startswith("application/problem+json")

    [audit] = await audit_rows(pool, generation["id"])
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id FROM api_keys WHERE workspace_id = %s", (tenant.workspace_id,)
        )
        row = await cur.fetchone()
    assert row is not None
    assert audit["deleted_by"] == f"api_key:{row[0]}"
    assert audit["workspace_id"] == str(tenant.workspace_id)
    project = (await client.get(f"/v1/projects/{project_id}", headers=tenant.headers)).json()
    assert project["image_count"] == 0 and project["cancelled_count"] == 0


async def test_another_workspace_cannot_delete(
    client: Client, tenant: Tenant, other_tenant: Tenant
) -> None:
    project_id = await new_project(client, tenant)
    generation = await new_generation(client, tenant, project_id)
    path = f"/v1/generations/{generation['id']}"
    assert (await client.delete(path, headers=other_tenant.headers)).status_code == 404
    assert (await client.get(path, headers=tenant.headers)).status_code == 200
    project_path = f"/v1/projects/{project_id}"
    assert (await client.delete(project_path, headers=other_tenant.headers)).status_code == 404
    assert (await client.get(project_path, headers=tenant.headers)).status_code == 200


async def test_cascade_versions_deletes_the_history_and_without_it_the_next_version_is_root(
    client: Client, tenant: Tenant
) -> None:
    project_id = await new_project(client, tenant)
    root = await new_generation(client, tenant, project_id)
    versions = [root]
    for _ in range(2):
        response = await client.post(
            f"/v1/generations/{root['id']}/regenerate", headers=tenant.headers
        )
        versions.append(response.json())

    response = await client.delete(f"/v1/generations/{root['id']}", headers=tenant.headers)
    assert response.status_code == 204
    listed = await client.get(
        f"/v1/generations/{versions[2]['id']}/versions", headers=tenant.headers
    )
    assert [(g["id"], g["parent_id"], g["version"]) for g in listed.json()["data"]] == [
        (versions[1]["id"], None, 2),
        (versions[2]["id"], versions[1]["id"], 3),
    ]

    response = await client.delete(
        f"/v1/generations/{versions[2]['id']}?cascade=versions", headers=tenant.headers
    )
    assert response.status_code == 204
    for generation in versions:
        got = await client.get(f"/v1/generations/{generation['id']}", headers=tenant.headers)
        assert got.status_code == 404


async def test_an_unknown_cascade_is_refused(client: Client, tenant: Tenant) -> None:
    project_id = await new_project(client, tenant)
    generation = await new_generation(client, tenant, project_id)
    response = await client.delete(
        f"/v1/generations/{generation['id']}?cascade=everything", headers=tenant.headers
    )
    assert response.status_code in (400, 422)
    assert (
        await client.get(f"/v1/generations/{generation['id']}", headers=tenant.headers)
    ).status_code == 200


@pytest.fixture
async def supabase(
    client: Client,
    supabase_storage: StorageState,  # noqa: F811
) -> AsyncIterator[SupabaseStorage]:
    """The app's storage replaced by Supabase Storage (the emulator); the test's own client of
    it is another instance (the app runs on its own event loop)."""
    supabase_storage.add_bucket("images")
    original = client.app.state.storage
    client.app.state.storage = SupabaseStorage(
        supabase_storage.url, supabase_storage.key, attempts=1
    )
    storage = SupabaseStorage(supabase_storage.url, supabase_storage.key, attempts=1)
    yield storage
    client.app.state.storage = original
    await storage.aclose()


async def test_storage_failing_answers_503_keeps_the_generation_and_a_repeat_finishes(
    client: Client,
    tenant: Tenant,
    pool: AsyncConnectionPool,
    supabase: SupabaseStorage,
    supabase_storage: StorageState,  # noqa: F811
) -> None:
    project_id = await new_project(client, tenant)
    generation = await new_generation(client, tenant, project_id)
    key = f"{tenant.workspace_id}/{project_id}/{generation['id']}.png"
    url = await supabase.put(key, b"png", "image/png")
    async with pool.connection() as conn:
        await update_generation(conn, uuid.UUID(generation["id"]), status="processing")
        await update_generation(
            conn,
            uuid.UUID(generation["id"]),
            status="completed",
            result_image_url=url,
            result_key=key,
        )
    path = f"/v1/generations/{generation['id']}"
    supabase_storage.recorder.script(
        Scripted(500, {"statusCode": "500", "error": "Internal", "message": "storage down"})
    )

    refused = await client.delete(path, headers=tenant.headers)

    assert refused.status_code == 503, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert refused.headers["retry-after"] == str(5)
    assert (await client.get(path, headers=tenant.headers)).json()["status"] == "completed"
    assert f"images/{key}" in supabase_storage.objects
    assert await audit_rows(pool, generation["id"]) == []

    assert (await client.delete(path, headers=tenant.headers)).status_code == 204
    assert f"images/{key}" not in supabase_storage.objects
    assert (await client.get(path, headers=tenant.headers)).status_code == 404
    assert len(await audit_rows(pool, generation["id"])) == 1


async def test_concurrent_deletes_of_one_generation_answer_204_or_404_never_500(
    client: Client, tenant: Tenant
) -> None:
    project_id = await new_project(client, tenant)
    generation = await new_generation(client, tenant, project_id)
    answers = await asyncio.gather(
        *(
            client.delete(f"/v1/generations/{generation['id']}", headers=tenant.headers)
            for _ in range(5)
        )
    )
    codes = sorted(a.status_code for a in answers)
    assert set(codes) <= {204, 404} and 204 in codes


async def test_a_project_delete_runs_in_the_background_and_hides_the_project(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    project_id = await new_project(client, tenant)
    for _ in range(3):
        await new_generation(client, tenant, project_id)
    path = f"/v1/projects/{project_id}"

    started = await client.delete(path, headers=tenant.headers)

    assert started.status_code == 202, started.text
    deletion = started.json()
    assert deletion["status"] == "running" and deletion["kind"] == "project"
    assert started.headers["location"] == f"/v1/deletions/{deletion['id']}"
    assert deletion["deleted_by"].startswith("api_key:")
    # Hidden at once, and it takes no new generation.
    assert (await client.get(path, headers=tenant.headers)).status_code == 404
    listed = (await client.get("/v1/projects", headers=tenant.headers)).json()["data"]
    assert project_id not in [p["id"] for p in listed]
    refused = await client.post(
        "/v1/generations", json={"project_id": project_id, "prompt": "late"}, headers=tenant.headers
    )
    assert refused.status_code == 422
    # A repeat answers the running delete.
    again = await client.delete(path, headers=tenant.headers)
    assert again.status_code == 202 and again.json()["id"] == deletion["id"]

    # What the worker's delete_project job does.
    assert await deletes.delete_project(pool, client.app.state.storage, deletion["id"], batch=2)

    polled = await client.get(started.headers["location"], headers=tenant.headers)
    assert polled.status_code == 200
    assert polled.json()["status"] == "done" and polled.json()["detail"]["generations"] == 3
    assert (await client.delete(path, headers=tenant.headers)).status_code == 404
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM image_generations WHERE project_id = %s", (project_id,)
        )
        row = await cur.fetchone()
    assert row is not None and row[0] == 0


async def test_deletions_are_the_workspaces_own(
    client: Client, tenant: Tenant, other_tenant: Tenant
) -> None:
    project_id = await new_project(client, tenant)
    started = await client.delete(f"/v1/projects/{project_id}", headers=tenant.headers)
    location = started.headers["location"]
    assert (await client.get(location, headers=other_tenant.headers)).status_code == 404
    assert (await client.get(location, headers=tenant.headers)).status_code == 200
    assert (await client.get("/v1/deletions/0", headers=tenant.headers)).status_code == 404


async def test_counters_of_a_project_stay_right_while_generations_are_deleted(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    project_id = await new_project(client, tenant)
    generations = [await new_generation(client, tenant, project_id) for _ in range(4)]
    await client.post(f"/v1/generations/{generations[0]['id']}/cancel", headers=tenant.headers)
    for generation in generations[:3]:
        response = await client.delete(
            f"/v1/generations/{generation['id']}", headers=tenant.headers
        )
        assert response.status_code == 204
        async with pool.connection() as conn:
            await assert_project_consistent(conn, uuid.UUID(project_id))
    project = (await client.get(f"/v1/projects/{project_id}", headers=tenant.headers)).json()
    assert (project["image_count"], project["pending_count"], project["status"]) == (
        1,
        1,
        "pending",
    )
