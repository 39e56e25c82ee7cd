"""POST /v1/generations/bulk-cancel and /bulk-retry: a filter, one statement, {"count": n}."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from litestar import Litestar
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from tests.conftest import Tenant

Client = AsyncTestClient[Litestar]


async def project_with(client: Client, tenant: Tenant, count: int) -> tuple[str, list[str]]:
    project = (
        await client.post("/v1/projects", json={"name": "bulk"}, headers=tenant.headers)
    ).json()
    ids = []
    for i in range(count):
        response = await client.post(
            "/v1/generations",
            json={"project_id": project["id"], "prompt": f"bulk {i}"},
            headers=tenant.headers,
        )
        ids.append(response.json()["id"])
    return project["id"], ids


async def statuses(pool: AsyncConnectionPool, ids: list[str]) -> dict[str, Any]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id::text, status, attempts, job_id FROM image_generations WHERE id = ANY (%s::uuid[])",
            (ids,),
        )
        return {row[0]: row[1:] for row in await cur.fetchall()}


async def test_bulk_cancel_then_bulk_retry_a_project(
    client: Client, tenant: Tenant, other_tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    project_id, ids = await project_with(client, tenant, 5)
    other_project, other_ids = await project_with(client, tenant, 2)
    foreign_project, foreign_ids = await project_with(client, other_tenant, 2)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE image_generations SET status = 'processing', attempts = 3 WHERE id = %s",
            (ids[0],),
        )
    cancelled = await client.post(
        "/v1/generations/bulk-cancel", json={"project_id": project_id}, headers=tenant.headers
    )
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json() == {"count": 5}
    assert {s[0] for s in (await statuses(pool, ids)).values()} == {"cancelled"}
    assert {s[0] for s in (await statuses(pool, other_ids + foreign_ids)).values()} == {"pending"}

    # Another workspace's filter matches nothing of ours.
    foreign = await client.post(
        "/v1/generations/bulk-retry", json={"project_id": project_id}, headers=other_tenant.headers
    )
    assert foreign.json() == {"count": 0}

    before = await statuses(pool, ids)
    retried = await client.post(
        "/v1/generations/bulk-retry",
        json={"project_id": project_id, "status": "cancelled"},
        headers=tenant.headers,
    )
    assert retried.json() == {"count": 5}
    after = await statuses(pool, ids)
    assert all(after[g][0] == "pending" and after[g][1] == 0 for g in ids)
    assert all(after[g][2] != before[g][2] for g in ids), "each got a new job"
    again = await client.post(
        "/v1/generations/bulk-retry", json={"project_id": project_id}, headers=tenant.headers
    )
    assert again.json() == {"count": 0}, "nothing failed or cancelled is left"
    assert other_project and foreign_project


async def test_bulk_filters_by_creation_time(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool
) -> None:
    project_id, ids = await project_with(client, tenant, 3)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE image_generations SET created_at = now() - interval '2 days' WHERE id = %s",
            (ids[0],),
        )
    yesterday = (datetime.now(UTC) - timedelta(days=1)).isoformat()
    old = await client.post(
        "/v1/generations/bulk-cancel",
        json={"project_id": project_id, "created_before": yesterday},
        headers=tenant.headers,
    )
    assert old.json() == {"count": 1}
    recent = await client.post(
        "/v1/generations/bulk-cancel",
        json={"created_after": yesterday, "status": "pending", "project_id": project_id},
        headers=tenant.headers,
    )
    assert recent.json() == {"count": 2}


async def test_bulk_refuses_bad_filters_by_field(client: Client, tenant: Tenant) -> None:
    cases: list[tuple[str, dict[str, Any], str]] = [
        ("bulk-cancel", {}, "body"),
        ("bulk-cancel", {"status": "failed"}, "status"),
        ("bulk-retry", {"status": "pending"}, "status"),
        ("bulk-retry", {"status": "done"}, "status"),
        ("bulk-cancel", {"project_id": "nope"}, "project_id"),
        ("bulk-cancel", {"created_before": "2026-12-01T00:00:00"}, "created_before"),
        ("bulk-retry", {"everything": True}, "everything"),
    ]
    for action, body, field in cases:
        response = await client.post(f"/v1/generations/{action}", json=body, headers=tenant.headers)
        assert response.status_code == 422, (action, body, response.text)
        assert response.json()["errors"][0]["field"] == field, (action, body, response.text)
