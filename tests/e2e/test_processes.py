"""The commands as an operator runs them: `imagejobs dev`, and a worker stopped by SIGTERM."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from tests.conftest import Tenant
from tests.e2e.conftest import free_port
from tests.factories import create_project, insert_generation
from tests.sse_client import SSEComment, SSEEvent, read_sse

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]


def test_imagejobs_dev_prints_a_working_key_and_stops_on_ctrl_c(
    database_url: str, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "LOCAL_PROVIDER_DELAY_MS": "0",
    }
    env["PYTHONPATH"] = str(ROOT)
    process = subprocess.Popen(
        [sys.executable, "-m", "worker.cli", "dev"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        banner = ""
        deadline = time.monotonic() + 60
        while "Ctrl-C" not in banner:
            assert time.monotonic() < deadline, banner
            line = process.stdout.readline()
            assert line, f"imagejobs dev exited early:\n{banner}"
            banner += line
        key = re.search(r"dev API key:\s+(\S+)", banner)
        assert key is not None, banner
        url = f"http://localhost:{port}"
        assert f"{url}/" in banner
        response = httpx.post(
            f"{url}/v1/projects",
            json={"name": "from dev"},
            headers={"Authorization": f"Bearer {key[1]}"},
        )
        assert response.status_code == 201
        assert (tmp_path / "var" / "dev-credentials.json").exists()
    finally:
        process.send_signal(signal.SIGINT)
        assert process.wait(30) == 0


async def test_sigterm_lets_a_running_job_finish(
    database_url: str, pool: AsyncConnectionPool, tenant: Tenant, tmp_path: Path
) -> None:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "LOCAL_STORAGE_DIR": str(tmp_path),
        "LOCAL_PROVIDER_DELAY_MS": "1500",
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
    project = await create_project(pool, tenant.workspace_id, "shutdown")
    generation = await insert_generation(pool, project, prompt="slow")

    async def status() -> str:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT step FROM image_generations WHERE id = %s", (generation,)
            )
            row = await cur.fetchone()
            assert row is not None
            return str(row[0])

    deadline = time.monotonic() + 30
    while await status() != "processing":
        assert time.monotonic() < deadline, "the worker never picked the job up"
        await asyncio.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(worker.wait(), 30) == 0
    assert await status() == "completed"


async def test_sigterm_ends_open_streams_with_a_retry_hint(
    database_url: str, pool: AsyncConnectionPool, tenant: Tenant, tmp_path: Path
) -> None:
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "PORT": str(port),
        "LOCAL_STORAGE_DIR": str(tmp_path),
    }
    api = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.cli",
        "api",
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    project = await create_project(pool, tenant.workspace_id, "deploy")
    generation = await insert_generation(pool, project, prompt="idle", job_id=-1)
    url = f"http://127.0.0.1:{port}"
    async with httpx.AsyncClient(base_url=url, headers=tenant.headers, timeout=30) as http:
        deadline = time.monotonic() + 20
        while True:
            try:
                if (await http.get("/readyz")).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the API did not start"
            await asyncio.sleep(0.1)
        items: list[SSEEvent | SSEComment] = []
        async with http.stream("GET", f"/v1/generations/{generation}/events") as response:
            async for item in read_sse(response):
                items.append(item)
                if len(items) == 1:
                    stopped_at = time.monotonic()
                    api.send_signal(signal.SIGTERM)
    assert isinstance(items[0], SSEEvent) and items[0].json()["status"] == "pending"
    assert any(isinstance(i, SSEEvent) and i.retry == 1000 for i in items), items
    # uvicorn re-raises the signal it handled once it has shut down cleanly.
    assert await asyncio.wait_for(api.wait(), 15) in (0, -signal.SIGTERM)
    assert time.monotonic() - stopped_at < 8, "the open stream held the shutdown"
