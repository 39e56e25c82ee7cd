"""The bench's own stack: a fresh database, worker and API processes, and measuring helpers."""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import msgspec
import psycopg

from worker.core.apikeys import create_api_key
from worker.core.migrate import migrate
from worker.devtools.embedded import start_embedded_postgres, with_database


class Result(msgspec.Struct, kw_only=True):
    scenario: str
    figure: float
    unit: str
    reference: float | None = None
    reference_name: str | None = None
    ratio: float | None = None
    target: str = ""
    details: dict[str, Any] = {}


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * (len(ordered) - 1))))
    return ordered[index]


def rss_mb(pid: int) -> float:
    import psutil

    return float(psutil.Process(pid).memory_info().rss) / 1024 / 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Bench:
    def __init__(self, url: str, workdir: Path) -> None:
        self.url = url
        self.workdir = workdir
        self.processes: list[subprocess.Popen[bytes]] = []

    def env(self, **extra: str) -> dict[str, str]:
        return {
            **os.environ,
            "DATABASE_URL": self.url,
            "LOCAL_STORAGE_DIR": str(self.workdir / "storage"),
            "LOCAL_PROVIDER_DELAY_MS": "0",
            "RESCUE_CRON": "0 0 1 1 *",
            # The scenarios are the load: the per-key creation rate and stream caps would
            # measure the limiter instead of the path behind it.
            "RATE_LIMIT_CREATE_PER_MIN": "0",
            "SSE_MAX_STREAMS_PER_KEY": "0",
            "LOG_LEVEL": "WARNING",
            **extra,
        }

    def start(self, command: list[str], **extra: str) -> subprocess.Popen[bytes]:
        log = (self.workdir / f"{command[-1]}-{len(self.processes)}.log").open("ab")
        process = subprocess.Popen(
            command, env=self.env(**extra), stdout=log, stderr=subprocess.STDOUT
        )
        self.processes.append(process)
        return process

    def start_worker(self, concurrency: int) -> subprocess.Popen[bytes]:
        return self.start(
            [sys.executable, "-m", "worker.cli", "worker"], WORKER_CONCURRENCY=str(concurrency)
        )

    async def start_api(self, **extra: str) -> str:
        port = free_port()
        self.start(
            [sys.executable, "-m", "worker.cli", "api"], PORT=str(port), DB_POOL_MAX="20", **extra
        )
        url = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as client:
            for _ in range(300):
                try:
                    if (await client.get(f"{url}/readyz")).status_code == 200:
                        return url
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError("the API did not start")

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()

    def stop_all(self) -> None:
        for process in self.processes:
            self.stop(process)

    async def connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(self.url, autocommit=True)

    async def tenant(self) -> tuple[uuid.UUID, str, uuid.UUID]:
        """A workspace, its API key and a fresh project."""
        workspace = uuid.uuid4()
        async with await self.connect() as conn:
            key = await create_api_key(conn, workspace, "bench")
            cur = await conn.execute(
                "INSERT INTO projects (workspace_id, name) VALUES (%s, 'bench') RETURNING id",
                (workspace,),
            )
            row = await cur.fetchone()
        assert row is not None
        return workspace, key, row[0]

    async def wait_for(self, predicate: Callable[[], Awaitable[bool]], timeout: float) -> float:
        started = time.perf_counter()
        while not await predicate():
            if time.perf_counter() - started > timeout:
                raise TimeoutError("the benchmark did not finish in time")
            await asyncio.sleep(0.02)
        return time.perf_counter() - started


@asynccontextmanager
async def bench_database(given_url: str | None, workdir: Path) -> AsyncIterator[str]:
    """A fresh, migrated database on the given server (or an embedded one), dropped at the end."""
    server = given_url or start_embedded_postgres(Path("var") / "bench-postgres")
    name = f"imagejobs_bench_{secrets.token_hex(4)}"
    async with await psycopg.AsyncConnection.connect(server, autocommit=True) as conn:
        await conn.execute(f'CREATE DATABASE "{name}"'.encode())
    url = with_database(server, name)
    try:
        await migrate(url)
        yield url
    finally:
        async with await psycopg.AsyncConnection.connect(server, autocommit=True) as conn:
            await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)'.encode())


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")
