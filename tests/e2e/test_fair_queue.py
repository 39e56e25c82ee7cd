"""The fair queue with real API and worker processes: another workspace's backlog does not hold
up a generation, and a workspace's concurrency cap holds."""

from __future__ import annotations

import asyncio
from datetime import datetime

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from tests.conftest import Tenant, make_tenant
from tests.e2e.conftest import Stack
from tests.e2e.test_lifecycle import create_project, wait_for
from worker.core.quotas import set_limits

pytestmark = pytest.mark.e2e
STACK_ENV = {"LOCAL_PROVIDER_DELAY_MS": "300", "WORKER_CONCURRENCY": "2"}


async def test_a_backlog_does_not_hold_up_another_workspace(
    stack: Stack, pool: AsyncConnectionPool, tenant: Tenant
) -> None:
    other = await make_tenant(pool)
    async with (
        httpx.AsyncClient(base_url=stack.url, headers=tenant.headers, timeout=30) as a,
        httpx.AsyncClient(base_url=stack.url, headers=other.headers, timeout=30) as b,
    ):
        project_a, project_b = await create_project(a), await create_project(b)
        items = [
            {"project_id": project_a, "prompt": f"backlog {i}", "priority": "interactive"}
            for i in range(40)
        ]
        backlog = (await a.post("/v1/generations/batch", json={"items": items})).json()["data"]
        await asyncio.sleep(0.5)
        single = (
            await b.post("/v1/generations", json={"project_id": project_b, "prompt": "mine"})
        ).json()
        created = datetime.fromisoformat(single["created_at"])
        done = await wait_for(b, single["id"], "completed", timeout=60)
        started = datetime.fromisoformat(done["started_at"])
        ahead = 0
        for generation in backlog:
            row = (await a.get(f"/v1/generations/{generation['id']}")).json()
            if row["started_at"] is None:
                continue
            began = datetime.fromisoformat(row["started_at"])
            ahead += created < began < started
    # Of A's queued work, at most one job per worker slot started before B's, not 40.
    assert ahead <= 2, ahead


async def test_a_concurrency_cap_holds_across_the_worker(
    http: httpx.AsyncClient, pool: AsyncConnectionPool, tenant: Tenant
) -> None:
    await set_limits(pool, tenant.workspace_id, max_concurrency=1)
    try:
        project_id = await create_project(http)
        created = (
            await http.post(
                "/v1/generations",
                json={"project_id": project_id, "prompt": "one at a time", "n": 4},
            )
        ).json()["data"]
        most = 0
        while True:
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT count(*) FILTER (WHERE status = 'processing'),"
                    " count(*) FILTER (WHERE status = 'completed')"
                    " FROM image_generations WHERE project_id = %s",
                    (project_id,),
                )
                row = await cur.fetchone()
            assert row is not None
            most = max(most, int(row[0]))
            if row[1] == len(created):
                break
            await asyncio.sleep(0.02)
        assert most == 1
    finally:
        await set_limits(pool, tenant.workspace_id, max_concurrency=None)
