"""Harness for the fault-injection suite: worker processes we can kill, and a ledger of what
happened to every generation we created."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from tests.factories import abandon_earlier_work, insert_generation

FAST_RESCUE = {
    "WORKER_HEARTBEAT_S": "1",
    "RESCUE_STALE_S": "4",
    "RESCUE_GRACE_S": "5",
    "RESCUE_CRON": "* * * * * */2",
}
SMALL = Jsonb({"size": "64x64"})


class Workers:
    def __init__(self, database_url: str, storage: Path, logs: Path) -> None:
        self.database_url = database_url
        self.storage = storage
        self.logs = logs
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, **env: str) -> subprocess.Popen[bytes]:
        full_env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "LOCAL_STORAGE_DIR": str(self.storage),
            "WORKER_CONCURRENCY": "8",
            **env,
        }
        log = (self.logs / f"worker-{len(self.processes)}.log").open("ab")
        process = subprocess.Popen(
            [sys.executable, "-m", "worker.cli", "worker"],
            env=full_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.processes.append(process)
        return process

    def stop_all(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()


@pytest.fixture
def workers(database_url: str, tmp_path: Path) -> Iterator[Workers]:
    # The workers here take any queued generation: earlier tests' leftovers (a fair-queue
    # backlog) would fill their slots before this test's jobs and break its timing.
    abandon_earlier_work(database_url)
    pool = Workers(database_url, tmp_path / "storage", tmp_path)
    yield pool
    pool.stop_all()


class Ledger:
    """The generations a fault test created, and checks of how each ended."""

    def __init__(self, pool: AsyncConnectionPool, project_id: uuid.UUID) -> None:
        self.pool = pool
        self.project_id = project_id
        self.ids: list[uuid.UUID] = []

    async def create(self, count: int, prompt: str = "fault") -> list[uuid.UUID]:
        async with self.pool.connection() as conn:
            for i in range(count):
                generation = await insert_generation(
                    conn, self.project_id, prompt=f"{prompt} {i}", prompt_spec=SMALL
                )
                self.ids.append(generation)
        return self.ids[-count:]

    async def statuses(self) -> dict[uuid.UUID, str]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT id, status FROM image_generations WHERE id = ANY(%s)", (self.ids,)
            )
            return {row[0]: str(row[1]) for row in await cur.fetchall()}

    async def wait(self, status: str, timeout: float, ids: list[uuid.UUID] | None = None) -> None:
        wanted = ids or self.ids
        deadline = time.monotonic() + timeout
        while True:
            current = await self.statuses()
            if all(current.get(i) == status for i in wanted):
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not all {status}: {sorted(current.values())}")
            await asyncio.sleep(0.1)

    async def report(self, name: str, killed: int = 0) -> dict[str, int]:
        """Counts what matters after a fault, prints it, and asserts nothing was lost or doubled."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                """
                SELECT g.status,
                       (SELECT count(*) FROM image_events e WHERE e.generation_id = g.id
                         AND e.kind = 'status' AND e.status = g.status) AS terminal_events,
                       g.attempts
                FROM image_generations g WHERE g.id = ANY(%s)
                """,
                (self.ids,),
            )
            rows = await cur.fetchall()
            cur = await conn.execute("SELECT * FROM projects WHERE id = %s", (self.project_id,))
            before = await cur.fetchone()
            cur = await conn.execute(
                "SELECT * FROM recompute_project_counts(%s)", (self.project_id,)
            )
            after = await cur.fetchone()
        completed = sum(1 for status, _, _ in rows if status == "completed")
        figures = {
            "jobs": len(self.ids),
            "killed": killed,
            "recovered": sum(
                1 for status, _, attempts in rows if status == "completed" and attempts > 1
            ),
            "completed": completed,
            "duplicates": sum(1 for _, events, _ in rows if events > 1),
            "lost": len(self.ids)
            - len(rows)
            + sum(1 for status, _, _ in rows if status in ("pending", "processing")),
        }
        print(f"\n[faults] {name}: " + ", ".join(f"{k}={v}" for k, v in figures.items()))
        assert figures["duplicates"] == 0, "a terminal event was written twice"
        assert figures["lost"] == 0, "a generation was left behind"
        assert before is not None and after is not None
        assert before[3:10] == after[3:10], "counters disagree with recompute_project_counts"
        return figures


@pytest.fixture
async def ledger(pool: AsyncConnectionPool, project_id: uuid.UUID) -> Ledger:
    return Ledger(pool, project_id)
