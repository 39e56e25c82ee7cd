"""Quotas through the API (sql/018): an over-quota creation, regeneration or edit is a 429
problem naming the limit, its window, the use and the reset; a retry is not a new generation;
GET /v1/usage reports the window."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from litestar import Litestar
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from tests.api.test_actions import completed_generation, png_data_url
from tests.conftest import Tenant
from tests.sql.helpers import walk_to
from worker.core.quotas import set_limits

Client = AsyncTestClient[Litestar]


async def new_project(client: Client, tenant: Tenant) -> str:
    response = await client.post("/v1/projects", json={"name": "quota"}, headers=tenant.headers)
    assert response.status_code == 201
    return str(response.json()["id"])


async def create(client: Client, tenant: Tenant, project_id: str, **body: Any) -> httpx.Response:
    return await client.post(
        "/v1/generations",
        json={"project_id": project_id, "prompt": "a kite", **body},
        headers=tenant.headers,
    )


def utc_midnight_after(moment: datetime) -> datetime:
    day = moment.astimezone(UTC).date() + timedelta(days=1)
    return datetime(day.year, day.month, day.day, tzinfo=UTC)


def assert_quota_problem(response: httpx.Response, limit: str) -> dict[str, Any]:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    problem: dict[str, Any] = response.json()
    assert problem["code"] == "quota_exceeded"
    assert problem["limit"] == limit
    resets_at = datetime.fromisoformat(problem["resets_at"])
    assert resets_at == utc_midnight_after(datetime.now(UTC))
    assert datetime.fromisoformat(problem["window"]["end"]) == resets_at
    assert datetime.fromisoformat(problem["window"]["start"]) == resets_at - timedelta(days=1)
    retry_after = int(response.headers["retry-after"])
    expected = math.ceil((resets_at - datetime.now(UTC)).total_seconds())
    assert retry_after >= 1 and abs(retry_after - expected) <= 5
    assert limit in problem["detail"] and "resets at" in problem["detail"]
    return problem


async def test_over_the_daily_count_creation_is_a_429_naming_the_limit(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    await set_limits(pool, tenant.workspace_id, generations_per_day=2)
    project_id = await new_project(client, tenant)
    for _ in range(2):
        assert (await create(client, tenant, project_id)).status_code == 201
    refused = await create(client, tenant, project_id)
    problem = assert_quota_problem(refused, "generations_per_day")
    assert (problem["limit_value"], problem["usage"]) == (2, 2)
    assert "2 of 2 generations" in problem["detail"]
    # Nothing was stored for the refused request.
    usage = (await client.get("/v1/usage", headers=tenant.headers)).json()
    assert usage["generations"] == 2


async def test_over_the_daily_spend_creation_is_a_429_naming_the_limit(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    await set_limits(pool, tenant.workspace_id, usd_per_day=0.1)
    project_id = await new_project(client, tenant)
    priced = {"provider": "openai", "model": "gpt-image-2"}  # $0.06 an image
    assert (await create(client, tenant, project_id, **priced)).status_code == 201
    refused = await create(client, tenant, project_id, **priced)
    problem = assert_quota_problem(refused, "usd_per_day")
    assert (problem["limit_value"], problem["usage"]) == (0.1, 0.06)
    # The free local renderer still fits.
    assert (await create(client, tenant, project_id)).status_code == 201


async def test_regenerate_and_edits_count_and_are_refused_alike(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    source = await completed_generation(pool, tenant)  # counts: created today
    await set_limits(pool, tenant.workspace_id, generations_per_day=2)
    again = await client.post(f"/v1/generations/{source}/regenerate", headers=tenant.headers)
    assert again.status_code == 201, again.text
    refused = await client.post(f"/v1/generations/{source}/regenerate", headers=tenant.headers)
    assert_quota_problem(refused, "generations_per_day")
    edit = await client.post(
        f"/v1/generations/{source}/edits",
        json={"prompt": "a gull", "mask": png_data_url()},
        headers=tenant.headers,
    )
    problem = assert_quota_problem(edit, "generations_per_day")
    assert problem["usage"] == 2


async def test_a_retry_is_not_a_new_generation(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    await set_limits(pool, tenant.workspace_id, generations_per_day=1)
    project_id = await new_project(client, tenant)
    created = await create(client, tenant, project_id)
    assert created.status_code == 201
    generation_id = created.json()["id"]
    async with pool.connection() as conn:
        await walk_to(conn, generation_id, "failed")
    retried = await client.post(f"/v1/generations/{generation_id}/retry", headers=tenant.headers)
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "pending"
    usage = (await client.get("/v1/usage", headers=tenant.headers)).json()
    assert usage["generations"] == 1
    # The day's one new generation is still taken.
    assert_quota_problem(await create(client, tenant, project_id), "generations_per_day")


async def test_usage_reports_the_window_the_use_and_the_limits(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    empty = await client.get("/v1/usage", headers=tenant.headers)
    assert empty.status_code == 200
    body = empty.json()
    assert body["workspace_id"] == str(tenant.workspace_id)
    assert (body["generations"], body["estimated_usd"]) == (0, 0)
    assert body["limits"] == {
        "generations_per_day": None,
        "usd_per_day": None,
        "max_concurrency": None,
    }
    end = datetime.fromisoformat(body["window"]["end"])
    assert end == utc_midnight_after(datetime.now(UTC))
    assert datetime.fromisoformat(body["window"]["start"]) == end - timedelta(days=1)

    await set_limits(pool, tenant.workspace_id, generations_per_day=10, max_concurrency=3)
    project_id = await new_project(client, tenant)
    await create(client, tenant, project_id, provider="openai", model="gpt-image-2")
    await create(client, tenant, project_id)
    body = (await client.get("/v1/usage", headers=tenant.headers)).json()
    assert (body["generations"], body["estimated_usd"]) == (2, 0.06)
    assert body["limits"] == {
        "generations_per_day": 10,
        "usd_per_day": None,
        "max_concurrency": 3,
    }


async def test_usage_needs_credentials_and_is_documented(client: Client) -> None:
    assert (await client.get("/v1/usage")).status_code == 401
    schema = (await client.get("/schema/openapi.json")).json()
    operation = schema["paths"]["/v1/usage"]["get"]
    ref = operation["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    usage = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]
    assert set(usage["properties"]) == {
        "workspace_id",
        "window",
        "generations",
        "estimated_usd",
        "limits",
    }
    problem = schema["components"]["schemas"]["Problem"]["properties"]
    assert {"limit", "limit_value", "usage", "window", "resets_at"} <= set(problem)
    created = schema["paths"]["/v1/generations"]["post"]["responses"]
    assert "429" in created


async def test_batches_count_as_a_whole(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    project_id = await new_project(client, tenant)
    await set_limits(pool, tenant.workspace_id, generations_per_day=5)
    over = await create(client, tenant, project_id, n=6)
    assert_quota_problem(over, "generations_per_day")
    items = [{"project_id": project_id, "prompt": f"item {i}"} for i in range(6)]
    batch = await client.post(
        "/v1/generations/batch", json={"items": items}, headers=tenant.headers
    )
    assert_quota_problem(batch, "generations_per_day")
    usage = (await client.get("/v1/usage", headers=tenant.headers)).json()
    assert usage["generations"] == 0, "nothing of a refused batch was created"
    fits = await create(client, tenant, project_id, n=5)
    assert fits.status_code == 201, fits.text
    assert_quota_problem(await create(client, tenant, project_id), "generations_per_day")
