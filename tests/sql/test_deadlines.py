"""Deadlines, delayed starts and queue positions for plain-SQL writers (migration 021)."""

from __future__ import annotations

import uuid

from tests.sql.helpers import Conn, fetch_value, generation, insert_generation, walk_to


async def test_an_inserted_deadline_schedules_its_expiry_and_expiry_fails_it(
    conn: Conn, project_id: uuid.UUID
) -> None:
    generation_id = await insert_generation(conn, project_id, deadline_at="2026-01-01T00:00:00Z")
    scheduled = await fetch_value(
        conn,
        "SELECT scheduled_at FROM procrastinate_jobs WHERE task_name = 'expire_generation'"
        " AND args->>'generation_id' = %s",
        (str(generation_id),),
    )
    assert scheduled is not None
    await walk_to(conn, generation_id, "processing")
    await conn.execute(
        "UPDATE image_generations SET provider_job_id = 'far-away' WHERE id = %s",
        (generation_id,),
    )
    job_id = (await generation(conn, generation_id))["job_id"]
    assert await fetch_value(conn, "SELECT imagejobs_expire_generation(%s)", (generation_id,))
    row = await generation(conn, generation_id)
    assert (row["status"], row["error_code"]) == ("failed", "timeout")
    assert row["error_message"] == "Not finished by its deadline (2026-01-01T00:00:00Z)"
    job = await fetch_value(conn, "SELECT status FROM procrastinate_jobs WHERE id = %s", (job_id,))
    assert job == "cancelled"
    asked = await fetch_value(
        conn,
        "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'cancel_provider_job'"
        " AND args->>'generation_id' = %s",
        (str(generation_id),),
    )
    assert asked == 1
    # Finished ones are left alone.
    assert not await fetch_value(conn, "SELECT imagejobs_expire_generation(%s)", (generation_id,))


async def test_a_future_deadline_is_not_expired_early(conn: Conn, project_id: uuid.UUID) -> None:
    generation_id = await insert_generation(
        conn, project_id, deadline_at="2099-01-01T00:00:00Z", job_id=-1
    )
    assert not await fetch_value(conn, "SELECT imagejobs_expire_generation(%s)", (generation_id,))
    assert (await generation(conn, generation_id))["status"] == "pending"


async def test_run_at_schedules_the_job(conn: Conn, project_id: uuid.UUID) -> None:
    generation_id = await insert_generation(conn, project_id, run_at="2099-01-01T00:00:00Z")
    job_id = (await generation(conn, generation_id))["job_id"]
    scheduled = await fetch_value(
        conn, "SELECT scheduled_at::text FROM procrastinate_jobs WHERE id = %s", (job_id,)
    )
    assert scheduled.startswith("2099-01-01")
    assert await fetch_value(conn, "SELECT imagejobs_queue_position(%s)", (job_id,)) is not None


async def test_queue_positions_follow_the_queue(conn: Conn, project_id: uuid.UUID) -> None:
    ids = [await insert_generation(conn, project_id) for _ in range(3)]
    jobs = [(await generation(conn, g))["job_id"] for g in ids]
    positions = [
        await fetch_value(conn, "SELECT imagejobs_queue_position(%s)", (job,)) for job in jobs
    ]
    assert positions[0] < positions[1] < positions[2]
    await walk_to(conn, ids[0], "processing")
    await conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (jobs[0],))
    assert await fetch_value(conn, "SELECT imagejobs_queue_position(%s)", (jobs[0],)) is None
    assert await fetch_value(conn, "SELECT imagejobs_queue_position(%s)", (jobs[1],)) == (
        positions[1] - 1
    )
