"""The fetch's plan (migration 033): a page of the queue is read by walking procrastinate's
(priority DESC, id) index, even in a session whose plans were made while the queue was empty.
Read from auto_explain's account of the statements inside the fetch.

Which plan Postgres picks for a table it believes empty depends on the sizes of its indexes:
in the in-flight benchmark it was a scan of every queued job and a sort, kept for the worker's
session; a small database here does not always reproduce that choice, so the test also holds
the fetch to the setting that rules sorts out."""

from __future__ import annotations

import uuid

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from tests.sql.helpers import Conn, fetch_value


async def test_a_page_is_an_index_walk_even_with_plans_made_on_an_empty_queue(
    pool: AsyncConnectionPool, conn: Conn
) -> None:
    queue = f"plan-{uuid.uuid4().hex[:8]}"
    plans: list[str] = []
    async with pool.connection() as worker:
        worker_id = await fetch_value(
            worker, "SELECT worker_id FROM procrastinate_register_worker_v1()"
        )
        fetch = "SELECT id FROM procrastinate_fetch_job_v2(ARRAY[%s]::varchar[], %s)"
        # A worker polls its empty queue: after five runs Postgres keeps a generic plan.
        for _ in range(8):
            assert await fetch_value(worker, fetch, (queue, worker_id)) is None
        await conn.execute(
            "SELECT procrastinate_defer_jobs_v1(array_agg(ROW(%s, 'noop', 0, NULL, NULL,"
            " '{}'::jsonb, NULL)::procrastinate_job_to_defer_v1)) FROM generate_series(1, 2000)",
            (queue,),
        )

        def keep(diagnostic: psycopg.errors.Diagnostic) -> None:
            if diagnostic.message_primary and "FROM procrastinate_jobs AS jobs" in (
                diagnostic.message_primary
            ):
                plans.append(diagnostic.message_primary)

        try:
            await worker.execute("LOAD 'auto_explain'")
        except psycopg.errors.UndefinedFile:
            pytest.skip("this server has no auto_explain (the embedded one); PostgreSQL 15 has")
        worker.add_notice_handler(keep)
        try:
            await worker.execute("SET auto_explain.log_min_duration = 0")
            await worker.execute("SET auto_explain.log_nested_statements = on")
            await worker.execute("SET auto_explain.log_level = notice")
            assert await fetch_value(worker, fetch, (queue, worker_id)) is not None
        finally:
            worker.remove_notice_handler(keep)
            await worker.execute("RESET ALL")
    assert plans, "auto_explain reported no plan of the fetch's page"
    assert "procrastinate_jobs_priority_idx_v1" in plans[0], plans[0]
    assert "Sort" not in plans[0], plans[0]


async def test_the_fetch_rules_sorts_out(conn: Conn) -> None:
    config = await fetch_value(
        conn,
        "SELECT proconfig FROM pg_proc"
        " WHERE oid = 'procrastinate_fetch_job_v2(character varying[], bigint)'::regprocedure",
    )
    assert "enable_sort=off" in config
