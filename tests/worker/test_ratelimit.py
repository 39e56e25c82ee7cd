"""Provider rate limits shared by every worker, enforced in Postgres."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import datetime
from pathlib import Path

from psycopg_pool import AsyncConnectionPool

from tests.factories import insert_generation
from tests.worker.conftest import generation_row, make_runtime
from worker.core.sqlfiles import query
from worker.providers.local import LocalProvider
from worker.queue import pipeline
from worker.queue.ratelimit import RateLimiter


async def test_workers_together_never_exceed_the_rate(pool: AsyncConnectionPool) -> None:
    provider = f"test-{uuid.uuid4()}"
    limit, window_s, run_s, workers = 5, 1.0, 3.0, 6
    grants: list[datetime] = []
    refusals = 0

    async def worker() -> None:
        nonlocal refusals
        deadline = time.monotonic() + run_s
        while time.monotonic() < deadline:
            async with pool.connection() as conn:
                cur = await conn.execute(
                    query("acquire_rate"),
                    {"provider": provider, "max_requests": limit, "window_s": window_s},
                )
                row = await cur.fetchone()
            assert row is not None
            granted, wait_s, granted_at = row
            if granted:
                grants.append(granted_at)
            else:
                refusals += 1
                assert 0 < wait_s <= window_s
                await asyncio.sleep(min(wait_s, 0.05))

    await asyncio.gather(*(worker() for _ in range(workers)))
    grants.sort()
    for i, start in enumerate(grants):
        in_window = [g for g in grants[i:] if (g - start).total_seconds() < window_s]
        assert len(in_window) <= limit, f"{len(in_window)} grants within {window_s}s of {start}"
    # Fully used, not just safe: about `limit` per window over the run.
    assert len(grants) >= limit * (run_s / window_s) - limit
    assert refusals > 0


async def test_the_limiter_answers_the_wait(pool: AsyncConnectionPool) -> None:
    provider = f"test-{uuid.uuid4()}"
    limiter = RateLimiter(pool, {provider: 2}, window_s=30)
    assert await limiter.acquire(provider) == 0
    assert await limiter.acquire(provider) == 0
    wait = await limiter.acquire(provider)
    assert 25 < wait <= 30
    assert await limiter.acquire("a provider without a limit") == 0


async def test_a_rate_limited_job_is_rescheduled_without_counting_an_attempt(
    pool: AsyncConnectionPool, project_id: uuid.UUID, storage_dir: Path
) -> None:
    runtime = make_runtime(pool, storage_dir, {"local": LocalProvider(delay_ms=0)})
    runtime.limiter = RateLimiter(pool, {"local": 1}, window_s=60)
    assert await runtime.limiter.acquire("local") == 0, "the one request of this minute is spent"
    first = await insert_generation(pool, project_id)
    await pipeline.run_generation(runtime, first, attempt=1)
    row = await generation_row(pool, first)
    assert (row["status"], row["attempts"]) == ("processing", 1)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT j.task_name, j.args, j.scheduled_at > now() + interval '50 seconds' "
            "FROM procrastinate_jobs j WHERE j.id = %s",
            (row["job_id"],),
        )
        job = await cur.fetchone()
    assert job is not None
    assert job[0] == pipeline.GENERATE_TASK
    assert job[1] == {"generation_id": str(first), "resume": True}
    assert job[2], "the job waits until the window has room again"

    runtime.limiter.per_minute = {}
    await pipeline.run_generation(runtime, first, attempt=1, resume=True)
    row = await generation_row(pool, first)
    assert (row["status"], row["attempts"]) == ("completed", 1)
