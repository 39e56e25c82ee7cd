"""Fairness between workspaces and priority levels (sql/migrations/017_fair_queue.sql), through
procrastinate's own fetch function, as a worker takes jobs."""

from __future__ import annotations

import uuid

from psycopg_pool import AsyncConnectionPool

from tests.sql.helpers import Conn, create_project, fetch_value, insert_generation


async def take(conn: Conn, count: int) -> list[uuid.UUID]:
    """The generations of the next `count` jobs procrastinate hands a worker of this test."""
    worker_id = await fetch_value(conn, "SELECT worker_id FROM procrastinate_register_worker_v1()")
    taken: list[uuid.UUID] = []
    for _ in range(count):
        cur = await conn.execute(
            "SELECT args->>'generation_id' FROM procrastinate_fetch_job_v2(ARRAY['images'], %s)"
            " WHERE id IS NOT NULL",
            (worker_id,),
        )
        row = await cur.fetchone()
        if row is None:
            break
        taken.append(uuid.UUID(row[0]))
    return taken


async def only_our_jobs(conn: Conn, keep: list[uuid.UUID]) -> None:
    """Other tests' queued jobs share the table: park them (scheduled far ahead), those of no
    generation too (a project's deletion)."""
    await conn.execute(
        "UPDATE procrastinate_jobs SET scheduled_at = now() + interval '1 day'"
        " WHERE status = 'todo' AND NOT coalesce(args->>'generation_id' = ANY (%s), false)",
        ([str(g) for g in keep],),
    )


async def test_one_workspaces_backlog_does_not_delay_anothers_next_job(
    pool: AsyncConnectionPool, conn: Conn
) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    project_a, project_b = await create_project(conn, a), await create_project(conn, b)
    backlog = [await insert_generation(conn, project_a) for _ in range(200)]
    single = await insert_generation(conn, project_b)
    await only_our_jobs(conn, [*backlog, single])
    async with pool.connection() as worker:
        order = await take(worker, 5)
    # B's one generation runs second: after A's head, not after A's 200.
    assert order[:2] == [backlog[0], single]
    # A's own order is first-in first-out.
    assert order[2:] == backlog[1:4]


async def test_workspaces_with_backlogs_take_turns(pool: AsyncConnectionPool, conn: Conn) -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    project_a, project_b = await create_project(conn, a), await create_project(conn, b)
    from_a = [await insert_generation(conn, project_a) for _ in range(20)]
    from_b = [await insert_generation(conn, project_b) for _ in range(20)]
    await only_our_jobs(conn, [*from_a, *from_b])
    async with pool.connection() as worker:
        order = await take(worker, 10)
    owners = ["a" if g in from_a else "b" for g in order]
    assert owners.count("a") == owners.count("b") == 5, owners


async def test_interactive_overtakes_batch_of_the_same_workspace(
    pool: AsyncConnectionPool, conn: Conn
) -> None:
    project = await create_project(conn, uuid.uuid4())
    batch = [await insert_generation(conn, project, priority=-1) for _ in range(50)]
    interactive = await insert_generation(conn, project)  # 0, the default
    urgent = await insert_generation(conn, project, priority=3)
    await only_our_jobs(conn, [*batch, interactive, urgent])
    async with pool.connection() as worker:
        order = await take(worker, 3)
    assert order == [urgent, interactive, batch[0]]


async def test_a_retry_and_the_rescuer_keep_the_generations_level(
    conn: Conn, project_id: uuid.UUID
) -> None:
    generation_id = await insert_generation(conn, project_id, priority=-2)
    first = await fetch_value(
        conn,
        "SELECT j.priority FROM procrastinate_jobs j JOIN image_generations g ON g.job_id = j.id"
        " WHERE g.id = %s",
        (generation_id,),
    )
    await conn.execute(
        "UPDATE image_generations SET status = 'failed' WHERE id = %s", (generation_id,)
    )
    await conn.execute(
        "UPDATE image_generations SET status = 'pending' WHERE id = %s", (generation_id,)
    )
    again = await fetch_value(
        conn,
        "SELECT j.priority FROM procrastinate_jobs j JOIN image_generations g ON g.job_id = j.id"
        " WHERE g.id = %s",
        (generation_id,),
    )
    level = 2**29
    assert -3 * level < first <= -2 * level and -3 * level < again <= -2 * level
    assert again < first, "a later job of the same workspace and level queues behind"
    requeued = await fetch_value(
        conn, "SELECT imagejobs_defer_generation(%s, 'generate_image')", (generation_id,)
    )
    assert requeued is not None
    priority = await fetch_value(
        conn, "SELECT priority FROM procrastinate_jobs WHERE id = %s", (requeued,)
    )
    assert -3 * level < priority < again
