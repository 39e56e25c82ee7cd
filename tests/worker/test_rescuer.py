"""The rescuer against a real procrastinate schema: what a dead worker left behind runs again,
unless it has used its attempts, in which case it fails with `timeout` and says why."""

from __future__ import annotations

import uuid

from procrastinate import App, PsycopgConnector
from psycopg_pool import AsyncConnectionPool

from tests.factories import insert_generation
from tests.worker.conftest import generation_row
from worker.core.errors import MAX_ATTEMPTS
from worker.queue import rescuer


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
