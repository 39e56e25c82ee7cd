"""Per-workspace concurrency caps (migration 022), at both gates: procrastinate's fetch skips a
capped workspace's runs, and the worker's start write admits no more than the cap."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from psycopg_pool import AsyncConnectionPool

from tests.sql.helpers import Conn, create_project, fetch_value, generation, insert_generation
from tests.sql.test_fair_queue import only_our_jobs, take
from worker.core import store
from worker.core.quotas import set_limits


async def start(db: Any, generation_id: uuid.UUID) -> bool:
    started, _ = await store.start_generation(db, generation_id, count_attempt=True)
    return started is not None


async def test_fetch_skips_a_workspace_at_its_cap(pool: AsyncConnectionPool, conn: Conn) -> None:
    capped, other = uuid.uuid4(), uuid.uuid4()
    await set_limits(pool, capped, max_concurrency=1)
    project_capped = await create_project(conn, capped)
    project_other = await create_project(conn, other)
    mine = [await insert_generation(conn, project_capped) for _ in range(3)]
    theirs = await insert_generation(conn, project_other)
    await only_our_jobs(conn, [*mine, theirs])
    async with pool.connection() as worker:
        assert await take(worker, 1) == [mine[0]]
        assert await start(pool, mine[0])
        # The capped workspace's next runs wait; the other workspace's is taken instead.
        assert await take(worker, 3) == [theirs]
        await conn.execute(
            "UPDATE image_generations SET status = 'completed' WHERE id = %s", (mine[0],)
        )
        assert await take(worker, 1) == [mine[1]]


async def test_the_start_gate_admits_no_more_than_the_cap(
    pool: AsyncConnectionPool, conn: Conn
) -> None:
    workspace = uuid.uuid4()
    await set_limits(pool, workspace, max_concurrency=2)
    project = await create_project(conn, workspace)
    ids = [await insert_generation(conn, project, job_id=-1) for _ in range(6)]

    async def try_start(generation_id: uuid.UUID) -> bool:
        async with pool.connection() as own:
            return await start(own, generation_id)

    results = await asyncio.gather(*(try_start(g) for g in ids))
    assert sum(results) == 2, results
    processing = await fetch_value(
        conn,
        "SELECT count(*) FROM image_generations WHERE project_id = %s AND status = 'processing'",
        (project,),
    )
    assert processing == 2
    # A refused run goes back in line for later, keeping its place (its job's priority).
    refused = ids[results.index(False)]
    before = await generation(conn, refused)
    assert await store.wait_for_slot(pool, refused, 60)
    after = await generation(conn, refused)
    assert after["job_id"] != before["job_id"] and after["status"] == "pending"
    scheduled = await fetch_value(
        conn,
        "SELECT scheduled_at > now() + interval '50 seconds' FROM procrastinate_jobs WHERE id = %s",
        (after["job_id"],),
    )
    assert scheduled


async def test_a_workspace_without_a_cap_is_not_held(
    pool: AsyncConnectionPool, conn: Conn, project_id: uuid.UUID
) -> None:
    ids = [await insert_generation(conn, project_id, job_id=-1) for _ in range(5)]
    assert all([await start(pool, g) for g in ids])


async def test_the_installed_fetch_function_is_ours(conn: Conn) -> None:
    """A procrastinate upgrade that replaces its fetch function must merge migrations 022 and 029
    again."""
    body = await fetch_value(
        conn,
        "SELECT prosrc FROM pg_proc WHERE proname = 'procrastinate_fetch_job_v2'",
    )
    assert "imagejobs_may_start" in body


async def test_malformed_job_args_do_not_break_the_fetch(
    pool: AsyncConnectionPool, conn: Conn
) -> None:
    job = await fetch_value(
        conn,
        "SELECT (procrastinate_defer_jobs_v1(ARRAY[ROW('images', 'generate_image', 1073741000,"
        ' NULL, NULL, \'{"generation_id": "not-a-uuid"}\'::jsonb, NULL)'
        "::procrastinate_job_to_defer_v1]))[1]",
    )
    async with pool.connection() as worker:
        worker_id = await fetch_value(
            worker, "SELECT worker_id FROM procrastinate_register_worker_v1()"
        )
        cur = await worker.execute(
            "SELECT id FROM procrastinate_fetch_job_v2(ARRAY['images'], %s)", (worker_id,)
        )
        row = await cur.fetchone()
    assert row is not None and row[0] == job


async def test_the_fetch_walks_past_more_unrunnable_jobs_than_one_page(
    pool: AsyncConnectionPool, conn: Conn
) -> None:
    """The fetch reads the queue a page at a time (migration 033): a head of jobs that may not
    run, longer than a page, is walked to its end, and the job behind it is taken."""
    queue = f"paging-{uuid.uuid4().hex[:8]}"

    async def defer(priority: int, lock: str | None, count: int = 1) -> list[int]:
        cur = await conn.execute(
            "SELECT unnest(procrastinate_defer_jobs_v1(array_agg(ROW(%s, 'noop', %s, %s, NULL,"
            " '{}'::jsonb, NULL)::procrastinate_job_to_defer_v1))) FROM generate_series(1, %s)",
            (queue, priority, lock, count),
        )
        return [int(row[0]) for row in await cur.fetchall()]

    async def fetch(worker: Conn, worker_id: int) -> int | None:
        job_id: int | None = await fetch_value(
            worker,
            "SELECT id FROM procrastinate_fetch_job_v2(ARRAY[%s]::varchar[], %s)",
            (queue, worker_id),
        )
        return job_id

    lock = f"generation:{uuid.uuid4()}"
    async with pool.connection() as worker:
        worker_id = await fetch_value(
            worker, "SELECT worker_id FROM procrastinate_register_worker_v1()"
        )
        (running,) = await defer(100, lock)
        assert await fetch(worker, worker_id) == running
        await defer(100, lock, count=45)  # behind the running job of their lock
        (free,) = await defer(1, None)
        assert await fetch(worker, worker_id) == free
        assert await fetch(worker, worker_id) is None
