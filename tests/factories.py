"""The one factory for test rows: projects and generations inserted with plain SQL, as a person
with psql would (the triggers do the rest: workspace, default model, the job, the counters).

Both take a connection or a pool. `job_id=-1` makes a generation no worker will pick up (its
job is never deferred), for tests that drive it by hand."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
from psycopg import sql

from worker.core.store import Db, connection

PROMPT = "a lighthouse at dusk"


async def _insert(db: Db, table: str, values: dict[str, Any]) -> uuid.UUID:
    query = sql.SQL("INSERT INTO {} ({}) VALUES ({}) RETURNING id").format(
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, values)),
        sql.SQL(", ").join(map(sql.Placeholder, values)),
    )
    async with connection(db) as conn:
        cur = await conn.execute(query, values)
        row = await cur.fetchone()
    assert row is not None
    return uuid.UUID(str(row[0]))


async def create_project(db: Db, workspace_id: uuid.UUID, name: str = "test") -> uuid.UUID:
    return await _insert(db, "projects", {"workspace_id": workspace_id, "name": name})


async def insert_generation(db: Db, project_id: uuid.UUID, **columns: Any) -> uuid.UUID:
    """A generation of `project_id`; `prompt` defaults to a fixed text."""
    return await _insert(
        db, "image_generations", {"prompt": PROMPT, **columns, "project_id": project_id}
    )


def abandon_earlier_work(database_url: str) -> None:
    """Cancels the generations earlier tests left queued with no worker to run them (tests/api
    creates hundreds): a test's worker would otherwise work through them first, at this
    test's provider delay, before the jobs it waits for. Cancelling goes through the
    cancel trigger, so counters and jobs stay consistent."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE image_generations SET status = 'cancelled' "
            "WHERE status IN ('pending', 'processing')"
        )
