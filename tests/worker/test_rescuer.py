"""The rescuer against a real procrastinate schema: what a dead worker left behind runs again,
unless it has used its attempts, in which case it fails with `timeout` and says why."""

from __future__ import annotations

import asyncio
import time
import uuid

from procrastinate import App, PsycopgConnector
from psycopg_pool import AsyncConnectionPool

from tests.factories import insert_generation
from tests.worker.conftest import generation_row
from worker.core.errors import MAX_ATTEMPTS
from worker.queue import rescuer
from worker.queue.presence import Presence


async def orphan(pool: AsyncConnectionPool, project_id: uuid.UUID, attempts: int) -> uuid.UUID:
    """A processing generation whose job is gone, last touched a minute ago."""
    generation_id = await insert_generation(pool, project_id, job_id=-1)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE image_generations SET status = 'processing', attempts = %s WHERE id = %s",
            (attempts, generation_id),
        )
        await conn.execute(
            "ALTER TABLE image_generations DISABLE TRIGGER image_generations_before_update"
        )
        try:
            await conn.execute(
                "UPDATE image_generations SET updated_at = now() - interval '1 minute'"
                " WHERE id = %s",
                (generation_id,),
            )
        finally:
            await conn.execute(
                "ALTER TABLE image_generations ENABLE TRIGGER image_generations_before_update"
            )
    return generation_id


async def test_the_rescuer_requeues_orphans_and_gives_up_on_exhausted_ones(
    database_url: str, pool: AsyncConnectionPool, project_id: uuid.UUID
) -> None:
    young = await orphan(pool, project_id, attempts=1)
    exhausted = await orphan(pool, project_id, attempts=MAX_ATTEMPTS)
    app = App(connector=PsycopgConnector(conninfo=database_url))
    async with app.open_async():
        await rescuer.rescue(app.job_manager, pool, stale_s=3600, grace_s=30)

    requeued = await generation_row(pool, young)
    assert requeued["status"] == "processing" and requeued["job_id"] not in (None, -1)
    gave_up = await generation_row(pool, exhausted)
    assert (gave_up["status"], gave_up["error_code"]) == ("failed", "timeout")
    message = f"Gave up after {MAX_ATTEMPTS} attempts: the worker running it stopped each time"
    assert gave_up["error_message"] == message
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT data->>'error_message' FROM image_events"
            " WHERE generation_id = %s AND kind = 'status' AND status = 'failed'",
            (exhausted,),
        )
        assert [row[0] for row in await cur.fetchall()] == [message]


async def doing(pool: AsyncConnectionPool, generation_id: uuid.UUID, queue: str) -> int:
    """Puts the generation's job in `doing` on a newly registered worker; the worker's id."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM procrastinate_register_worker_v1()")
        row = await cur.fetchone()
        assert row is not None
        worker_id = int(row[0])
        await conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing', worker_id = %s, queue_name = %s"
            " WHERE id = (SELECT job_id FROM image_generations WHERE id = %s)",
            (worker_id, queue, generation_id),
        )
        await conn.execute(
            "UPDATE image_generations SET status = 'processing', attempts = 1 WHERE id = %s",
            (generation_id,),
        )
    return worker_id


async def job_of(pool: AsyncConnectionPool, generation_id: uuid.UUID) -> tuple[str, int]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT j.status, j.attempts FROM procrastinate_jobs j"
            " JOIN image_generations g ON g.job_id = j.id WHERE g.id = %s",
            (generation_id,),
        )
        row = await cur.fetchone()
    assert row is not None
    return str(row[0]), int(row[1])


async def test_the_fast_pass_requeues_only_jobs_whose_worker_lock_is_gone(
    database_url: str, pool: AsyncConnectionPool, project_id: uuid.UUID
) -> None:
    queue = f"fast-rescue-{uuid.uuid4().hex[:8]}"  # none of this session's other jobs
    alive = await insert_generation(pool, project_id)
    dead = await insert_generation(pool, project_id)
    presence = Presence(database_url)
    await presence.acquire(await doing(pool, alive, queue))
    await doing(pool, dead, queue)
    fast = rescuer.FastRescuer(pool, [queue], grace_s=30, confirm_s=0.3, settle_s=0)
    try:
        assert await fast.run_once() == 0, "an absence is confirmed before it is acted on"
        await asyncio.sleep(0.4)
        assert await fast.run_once() == 1
        assert await job_of(pool, dead) == ("todo", 1)
        assert (await job_of(pool, alive))[0] == "doing"
        assert await fast.run_once() == 0
    finally:
        await presence.release()
    # Its lock released (the worker ended without unregistering), the other job goes back too,
    # once the server has dropped the lock (the session ends a moment after the close returns)
    # and the absence is confirmed.
    requeued = 0
    deadline = time.monotonic() + 10
    while not requeued and time.monotonic() < deadline:
        requeued = await fast.run_once()
        await asyncio.sleep(0.1)
    assert requeued == 1
    assert (await job_of(pool, alive))[0] == "todo"


async def test_the_fast_pass_waits_while_postgres_has_just_started(
    pool: AsyncConnectionPool, project_id: uuid.UUID
) -> None:
    queue = f"fast-rescue-{uuid.uuid4().hex[:8]}"
    dead = await insert_generation(pool, project_id)
    await doing(pool, dead, queue)
    fast = rescuer.FastRescuer(pool, [queue], grace_s=30, confirm_s=0, settle_s=10**9)
    assert await fast.run_once() == 0
    assert (await job_of(pool, dead))[0] == "doing"
