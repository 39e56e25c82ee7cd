"""`priority` on creation: interactive by default, batch, or a level from -3 to 3."""

from __future__ import annotations

import httpx
from litestar import Litestar
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from tests.api.test_actions import new_generation
from tests.api.test_resume import first_events
from tests.conftest import Tenant

Client = AsyncTestClient[Litestar]


async def job_priority(pool: AsyncConnectionPool, job_id: int) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT priority FROM procrastinate_jobs WHERE id = %s", (job_id,))
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_priority_levels(client: Client, tenant: Tenant, pool: AsyncConnectionPool) -> None:
    interactive = await new_generation(client, tenant)
    batch = await new_generation(client, tenant, priority="batch")
    urgent = await new_generation(client, tenant, priority=2)
    assert [g["priority"] for g in (interactive, batch, urgent)] == [0, -1, 2]
    priorities = [await job_priority(pool, g["job_id"]) for g in (urgent, interactive, batch)]
    assert priorities == sorted(priorities, reverse=True)
    regenerated = await client.post(
        f"/v1/generations/{batch['id']}/regenerate", headers=tenant.headers
    )
    assert regenerated.json()["priority"] == -1


async def test_a_bad_priority_names_the_field(client: Client, tenant: Tenant) -> None:
    project = (await client.post("/v1/projects", json={"name": "p"}, headers=tenant.headers)).json()
    for value in ("urgent", 4, -4, 1.5, True):
        response = await client.post(
            "/v1/generations",
            json={"project_id": project["id"], "prompt": "x", "priority": value},
            headers=tenant.headers,
        )
        assert response.status_code == 422, (value, response.text)
        assert response.json()["errors"][0]["field"] == "priority", (value, response.text)


async def test_a_waiting_generation_shows_its_queue_position(api_url: str, tenant: Tenant) -> None:
    async with httpx.AsyncClient(base_url=api_url, headers=tenant.headers, timeout=30) as http:
        project = (await http.post("/v1/projects", json={"name": "line"})).json()
        created = [
            (
                await http.post(
                    "/v1/generations", json={"project_id": project["id"], "prompt": "x"}
                )
            ).json()
            for _ in range(2)
        ]
        first, second = [
            (await http.get(f"/v1/generations/{g['id']}")).json()["queue_position"] for g in created
        ]
        assert 0 <= first < second
        events, _ = await first_events(http, f"/v1/generations/{created[1]['id']}/events", {}, 1)
    assert events[0].json()["queue_position"] == second
