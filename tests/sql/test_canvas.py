"""The canvas rules, held by the database (sql/migrations/016_canvas.sql) for every writer: the
worker, the API and a person with psql write the same UPDATEs these tests write.

The first three tests are the reproductions of issue 15: each failed before the migration."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import psycopg
from psycopg_pool import AsyncConnectionPool

from tests.sql.helpers import (
    Conn,
    fetch_dict,
    fetch_value,
    generation,
    insert_generation,
    update_generation,
    walk_to,
)
from worker.core.errors import MESSAGES, RESOLUTIONS, ErrorCode

WORKFLOW = uuid.UUID("6f9b2c1e-0d4a-4c55-9a55-3f6c9d0b7a10")
RESULT_1 = "https://cdn.example/v1.png"
RESULT_2 = "https://cdn.example/v2.png"


async def node(conn: Conn, workflow_id: uuid.UUID, node_id: str = "n1") -> dict[str, Any]:
    row = await fetch_dict(
        conn,
        "SELECT node_type, node_data FROM workflow_nodes WHERE workflow_id = %s AND id = %s",
        (workflow_id, node_id),
    )
    return {"node_type": row["node_type"], **row["node_data"]}


async def on_node(
    conn: Conn, project_id: uuid.UUID, workflow_id: uuid.UUID, **columns: Any
) -> uuid.UUID:
    return await insert_generation(
        conn, project_id, workflow_id=workflow_id, node_id="n1", job_id=-1, **columns
    )


async def complete(conn: Conn, generation_id: uuid.UUID, url: str) -> None:
    """What the worker writes: processing, then completed with the stored result."""
    await walk_to(conn, generation_id, "processing")
    await update_generation(
        conn,
        generation_id,
        status="completed",
        result_image_url=url,
        thumbnail_url=url.replace(".png", "-thumb.webp"),
    )


async def test_a_new_generation_keeps_the_nodes_image_while_it_runs(
    conn: Conn, project_id: uuid.UUID
) -> None:
    workflow = uuid.uuid4()
    first = await on_node(conn, project_id, workflow)
    await complete(conn, first, RESULT_1)
    second = await on_node(conn, project_id, workflow)
    assert (await node(conn, workflow))["imageUrl"] == RESULT_1
    await walk_to(conn, second, "processing")
    state = await node(conn, workflow)
    assert (state["status"], state["imageUrl"], state["thumbnailUrl"]) == (
        "running",
        RESULT_1,
        "https://cdn.example/v1-thumb.webp",
    )
    assert state["generationId"] == str(second)


async def test_an_older_generation_finishing_after_a_newer_one_never_lands(
    conn: Conn, project_id: uuid.UUID
) -> None:
    workflow = uuid.uuid4()
    older = await on_node(conn, project_id, workflow)
    await walk_to(conn, older, "processing")
    newer = await on_node(conn, project_id, workflow, prompt="newer")
    # The newer one finishes first; the older one's result arrives late, written as a worker
    # that did not see the supersede would write it (status processing -> completed).
    await complete(conn, newer, RESULT_2)
    late = await conn.execute(
        "UPDATE image_generations SET status = 'completed', result_image_url = %s"
        " WHERE id = %s AND status = 'processing'",
        (RESULT_1, older),
    )
    assert late.rowcount == 0  # the older one was cancelled when the newer one arrived
    assert (await generation(conn, older))["status"] == "cancelled"
    state = await node(conn, workflow)
    assert (state["imageUrl"], state["generationId"], state["status"]) == (
        RESULT_2,
        str(newer),
        "completed",
    )


async def test_a_late_result_of_a_generation_that_is_no_longer_current_is_ignored(
    conn: Conn, project_id: uuid.UUID
) -> None:
    """Even when nothing cancelled it (the older one had already left pending/processing and a
    person re-ran it by hand), only the node's current generation moves the node."""
    workflow = uuid.uuid4()
    older = await on_node(conn, project_id, workflow)
    await walk_to(conn, older, "failed")
    newer = await on_node(conn, project_id, workflow)
    await complete(conn, newer, RESULT_2)
    await update_generation(conn, older, status="pending")
    await complete(conn, older, RESULT_1)
    state = await node(conn, workflow)
    assert (state["imageUrl"], state["generationId"]) == (RESULT_2, str(newer))


async def test_a_failed_regenerate_keeps_the_image_and_says_what_to_do(
    conn: Conn, project_id: uuid.UUID
) -> None:
    workflow = uuid.uuid4()
    first = await on_node(conn, project_id, workflow)
    await complete(conn, first, RESULT_1)
    second = await on_node(conn, project_id, workflow, parent_id=first)
    await walk_to(conn, second, "processing")
    await update_generation(
        conn,
        second,
        status="failed",
        error_code="content_policy",
        error_message=MESSAGES[ErrorCode.CONTENT_POLICY],
    )
    state = await node(conn, workflow)
    assert state["status"] == "error"
    assert state["imageUrl"] == RESULT_1
    assert state["version"] == 2
    assert state["error"] == {
        "code": "content_policy",
        "message": MESSAGES[ErrorCode.CONTENT_POLICY],
        "resolution": RESOLUTIONS[ErrorCode.CONTENT_POLICY],
    }


async def test_node_status_speaks_the_canvas_words(conn: Conn, project_id: uuid.UUID) -> None:
    workflow = uuid.uuid4()
    generation_id = await on_node(conn, project_id, workflow)
    seen = [(await node(conn, workflow))["status"]]
    await walk_to(conn, generation_id, "processing")
    seen.append((await node(conn, workflow))["status"])
    await update_generation(conn, generation_id, status="completed", result_image_url=RESULT_1)
    seen.append((await node(conn, workflow))["status"])
    assert seen == ["pending", "running", "completed"]
    state = await node(conn, workflow)
    assert state["node_type"] == "image_generation"
    assert state["error"] is None
    assert {"generationId", "version", "updatedAt"} <= state.keys()
    cancelled = await on_node(conn, project_id, workflow)
    await update_generation(conn, cancelled, status="cancelled")
    state = await node(conn, workflow)
    assert (state["status"], state["error"]["code"], state["imageUrl"]) == (
        "error",
        "cancelled",
        RESULT_1,
    )


async def test_a_newer_generation_supersedes_unfinished_work_on_its_node(
    conn: Conn, project_id: uuid.UUID
) -> None:
    workflow = uuid.uuid4()
    pending = await on_node(conn, project_id, workflow)
    running = await on_node(conn, project_id, workflow)
    await walk_to(conn, running, "processing")
    await update_generation(conn, running, provider_job_id="provider-job-1")
    elsewhere = await insert_generation(
        conn, project_id, workflow_id=workflow, node_id="n2", job_id=-1
    )
    newest = await on_node(conn, project_id, workflow)
    for superseded, by in ((pending, running), (running, newest)):
        row = await generation(conn, superseded)
        assert (row["status"], row["error_code"]) == ("cancelled", "cancelled")
        assert row["error_message"] == f"Superseded by generation {by} on node n1"
    assert (await generation(conn, elsewhere))["status"] == "pending"
    # The provider is asked to stop the running one's work.
    asked = await fetch_value(
        conn,
        "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'cancel_provider_job'"
        " AND args->>'generation_id' = %s",
        (str(running),),
    )
    assert asked == 1


async def test_concurrent_edits_of_one_root_get_distinct_versions(
    pool: AsyncConnectionPool, conn: Conn, project_id: uuid.UUID
) -> None:
    """Before the version trigger, 20 parallel edits got versions 2,2,2,2,3,3,4x9,5x5."""
    root = await insert_generation(conn, project_id, job_id=-1)

    async def child() -> None:
        async with pool.connection() as own:
            await insert_generation(own, project_id, parent_id=root, job_id=-1, version=2)

    await asyncio.gather(*(child() for _ in range(20)))
    cur = await conn.execute(
        "SELECT version FROM image_generations WHERE parent_id = %s ORDER BY version", (root,)
    )
    assert [row[0] for row in await cur.fetchall()] == list(range(2, 22))
    assert (await generation(conn, root))["version"] == 1


async def test_every_error_code_has_the_catalogues_resolution(
    conn: Conn, project_id: uuid.UUID
) -> None:
    assert set(RESOLUTIONS) == set(ErrorCode)
    for code in ErrorCode:
        generation_id = await insert_generation(conn, project_id, job_id=-1)
        await update_generation(conn, generation_id, status="failed", error_code=code.value)
        row = await generation(conn, generation_id)
        assert row["error_resolution"] == RESOLUTIONS[code], code
    assert await fetch_value(conn, "SELECT imagejobs_error_resolution(NULL)") is None


async def test_retry_from_psql_gives_a_fresh_attempt_budget_and_a_job(
    conn: Conn, project_id: uuid.UUID
) -> None:
    for end in ("failed", "cancelled"):
        generation_id = await insert_generation(conn, project_id)
        await walk_to(conn, generation_id, "processing")
        await update_generation(conn, generation_id, attempts=3)
        await update_generation(conn, generation_id, status=end)
        before = await generation(conn, generation_id)
        await update_generation(conn, generation_id, status="pending")
        after = await generation(conn, generation_id)
        assert (after["status"], after["attempts"], after["error_code"]) == ("pending", 0, None)
        assert after["job_id"] != before["job_id"]
        job = await fetch_value(
            conn, "SELECT status FROM procrastinate_jobs WHERE id = %s", (after["job_id"],)
        )
        assert job == "todo", end


async def test_a_new_generation_on_a_node_and_a_worker_finishing_the_old_one_do_not_deadlock(
    pool: AsyncConnectionPool, database_url: str, project_id: uuid.UUID
) -> None:
    """The inserter cancels the node's older work; a worker completes that work at the same
    moment. Both take the older row before the project's counters (migration 028): one waits
    for the other instead of Postgres failing one of them with a deadlock."""
    workflow_id = uuid.uuid4()
    old = await insert_generation(
        pool, project_id, workflow_id=workflow_id, node_id="n1", job_id=-1
    )
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE image_generations SET status = 'processing', step = 'processing' WHERE id = %s",
            (old,),
        )
    # Connections of their own: one holds a transaction open, and both change settings.
    async with (
        await psycopg.AsyncConnection.connect(database_url) as worker,
        await psycopg.AsyncConnection.connect(database_url, autocommit=True) as inserter,
    ):
        await worker.execute("SET deadlock_timeout = '100ms'")
        # The worker holds the older generation's row, as its complete write does...
        await worker.execute("SELECT 1 FROM image_generations WHERE id = %s FOR UPDATE", (old,))
        insert = asyncio.create_task(
            inserter.execute(
                "INSERT INTO image_generations (project_id, prompt, workflow_id, node_id, job_id)"
                " VALUES (%s, 'newer', %s, 'n1', -1) RETURNING id",
                (project_id, workflow_id),
            )
        )
        await asyncio.sleep(0.3)  # ...while the insert runs into it
        # ...and then changes its status, which takes the project's row for the counters.
        await worker.execute(
            "UPDATE image_generations SET status = 'completed', result_image_url ="
            " 'https://cdn.example.com/old.png' WHERE id = %s",
            (old,),
        )
        await worker.commit()
        cur = await asyncio.wait_for(insert, 10)
        newer = (await cur.fetchone() or [None])[0]
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT status FROM image_generations WHERE id = %s", (old,))
        assert await cur.fetchone() == ("completed",)  # it finished before it was superseded
        cur = await conn.execute(
            "SELECT node_data->>'generationId' FROM workflow_nodes WHERE workflow_id = %s",
            (workflow_id,),
        )
        assert await cur.fetchone() == (str(newer),)
