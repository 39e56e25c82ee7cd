"""Connections decoupled from concurrency: a worker runs far more generations at once than it
holds database connections, because a provider wait holds none (issue 18)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from psycopg_pool import AsyncConnectionPool

from tests.conftest import Tenant
from tests.factories import create_project

pytestmark = pytest.mark.e2e

IN_FLIGHT = 120
POOL_MAX = 6
DELAY_S = 4.0


async def test_a_worker_runs_many_more_generations_than_it_has_connections(
    database_url: str, pool: AsyncConnectionPool, tenant: Tenant, tmp_path: Path
) -> None:
    project_id = await create_project(pool, tenant.workspace_id, "in flight")
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "LOCAL_STORAGE_DIR": str(tmp_path),
        "LOCAL_PROVIDER_DELAY_MS": str(int(DELAY_S * 1000)),
        "WORKER_CONCURRENCY": str(IN_FLIGHT),
        "WORKER_DB_POOL_MAX": str(POOL_MAX),
    }
    worker = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.cli",
        "worker",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        async with pool.connection() as conn:
            await conn.execute(
                "INSERT INTO image_generations (project_id, prompt, prompt_spec)"
                " SELECT %s, 'in flight ' || i, '{\"size\": \"64x64\"}' FROM generate_series(1, %s) i",
                (project_id, IN_FLIGHT),
            )
        started = time.monotonic()
        most_running = most_connections = 0
        while True:
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT count(*) FILTER (WHERE status = 'processing'),"
                    " count(*) FILTER (WHERE status = 'completed')"
                    " FROM image_generations WHERE project_id = %s",
                    (project_id,),
                )
                running, completed = await cur.fetchone() or (0, 0)
                cur = await conn.execute(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND application_name = 'imagejobs-worker'"
                )
                connections = (await cur.fetchone() or (0,))[0]
            most_running = max(most_running, running)
            most_connections = max(most_connections, connections)
            if completed == IN_FLIGHT:
                break
            assert time.monotonic() - started < 60, (running, completed)
            await asyncio.sleep(0.1)
        elapsed = time.monotonic() - started
    finally:
        worker.terminate()
        await asyncio.wait_for(worker.wait(), 30)

    # All at once: one provider delay and the start-up, not IN_FLIGHT / POOL_MAX delays.
    assert most_running >= IN_FLIGHT * 0.9, most_running
    assert elapsed < DELAY_S * 3, elapsed
    # The pool, and procrastinate's LISTEN connection opened with the pool's settings.
    assert 0 < most_connections <= POOL_MAX + 1, most_connections
