"""The typed door to the named queries (sql/queries/): one async function per query, taking a
pool or a connection and returning records (worker/core/models.py), so callers hold neither
connections nor row factories. Modelled on procrastinate's manager.

Grown by use: generations, projects and a generation's events (the API's routes and the
generation stream) are here; the lifecycle, the project streams and the rate limits still run
their queries themselves (docs/decisions.md, session 3).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, TypeAlias, TypeVar
from uuid import UUID

import psycopg
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from worker.core.models import Generation, ImageEvent, Project, Status
from worker.core.sqlfiles import query

Conn: TypeAlias = psycopg.AsyncConnection[Any]
Db: TypeAlias = Conn | AsyncConnectionPool
R = TypeVar("R")


@asynccontextmanager
async def connection(db: Db) -> AsyncIterator[Conn]:
    """The connection itself, or one from the pool for the block."""
    if isinstance(db, AsyncConnectionPool):
        async with db.connection() as conn:
            yield conn
    else:
        yield db


async def fetch_one(db: Db, name: str, row: type[R], params: Mapping[str, Any]) -> R | None:
    async with connection(db) as conn:
        cur = conn.cursor(row_factory=class_row(row))
        await cur.execute(query(name), params)
        return await cur.fetchone()


async def fetch_all(db: Db, name: str, row: type[R], params: Mapping[str, Any]) -> list[R]:
    async with connection(db) as conn:
        cur = conn.cursor(row_factory=class_row(row))
        await cur.execute(query(name), params)
        return await cur.fetchall()


# --- generations -------------------------------------------------------------------------------


async def get_generation(db: Db, generation_id: UUID, workspace_id: UUID) -> Generation | None:
    return await fetch_one(
        db, "get_generation", Generation, {"id": generation_id, "workspace_id": workspace_id}
    )


async def get_generation_by_idempotency_key(
    db: Db, workspace_id: UUID, idempotency_key: str
) -> Generation | None:
    return await fetch_one(
        db,
        "get_generation_by_idempotency_key",
        Generation,
        {"workspace_id": workspace_id, "idempotency_key": idempotency_key},
    )


async def insert_generation(db: Db, params: Mapping[str, Any]) -> Generation:
    """One statement, committed on its own: the row, its job and its counters (the triggers)."""
    created = await fetch_one(db, "insert_generation", Generation, params)
    assert created is not None
    return created


async def list_generations(
    db: Db,
    workspace_id: UUID,
    *,
    project_id: UUID | None,
    status: Status | None,
    cursor_ts: datetime | None,
    cursor_id: UUID | None,
    limit: int,
) -> list[Generation]:
    return await fetch_all(
        db,
        "list_generations",
        Generation,
        {
            "workspace_id": workspace_id,
            "project_id": project_id,
            "status": status,
            "cursor_ts": cursor_ts,
            "cursor_id": cursor_id,
            "limit": limit,
        },
    )


async def cancel_generation(db: Db, generation_id: UUID, workspace_id: UUID) -> Generation | None:
    """pending/processing → cancelled (the trigger cancels the job); None when not cancellable."""
    return await fetch_one(
        db, "cancel_generation", Generation, {"id": generation_id, "workspace_id": workspace_id}
    )


async def retry_generation(db: Db, generation_id: UUID, workspace_id: UUID) -> Generation | None:
    """failed → pending (the trigger defers a new job); None when not retryable."""
    return await fetch_one(
        db, "retry_generation", Generation, {"id": generation_id, "workspace_id": workspace_id}
    )


async def list_versions(db: Db, generation_id: UUID, workspace_id: UUID) -> list[Generation]:
    return await fetch_all(
        db, "list_versions", Generation, {"id": generation_id, "workspace_id": workspace_id}
    )


async def insert_edit(db: Db, params: Mapping[str, Any]) -> Generation | None:
    """The next version of a completed generation; None when it is no longer completed."""
    return await fetch_one(db, "insert_edit", Generation, params)


async def set_mask_url(db: Db, generation_id: UUID, mask_url: str) -> Generation | None:
    return await fetch_one(
        db, "set_mask_url", Generation, {"id": generation_id, "mask_url": mask_url}
    )


# --- projects ----------------------------------------------------------------------------------


async def get_project(db: Db, project_id: UUID, workspace_id: UUID) -> Project | None:
    return await fetch_one(
        db, "get_project", Project, {"id": project_id, "workspace_id": workspace_id}
    )


async def insert_project(db: Db, workspace_id: UUID, name: str) -> Project:
    created = await fetch_one(
        db, "insert_project", Project, {"workspace_id": workspace_id, "name": name}
    )
    assert created is not None
    return created


async def list_projects(
    db: Db, workspace_id: UUID, *, cursor_ts: datetime | None, cursor_id: UUID | None, limit: int
) -> list[Project]:
    return await fetch_all(
        db,
        "list_projects",
        Project,
        {
            "workspace_id": workspace_id,
            "cursor_ts": cursor_ts,
            "cursor_id": cursor_id,
            "limit": limit,
        },
    )


# --- events ------------------------------------------------------------------------------------


async def generation_events_after(
    db: Db, generation_id: UUID, after_id: int, limit: int
) -> list[ImageEvent]:
    """A generation's events past `after_id`, oldest first, at most `limit` (SSE replay)."""
    return await fetch_all(
        db,
        "generation_events_after",
        ImageEvent,
        {"generation_id": generation_id, "after_id": after_id, "limit": limit},
    )


async def latest_state_event(db: Db, generation_id: UUID) -> ImageEvent | None:
    """The event that carries the generation's current state (the first SSE event)."""
    return await fetch_one(db, "latest_state_event", ImageEvent, {"generation_id": generation_id})


async def generation_last_event_id(db: Db, generation_id: UUID) -> int:
    """The id of the generation's newest event; 0 when it has none."""
    async with connection(db) as conn:
        cur = await conn.execute(
            query("generation_last_event_id"), {"generation_id": generation_id}
        )
        row = await cur.fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0
