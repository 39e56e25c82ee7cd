"""`n` variations and POST /v1/generations/batch: one transaction, distinct seeds, one batch."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from tests.conftest import Tenant

Client = AsyncTestClient[Litestar]


async def project(client: Client, tenant: Tenant) -> str:
    response = await client.post("/v1/projects", json={"name": "batch"}, headers=tenant.headers)
    return str(response.json()["id"])


async def count(pool: AsyncConnectionPool, project_id: str) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM image_generations WHERE project_id = %s", (project_id,)
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_n_variations_share_a_batch_and_have_distinct_seeds(
    client: Client, tenant: Tenant
) -> None:
    project_id = await project(client, tenant)
    response = await client.post(
        "/v1/generations",
        json={"project_id": project_id, "prompt": "four foxes", "n": 4},
        headers=tenant.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    generations = body["data"]
    assert len(generations) == 4
    assert {g["batch_id"] for g in generations} == {body["batch_id"]}
    assert [g["batch_index"] for g in generations] == [0, 1, 2, 3]
    seeds = [g["prompt_spec"]["seed"] for g in generations]
    assert len(set(seeds)) == 4 and all(0 <= s < 2**32 for s in seeds)
    assert all(g["status"] == "pending" and g["job_id"] for g in generations)
    assert all(g["priority"] == 0 for g in generations)

    seeded = await client.post(
        "/v1/generations",
        json={
            "project_id": project_id,
            "prompt_spec": {"base_prompt": "x", "seed": 2**32 - 1},
            "n": 3,
        },
        headers=tenant.headers,
    )
    assert [g["prompt_spec"]["seed"] for g in seeded.json()["data"]] == [2**32 - 1, 0, 1]


async def test_n_is_bounded(client: Client, tenant: Tenant) -> None:
    project_id = await project(client, tenant)
    for n in (0, 11, -1):
        response = await client.post(
            "/v1/generations",
            json={"project_id": project_id, "prompt": "x", "n": n},
            headers=tenant.headers,
        )
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "n"


async def test_a_batch_is_created_in_order_at_batch_priority(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    project_id = await project(client, tenant)
    items: list[dict[str, Any]] = [
        {"project_id": project_id, "prompt": f"item {i}"} for i in range(250)
    ]
    items[7]["priority"] = "interactive"
    response = await client.post(
        "/v1/generations/batch", json={"items": items}, headers=tenant.headers
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert [g["prompt"] for g in body["data"]] == [f"item {i}" for i in range(250)]
    assert {g["batch_id"] for g in body["data"]} == {body["batch_id"]}
    assert [g["priority"] for g in body["data"][6:9]] == [-1, 0, -1]
    assert await count(pool, project_id) == 250


async def test_a_bad_item_creates_nothing_and_is_named(
    client: Client, tenant: Tenant, other_tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    project_id = await project(client, tenant)
    foreign = await project(client, other_tenant)
    good = {"project_id": project_id, "prompt": "fine"}
    cases = [
        ([good, {"project_id": project_id}], "items[1].prompt"),
        ([good, good, {**good, "provider": "midjourney"}], "items[2].provider"),
        ([good, {**good, "webhook_url": "http://169.254.169.254/x"}], "items[1].webhook_url"),
        ([good, {**good, "project_id": foreign}], "items[1].project_id"),
        ([good, {**good, "project_id": str(uuid.uuid4())}], "items[1].project_id"),
        ([good, {**good, "n": 2}], "items[1].n"),
        ([{**good, "prompt": "x" * 5000}], "items[0].prompt"),
        ([], "items"),
        ([good] * 1001, "items"),
    ]
    for items, field in cases:
        response = await client.post(
            "/v1/generations/batch", json={"items": items}, headers=tenant.headers
        )
        assert response.status_code == 422, (field, response.text)
        fields = [e["field"] for e in response.json()["errors"]]
        assert fields[0] == field, (field, response.text)
    assert await count(pool, project_id) == 0


async def test_a_repeated_batch_answers_with_the_first(client: Client, tenant: Tenant) -> None:
    project_id = await project(client, tenant)
    headers = {**tenant.headers, "Idempotency-Key": f"batch-{uuid.uuid4()}"}
    items = [{"project_id": project_id, "prompt": f"once {i}"} for i in range(5)]
    first, second = await asyncio.gather(
        client.post("/v1/generations/batch", json={"items": items}, headers=headers),
        client.post("/v1/generations/batch", json={"items": items}, headers=headers),
    )
    statuses = sorted([first.status_code, second.status_code])
    assert statuses == [200, 201], (first.text, second.text)
    assert [g["id"] for g in first.json()["data"]] == [g["id"] for g in second.json()["data"]]
    again = await client.post(
        "/v1/generations", json={"project_id": project_id, "prompt": "v", "n": 2}, headers=headers
    )
    assert again.status_code == 200
    assert again.json()["batch_id"] == first.json()["batch_id"]


async def test_the_openapi_documents_the_repeat_answers(client: Client) -> None:
    """A repeat's 200 is a documented answer of both creations (schemathesis found it missing
    on the batch route: an undocumented status code)."""
    paths = (await client.get("/schema/openapi.json")).json()["paths"]
    batch = paths["/v1/generations/batch"]["post"]["responses"]["200"]
    single = paths["/v1/generations"]["post"]["responses"]["200"]
    assert batch["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/CreatedGenerations"
    }
    assert {s["$ref"] for s in single["content"]["application/json"]["schema"]["oneOf"]} == {
        "#/components/schemas/Generation",
        "#/components/schemas/CreatedGenerations",
    }
