"""Cancel, retry, edits and versions through the API (no worker running)."""

from __future__ import annotations

import base64
import io
import uuid
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from PIL import Image
from psycopg_pool import AsyncConnectionPool

from tests.conftest import Tenant
from tests.factories import create_project, insert_generation

Client = AsyncTestClient[Litestar]


def png_data_url(size: tuple[int, int] = (32, 32), fmt: str = "PNG") -> str:
    out = io.BytesIO()
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    image.paste((255, 255, 255, 255), (8, 8, 24, 24))
    image.convert("RGB" if fmt == "JPEG" else "RGBA").save(out, format=fmt)
    return "data:image/png;base64," + base64.b64encode(out.getvalue()).decode()


async def new_generation(client: Client, tenant: Tenant, **extra: Any) -> dict[str, Any]:
    project = (await client.post("/v1/projects", json={"name": "p"}, headers=tenant.headers)).json()
    response = await client.post(
        "/v1/generations",
        json={"project_id": project["id"], "prompt": "x", **extra},
        headers=tenant.headers,
    )
    assert response.status_code == 201
    body: dict[str, Any] = response.json()
    return body


async def job_status(pool: AsyncConnectionPool, job_id: int) -> str:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT status FROM procrastinate_jobs WHERE id = %s", (job_id,))
        row = await cur.fetchone()
    assert row is not None
    return str(row[0])


async def completed_generation(pool: AsyncConnectionPool, tenant: Tenant) -> str:
    """A finished generation, as a worker would have left it."""
    project_id = await create_project(pool, tenant.workspace_id, "edits")
    generation_id = await insert_generation(
        pool, project_id, status="completed", result_image_url="https://cdn.example.com/a.png"
    )
    return str(generation_id)


async def test_cancel_a_pending_generation(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    generation = await new_generation(client, tenant)
    response = await client.post(
        f"/v1/generations/{generation['id']}/cancel", headers=tenant.headers
    )
    assert response.status_code == 200
    body = response.json()
    assert (body["status"], body["error_code"], body["step"]) == (
        "cancelled",
        "cancelled",
        "cancelled",
    )
    assert await job_status(pool, generation["job_id"]) == "cancelled"
    project = (
        await client.get(f"/v1/projects/{generation['project_id']}", headers=tenant.headers)
    ).json()
    assert (project["image_count"], project["cancelled_count"], project["status"]) == (
        0,
        1,
        "pending",
    )

    again = await client.post(f"/v1/generations/{generation['id']}/cancel", headers=tenant.headers)
    assert again.status_code == 409
    assert again.headers["content-type"].startswith("application/problem+json")


async def test_cancel_a_running_generation_requests_an_abort(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    generation = await new_generation(client, tenant)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (generation["job_id"],)
        )
        await conn.execute(
            "UPDATE image_generations SET status = 'processing' WHERE id = %s", (generation["id"],)
        )
    response = await client.post(
        f"/v1/generations/{generation['id']}/cancel", headers=tenant.headers
    )
    assert response.json()["status"] == "cancelled"
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT abort_requested FROM procrastinate_jobs WHERE id = %s", (generation["job_id"],)
        )
        row = await cur.fetchone()
    assert row is not None and row[0] is True


async def test_retry_a_failed_generation(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    generation = await new_generation(client, tenant)
    not_failed = await client.post(
        f"/v1/generations/{generation['id']}/retry", headers=tenant.headers
    )
    assert not_failed.status_code == 409
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE image_generations SET status = 'failed', error_code = 'provider_error', attempts = 3 WHERE id = %s",
            (generation["id"],),
        )
    response = await client.post(
        f"/v1/generations/{generation['id']}/retry", headers=tenant.headers
    )
    assert response.status_code == 200
    body = response.json()
    # A fresh attempt budget: before issue 15 attempts stayed at 3 and the retry gave up at once.
    assert (body["status"], body["step"], body["error_code"], body["attempts"]) == (
        "pending",
        "queued",
        None,
        0,
    )
    assert body["job_id"] != generation["job_id"]
    assert await job_status(pool, body["job_id"]) == "todo"


@pytest.mark.parametrize("action", ["cancel", "retry", "regenerate", "edits", "versions"])
async def test_actions_on_unknown_or_foreign_generations_are_404(
    client: Client, tenant: Tenant, other_tenant: Tenant, action: str
) -> None:
    generation = await new_generation(client, tenant)
    for generation_id in (str(uuid.uuid4()), generation["id"]):
        path = f"/v1/generations/{generation_id}/{action}"
        if action == "versions":
            response = await client.get(path, headers=other_tenant.headers)
        else:
            body = {"prompt": "x", "mask": png_data_url()} if action == "edits" else None
            response = await client.post(path, json=body, headers=other_tenant.headers)
        assert response.status_code == 404, (action, response.text)


@pytest.mark.parametrize(
    ("mask", "code"),
    [
        (None, "mask_missing"),
        ("", "mask_missing"),
        ("https://example.com/mask.png", "mask_invalid"),
        ("data:image/jpeg;base64,AAAA", "mask_invalid"),
        ("data:image/png;base64,!!!not-base64!!!", "mask_invalid"),
        ("data:image/png;base64," + base64.b64encode(b"not an image").decode(), "mask_invalid"),
        (png_data_url(fmt="JPEG"), "mask_invalid"),
    ],
)
async def test_bad_masks_are_422_with_the_catalogue_code(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool, mask: str | None, code: str
) -> None:
    generation_id = await completed_generation(pool, tenant)
    body: dict[str, Any] = {"prompt": "a boat", "mode": "add"}
    if mask is not None:
        body["mask"] = mask
    response = await client.post(
        f"/v1/generations/{generation_id}/edits", json=body, headers=tenant.headers
    )
    assert response.status_code == 422, response.text
    problem = response.json()
    assert problem["code"] == code
    assert problem["errors"][0]["field"] == "mask"


async def test_only_completed_generations_can_be_edited(client: Client, tenant: Tenant) -> None:
    generation = await new_generation(client, tenant)
    response = await client.post(
        f"/v1/generations/{generation['id']}/edits",
        json={"prompt": "x", "mask": png_data_url()},
        headers=tenant.headers,
    )
    assert response.status_code == 409


async def test_edits_make_versions_of_one_history(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    root = await completed_generation(pool, tenant)
    first = await client.post(
        f"/v1/generations/{root}/edits",
        json={"prompt": "the boat", "mask": png_data_url(), "mode": "remove"},
        headers=tenant.headers,
    )
    assert first.status_code == 201, first.text
    v2 = first.json()
    assert (v2["version"], v2["parent_id"], v2["status"]) == (2, root, "pending")
    assert v2["original_image_url"] == "https://cdn.example.com/a.png"
    assert v2["metadata"]["editedFrom"] == root
    assert v2["metadata"]["editMode"] == "remove"
    assert v2["metadata"]["editedAt"].endswith("Z")
    assert v2["metadata"]["model"] == "local:pillow-v1"
    assert (v2["edit_mode"], v2["edited_from"]) == ("remove", root)
    assert v2["mask_url"].startswith("http://")
    assert "maskUrl" not in v2["metadata"]
    assert "data:" not in str(v2)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT task_name FROM procrastinate_jobs WHERE id = %s", (v2["job_id"],)
        )
        task = await cur.fetchone()
    assert task is not None and task[0] == "edit_image"

    # Version 2 finishes; editing it makes version 3 of the same root.
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE image_generations SET status = 'processing' WHERE id = %s; ", (v2["id"],)
        )
        await conn.execute(
            "UPDATE image_generations SET status = 'completed', result_image_url = 'https://cdn.example.com/b.png' WHERE id = %s",
            (v2["id"],),
        )
    third = await client.post(
        f"/v1/generations/{v2['id']}/edits",
        json={"prompt": "a gull", "mask": png_data_url()},
        headers=tenant.headers,
    )
    v3 = third.json()
    assert (v3["version"], v3["parent_id"], v3["original_image_url"]) == (
        3,
        root,
        "https://cdn.example.com/b.png",
    )
    assert v3["metadata"]["editedFrom"] == v2["id"]

    versions = (
        await client.get(f"/v1/generations/{v3['id']}/versions", headers=tenant.headers)
    ).json()
    assert [(g["id"], g["version"]) for g in versions["data"]] == [
        (root, 1),
        (v2["id"], 2),
        (v3["id"], 3),
    ]
