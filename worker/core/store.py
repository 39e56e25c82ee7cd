"""The typed door to the named queries (sql/queries/): one async function per query, taking a
pool or a connection and returning records (worker/core/models.py), so callers hold neither
connections nor row factories. Modelled on procrastinate's manager.

Every query the API and the worker run goes through here. Modules that own a record type of
their own (API keys, the model catalogue, metrics) call the generic helpers below with it; the
rest have a typed function, grouped by table as sql/queries/ is.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any, Literal, TypeAlias, TypeVar, cast
from uuid import UUID

import psycopg
from psycopg.rows import class_row, dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from worker.core.models import (
    Deletion,
    DeletionKind,
    Generation,
    ImageEvent,
    Project,
    Status,
    Step,
    StoredFile,
)
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


@asynccontextmanager
async def transaction(db: Db) -> AsyncIterator[Conn]:
    """A connection inside one transaction: the block's statements commit together or not at all."""
    async with connection(db) as conn, conn.transaction():
        yield conn


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


async def fetch_dicts(
    db: Db, name: str, params: Mapping[str, Any] | None = None
) -> list[dict[str, Any]]:
    async with connection(db) as conn:
        cur = conn.cursor(row_factory=dict_row)
        await cur.execute(query(name), params)
        return await cur.fetchall()


async def fetch_row(
    db: Db, name: str, params: Mapping[str, Any] | None = None
) -> tuple[Any, ...] | None:
    async with connection(db) as conn:
        cur = await conn.execute(query(name), params)
        return await cur.fetchone()


async def fetch_rows(
    db: Db, name: str, params: Mapping[str, Any] | None = None
) -> list[tuple[Any, ...]]:
    async with connection(db) as conn:
        cur = await conn.execute(query(name), params)
        return await cur.fetchall()


async def execute(db: Db, name: str, params: Mapping[str, Any] | None = None) -> None:
    async with connection(db) as conn:
        await conn.execute(query(name), params)


async def wrote(db: Db, name: str, params: Mapping[str, Any]) -> bool:
    """Runs a compare-and-set write (`... WHERE <expected state> RETURNING id`): whether it
    matched, i.e. whether the row was in the state the write expected."""
    return await fetch_row(db, name, params) is not None


async def ping(db: Db) -> None:
    async with connection(db) as conn:
        await conn.execute("SELECT 1")


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


async def insert_generations(conn: Conn, rows: Sequence[Mapping[str, Any]]) -> list[Generation]:
    """Many rows in the caller's transaction, pipelined: one round trip for the lot."""
    cur = conn.cursor(row_factory=class_row(Generation))
    await cur.executemany(query("insert_generation"), rows, returning=True)
    created: list[Generation] = []
    while True:
        row = await cur.fetchone()
        assert row is not None
        created.append(row)
        if not cur.nextset():
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
    """failed or cancelled → pending with a fresh attempt budget (the trigger defers a new job);
    None when not retryable."""
    return await fetch_one(
        db, "retry_generation", Generation, {"id": generation_id, "workspace_id": workspace_id}
    )


async def bulk_change(
    db: Db,
    verb: Literal["cancel", "retry"],
    workspace_id: UUID,
    statuses: Sequence[str],
    **filters: Any,
) -> int:
    """Cancels or retries every generation of the workspace in `statuses` that the filters
    (project_id, created_before, created_after; None = any) match; how many."""
    to_status = "cancelled" if verb == "cancel" else "pending"
    row = await fetch_row(
        db,
        "bulk_change",
        {
            "workspace_id": workspace_id,
            "statuses": list(statuses),
            "to_status": to_status,
            **filters,
        },
    )
    return int(row[0]) if row else 0


async def list_versions(db: Db, generation_id: UUID, workspace_id: UUID) -> list[Generation]:
    return await fetch_all(
        db, "list_versions", Generation, {"id": generation_id, "workspace_id": workspace_id}
    )


async def insert_edit(db: Db, params: Mapping[str, Any]) -> Generation | None:
    """The next version of a completed generation; None when it is no longer completed."""
    return await fetch_one(db, "insert_edit", Generation, params)


async def insert_regeneration(db: Db, params: Mapping[str, Any]) -> Generation | None:
    """The next version of a generation's history on its node; None when there is no such
    generation in the workspace."""
    return await fetch_one(db, "insert_regeneration", Generation, params)


async def set_mask(db: Db, generation_id: UUID, mask: StoredFile) -> Generation | None:
    return await fetch_one(
        db,
        "set_mask",
        Generation,
        {"id": generation_id, "mask_url": mask.url, "mask_key": mask.key},
    )


async def get_generation_for_worker(db: Db, generation_id: UUID) -> Generation | None:
    """The row whatever its workspace: the worker acts for every workspace."""
    return await fetch_one(db, "get_generation_for_worker", Generation, {"id": generation_id})


async def start_generation(
    db: Db,
    generation_id: UUID,
    *,
    count_attempt: bool,
    straight_to_processing: Collection[str] = (),
    processing_progress: int = 50,
) -> tuple[Generation | None, bool]:
    """pending/processing → processing at `fetching` (None: nothing to run), and whether it went
    on to `processing` in the same round trip (a provider in `straight_to_processing` with no
    source image has nothing to fetch). One pipeline, one transaction: both events happen, in
    order."""
    async with connection(db) as conn, conn.pipeline():
        cur = conn.cursor(row_factory=class_row(Generation))
        await cur.execute(
            query("start_generation"), {"id": generation_id, "count_attempt": int(count_attempt)}
        )
        advanced = None
        if straight_to_processing:
            advanced = await conn.execute(
                query("advance_to_processing"),
                {
                    "id": generation_id,
                    "providers": list(straight_to_processing),
                    "progress": processing_progress,
                },
            )
        generation = await cur.fetchone()
        advanced_now = bool(
            generation is not None and advanced is not None and await advanced.fetchone()
        )
    if generation is not None and advanced_now:
        generation.step, generation.progress = "processing", processing_progress
    return generation, advanced_now


async def set_step(db: Db, generation_id: UUID, step: Step, progress: int) -> bool:
    return await wrote(db, "set_step", {"id": generation_id, "step": step, "progress": progress})


async def set_provider_job(db: Db, generation_id: UUID, provider_job_id: str) -> bool:
    return await wrote(
        db, "set_provider_job", {"id": generation_id, "provider_job_id": provider_job_id}
    )


async def reschedule_generation(
    db: Db, generation_id: UUID, task_name: str, delay_s: float, args: dict[str, Any]
) -> bool:
    return await wrote(
        db,
        "reschedule_generation",
        {"id": generation_id, "task_name": task_name, "delay_s": delay_s, "args": Jsonb(args)},
    )


async def complete_generation(
    db: Db,
    generation_id: UUID,
    result: StoredFile,
    metadata: dict[str, Any],
    thumbnail: StoredFile | None = None,
    *,
    saving_progress: int | None = None,
) -> bool:
    """Completes a processing generation with its result (and its thumbnail, NULL when none
    could be made) in one compare-and-set write. With `saving_progress`, its `saving` step is
    written just before, in the same round trip and transaction (one pipeline): both events
    happen, in order, for one commit."""
    params = {
        "id": generation_id,
        "result_image_url": result.url,
        "result_key": result.key,
        "thumbnail_url": thumbnail.url if thumbnail else None,
        "thumbnail_key": thumbnail.key if thumbnail else None,
        "metadata": Jsonb(metadata),
    }
    if saving_progress is None:
        return await wrote(db, "complete_generation", params)
    async with connection(db) as conn, conn.pipeline():
        await conn.execute(
            query("set_step"),
            {"id": generation_id, "step": "saving", "progress": saving_progress},
        )
        completed = await conn.execute(query("complete_generation"), params)
        return await completed.fetchone() is not None


async def fail_generation(db: Db, generation_id: UUID, error_code: str, error_message: str) -> bool:
    return await wrote(
        db,
        "fail_generation",
        {"id": generation_id, "error_code": error_code, "error_message": error_message},
    )


# Group commit (worker/queue/committer.py): the same write for many generations in one call,
# one statement and one transaction (sql/migrations/030). Each returns what it wrote; a
# generation the write did not match is absent.


async def start_generations(
    db: Db,
    ids: Sequence[UUID],
    count_attempts: Sequence[bool],
    advance_providers: Sequence[Collection[str]],
    progresses: Sequence[int],
) -> dict[UUID, Generation]:
    """Starts, each going on to `processing` when it has nothing to fetch and its provider is
    among its `advance_providers` (its returned step says whether it did)."""
    rows = await fetch_all(
        db,
        "start_generations",
        Generation,
        {
            "ids": ids,
            "count_attempts": [int(count) for count in count_attempts],
            "advance_providers": [",".join(names) or None for names in advance_providers],
            "progresses": progresses,
        },
    )
    return {generation.id: generation for generation in rows}


async def set_steps(
    db: Db, ids: Sequence[UUID], steps: Sequence[Step], progresses: Sequence[int]
) -> set[UUID]:
    rows = await fetch_rows(db, "set_steps", {"ids": ids, "steps": steps, "progresses": progresses})
    return {row[0] for row in rows}


async def complete_generations(
    db: Db,
    ids: Sequence[UUID],
    results: Sequence[StoredFile],
    thumbnails: Sequence[StoredFile | None],
    metadata: Sequence[dict[str, Any]],
    saving_progresses: Sequence[int | None],
) -> set[UUID]:
    """Completions, each with its `saving` step just before when it has a progress for it."""
    rows = await fetch_rows(
        db,
        "complete_generations",
        {
            "ids": ids,
            "result_image_urls": [result.url for result in results],
            "result_keys": [result.key for result in results],
            "thumbnail_urls": [thumbnail.url if thumbnail else None for thumbnail in thumbnails],
            "thumbnail_keys": [thumbnail.key if thumbnail else None for thumbnail in thumbnails],
            "metadata": [Jsonb(value) for value in metadata],
            "saving_progresses": saving_progresses,
        },
    )
    return {row[0] for row in rows}


async def fail_generations(
    db: Db, ids: Sequence[UUID], error_codes: Sequence[str], error_messages: Sequence[str]
) -> set[UUID]:
    rows = await fetch_rows(
        db,
        "fail_generations",
        {"ids": ids, "error_codes": error_codes, "error_messages": error_messages},
    )
    return {row[0] for row in rows}


async def queue_position(db: Db, generation_id: UUID) -> int | None:
    """Runnable generation jobs ahead of a pending generation's (None unless it waits)."""
    row = await fetch_row(db, "queue_position", {"id": generation_id})
    return None if row is None or row[0] is None else int(row[0])


async def wait_for_slot(db: Db, generation_id: UUID, delay_s: float) -> bool:
    """Re-queues a run its workspace's concurrency cap refused, in the same place, for later;
    whether the generation was still waiting to run."""
    return await wrote(db, "wait_for_slot", {"id": generation_id, "delay_s": delay_s})


async def expire_generation(db: Db, generation_id: UUID) -> bool:
    """Fails it with `timeout` if it is unfinished past its deadline (aborting its job and
    asking the provider to stop); whether it did."""
    row = await fetch_row(db, "expire_generation", {"id": generation_id})
    return bool(row and row[0])


async def give_up_on_exhausted_generations(
    db: Db, stalled_job_ids: Sequence[int], grace_s: float, max_attempts: int
) -> list[UUID]:
    """Fails with `timeout` the unfinished generations out of attempts whose job is stalled or
    gone; their ids."""
    rows = await fetch_rows(
        db,
        "give_up_on_exhausted_generations",
        {
            "stalled_job_ids": list(stalled_job_ids),
            "grace_s": grace_s,
            "max_attempts": max_attempts,
        },
    )
    return [row[0] for row in rows]


async def jobs_of_absent_workers(
    db: Db,
    queues: Sequence[str],
    *,
    namespace: int,
    settle_s: float,
    job_ids: Sequence[int] | None = None,
) -> list[int]:
    """`doing` jobs whose worker's presence lock is not held (only `job_ids` when given); in a
    transaction they stay locked (FOR UPDATE SKIP LOCKED) until it ends."""
    rows = await fetch_rows(
        db,
        "jobs_of_absent_workers",
        {
            "queues": list(queues),
            "namespace": namespace,
            "settle_s": settle_s,
            "job_ids": None if job_ids is None else list(job_ids),
        },
    )
    return [row[0] for row in rows]


async def requeue_jobs(db: Db, job_ids: Sequence[int]) -> list[int]:
    """Puts `doing` jobs back to `todo` (attempt + 1) and wakes their queues' workers; their ids."""
    rows = await fetch_rows(db, "requeue_jobs", {"job_ids": list(job_ids)})
    return [row[0] for row in rows]


async def rescue_orphaned_generations(db: Db, grace_s: float) -> list[UUID]:
    """Gives a new job to pending/processing generations whose job is gone; their ids."""
    rows = await fetch_rows(db, "rescue_orphaned_generations", {"grace_s": grace_s})
    return [row[0] for row in rows]


# --- batches -----------------------------------------------------------------------------------


async def insert_batch(
    conn: Conn, workspace_id: UUID, idempotency_key: str | None, size: int
) -> UUID:
    row = await fetch_row(
        conn,
        "insert_batch",
        {"workspace_id": workspace_id, "idempotency_key": idempotency_key, "size": size},
    )
    assert row is not None
    return UUID(str(row[0]))


async def get_batch_by_idempotency_key(
    db: Db, workspace_id: UUID, idempotency_key: str
) -> UUID | None:
    row = await fetch_row(
        db,
        "get_batch_by_idempotency_key",
        {"workspace_id": workspace_id, "idempotency_key": idempotency_key},
    )
    return None if row is None else UUID(str(row[0]))


async def list_batch_generations(db: Db, batch_id: UUID, workspace_id: UUID) -> list[Generation]:
    return await fetch_all(
        db,
        "list_batch_generations",
        Generation,
        {"batch_id": batch_id, "workspace_id": workspace_id},
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


async def get_project_even_deleting(db: Db, project_id: UUID, workspace_id: UUID) -> Project | None:
    """The project, also while a delete of it runs (its stream shows the progress)."""
    return await fetch_one(
        db, "get_project_even_deleting", Project, {"id": project_id, "workspace_id": workspace_id}
    )


async def get_project_for_stream(db: Db, project_id: UUID) -> Project | None:
    """The row whatever its workspace: the stream checked access when it opened."""
    return await fetch_one(db, "get_project_for_stream", Project, {"id": project_id})


async def projects_in_workspace(
    db: Db, project_ids: Sequence[UUID], workspace_id: UUID
) -> set[UUID]:
    rows = await fetch_rows(
        db, "projects_in_workspace", {"ids": list(project_ids), "workspace_id": workspace_id}
    )
    return {row[0] for row in rows}


# --- deletes (sql/migrations/025) ------------------------------------------------------------


async def deletion_targets(
    db: Db, generation_id: UUID, workspace_id: UUID, *, cascade: bool
) -> list[Generation]:
    """The generation, or with `cascade` every version of its history; [] when not there."""
    return await fetch_all(
        db,
        "deletion_targets",
        Generation,
        {"id": generation_id, "workspace_id": workspace_id, "cascade": cascade},
    )


async def generations_by_ids(
    db: Db, generation_ids: Sequence[UUID], workspace_id: UUID
) -> list[Generation]:
    return await fetch_all(
        db,
        "generations_by_ids",
        Generation,
        {"ids": list(generation_ids), "workspace_id": workspace_id},
    )


async def cancel_for_delete(
    db: Db, generation_ids: Sequence[UUID], workspace_id: UUID
) -> list[UUID]:
    """Cancels the pending or processing ones (their jobs are cancelled or aborted); their ids."""
    rows = await fetch_rows(
        db, "cancel_for_delete", {"ids": list(generation_ids), "workspace_id": workspace_id}
    )
    return [row[0] for row in rows]


async def jobs_running(db: Db, job_ids: Sequence[int]) -> int:
    """How many of these procrastinate jobs a worker is still running."""
    row = await fetch_row(db, "jobs_running", {"job_ids": list(job_ids)})
    return int(row[0]) if row else 0


async def keys_in_use(
    db: Db, workspace_id: UUID, keys: Sequence[str], generation_ids: Sequence[UUID]
) -> set[str]:
    """Of `keys`, those a generation of the same histories outside `generation_ids` still uses."""
    rows = await fetch_rows(
        db,
        "keys_in_use",
        {"workspace_id": workspace_id, "keys": list(keys), "ids": list(generation_ids)},
    )
    return {str(row[0]) for row in rows}


async def delete_generations(
    conn: Conn,
    workspace_id: UUID,
    seen: Mapping[UUID, datetime],
    *,
    whole_history: bool,
) -> list[tuple[UUID, UUID]]:
    """Deletes those of the generations that are finished and unchanged since `seen` (their
    updated_at when their files were removed), in the caller's transaction; (id, project_id)
    of each deleted one."""
    ids = list(seen)
    rows = await fetch_rows(
        conn,
        "delete_generations",
        {
            "workspace_id": workspace_id,
            "ids": ids,
            "seen": [seen[i] for i in ids],
            "whole_history": whole_history,
        },
    )
    return [(row[0], row[1]) for row in rows]


async def insert_deletion(
    db: Db,
    workspace_id: UUID,
    kind: DeletionKind,
    target_id: UUID,
    deleted_by: str,
    detail: Mapping[str, Any],
) -> Deletion:
    created = await fetch_one(
        db,
        "insert_deletion",
        Deletion,
        {
            "workspace_id": workspace_id,
            "kind": kind,
            "target_id": target_id,
            "deleted_by": deleted_by,
            "detail": Jsonb(dict(detail)),
        },
    )
    assert created is not None
    return created


async def get_deletion(db: Db, deletion_id: int, workspace_id: UUID) -> Deletion | None:
    return await fetch_one(
        db, "get_deletion", Deletion, {"id": deletion_id, "workspace_id": workspace_id}
    )


async def get_deletion_for_worker(db: Db, deletion_id: int) -> Deletion | None:
    return await fetch_one(db, "get_deletion_for_worker", Deletion, {"id": deletion_id})


async def start_project_deletion(
    db: Db, project_id: UUID, workspace_id: UUID, deleted_by: str
) -> Deletion | None:
    """Marks the project as being deleted, records it and defers the `delete_project` job;
    None when the project is not there or already being deleted."""
    return await fetch_one(
        db,
        "start_project_deletion",
        Deletion,
        {"id": project_id, "workspace_id": workspace_id, "deleted_by": deleted_by},
    )


async def resume_project_deletion(db: Db, project_id: UUID, workspace_id: UUID) -> Deletion | None:
    """The running delete of the project, with a new job if its last one ended; None when no
    delete of it runs."""
    return await fetch_one(
        db, "resume_project_deletion", Deletion, {"id": project_id, "workspace_id": workspace_id}
    )


async def workspace_project_ids(db: Db, workspace_id: UUID) -> list[UUID]:
    rows = await fetch_rows(db, "workspace_project_ids", {"workspace_id": workspace_id})
    return [row[0] for row in rows]


async def project_generation_batch(db: Db, project_id: UUID, limit: int) -> list[UUID]:
    rows = await fetch_rows(
        db, "project_generation_batch", {"project_id": project_id, "limit": limit}
    )
    return [row[0] for row in rows]


async def record_deletion_progress(db: Db, deletion_id: int, detail: Mapping[str, Any]) -> None:
    """Merges `detail` into the delete's and tells the project stream."""
    await execute(
        db, "record_deletion_progress", {"id": deletion_id, "detail": Jsonb(dict(detail))}
    )


async def finish_project_deletion(db: Db, deletion_id: int, detail: Mapping[str, Any]) -> bool:
    """Deletes the project row once it has no generation left and marks the delete done;
    whether it did."""
    row = await fetch_row(
        db, "finish_project_deletion", {"id": deletion_id, "detail": Jsonb(dict(detail))}
    )
    return row is not None


# --- workflow nodes ----------------------------------------------------------------------------


def _position(value: Any) -> dict[str, Any]:
    # The column is any jsonb; only an object is a position.
    return dict(value) if isinstance(value, dict) else {}


async def workflow_nodes(
    db: Db, workflow_id: UUID, workspace_id: UUID, ids: list[str] | None = None
) -> list[tuple[str, str, dict[str, Any], dict[str, Any]]]:
    """(id, node_type, node_data, position) of a workflow's nodes, or of those of them named in
    `ids`. `position` is the canvas's `{x, y}` (React Flow), `{}` when never placed."""
    rows = await fetch_rows(
        db,
        "workflow_nodes",
        {"workflow_id": workflow_id, "workspace_id": workspace_id, "ids": ids},
    )
    return [(str(r[0]), str(r[1]), dict(r[2]), _position(r[3])) for r in rows]


async def workflow_visible(db: Db, workflow_id: UUID, workspace_id: UUID) -> bool:
    """Whether the workspace has a node or a generation in the workflow."""
    row = await fetch_row(
        db, "workflow_visible", {"workflow_id": workflow_id, "workspace_id": workspace_id}
    )
    return bool(row and row[0])


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


async def log_event(
    db: Db, generation_id: UUID, kind: str, message: str, data: dict[str, Any] | None = None
) -> bool:
    """An event row of a generation that is not terminal yet; whether it was written."""
    return await wrote(
        db,
        "log_event",
        {"id": generation_id, "kind": kind, "message": message, "data": Jsonb(data or {})},
    )


Cursor: TypeAlias = tuple[str, int]  # (txid, id): a position in a project's commit order


async def project_events_after(
    db: Db, project_id: UUID, cursor: Cursor, limit: int
) -> list[tuple[ImageEvent, bool]]:
    """A project's events past `cursor` in commit order, each with whether it is below the
    horizon (no transaction still open could commit an event before it)."""
    rows = await fetch_dicts(
        db,
        "project_events_after",
        {"project_id": project_id, "txid": cursor[0], "after_id": cursor[1], "limit": limit},
    )
    events = []
    for row in rows:
        ready = bool(row.pop("ready"))
        events.append((ImageEvent(**row), ready))
    return events


async def project_cursor_of_event(db: Db, project_id: UUID, event_id: int) -> Cursor | None:
    row = await fetch_row(db, "project_cursor_of_event", {"id": event_id, "project_id": project_id})
    return (str(row[0]), event_id) if row is not None else None


async def project_cursor_now(db: Db, project_id: UUID) -> Cursor | None:
    """After the project's newest event below the horizon; None when it has none."""
    row = await fetch_row(db, "project_cursor_now", {"project_id": project_id})
    return (str(row[0]), int(row[1])) if row is not None else None


# --- webhooks ----------------------------------------------------------------------------------


async def record_webhook_delivery(
    db: Db, delivery_id: str, provider: str, generation_id: UUID | None, payload: Any
) -> bool:
    """Stores a provider callback once; False when this delivery id was stored before."""
    return await wrote(
        db,
        "record_webhook_delivery",
        {
            "id": delivery_id,
            "provider": provider,
            "generation_id": generation_id,
            "payload": Jsonb(payload),
        },
    )


async def get_webhook_delivery(db: Db, delivery_id: str) -> tuple[str, Any] | None:
    """(provider, payload) of a stored provider callback."""
    row = await fetch_row(db, "get_webhook_delivery", {"id": delivery_id})
    return (str(row[0]), row[1]) if row is not None else None


async def receive_webhook(
    db: Db, delivery_id: str, provider: str, provider_job_id: str | None, payload: Any, state: str
) -> Literal["accepted", "duplicate", "unknown_job", "ignored"]:
    """A provider callback recorded once and, for a generation still running, its event
    written and `finish_from_webhook` deferred: one round trip."""
    row = await fetch_row(
        db,
        "receive_webhook",
        {
            "id": delivery_id,
            "provider": provider,
            "provider_job_id": provider_job_id,
            "payload": Jsonb(payload),
            "state": state,
        },
    )
    assert row is not None
    return cast(Literal["accepted", "duplicate", "unknown_job", "ignored"], row[0])


async def record_webhook_attempt(db: Db, attempt: Mapping[str, Any]) -> None:
    """One outgoing delivery attempt (generation_id, event_id, message_id, type, attempt,
    status_code, error, duration_ms)."""
    await execute(db, "record_webhook_attempt", attempt)


# --- rate limits and members -------------------------------------------------------------------


async def acquire_rate(db: Db, provider: str, max_requests: int, window_s: float) -> float:
    """0 when a provider request may be sent now (and it is counted); else seconds to wait."""
    row = await fetch_row(
        db,
        "acquire_rate",
        {"provider": provider, "max_requests": max_requests, "window_s": window_s},
    )
    assert row is not None
    return 0.0 if row[0] else float(row[1])


async def hit_api_rate(
    db: Db, rate_key: str, max_requests: int, window_s: int
) -> tuple[bool, int, int]:
    """Counts one request against `rate_key`: (allowed, remaining, seconds to reset)."""
    row = await fetch_row(
        db,
        "hit_api_rate",
        {"rate_key": rate_key, "max_requests": max_requests, "window_s": window_s},
    )
    assert row is not None
    return bool(row[0]), int(row[1]), int(row[2])


async def user_workspaces(db: Db, user_id: UUID) -> frozenset[UUID]:
    return frozenset(
        row[0] for row in await fetch_rows(db, "user_workspaces", {"user_id": user_id})
    )


# --- retention ---------------------------------------------------------------------------------

# The tables imagejobs_prune (sql/migrations/024) keeps in check.
PruneTarget: TypeAlias = Literal[
    "image_events", "procrastinate_jobs", "webhook_deliveries", "outgoing_webhook_attempts"
]


async def prune_batch(db: Db, target: PruneTarget, older_than_s: float, batch_size: int) -> int:
    """Deletes at most `batch_size` of the target's rows older than `older_than_s` (one
    statement, rows other transactions hold skipped); how many went."""
    row = await fetch_row(
        db,
        "prune_batch",
        {"target": target, "older_than_s": older_than_s, "batch_size": batch_size},
    )
    return int(row[0]) if row else 0


async def prune_due(db: Db, target: PruneTarget, older_than_s: float) -> int:
    """How many of the target's rows are older than `older_than_s` and would be pruned."""
    row = await fetch_row(db, "prune_due", {"target": target, "older_than_s": older_than_s})
    return int(row[0]) if row else 0


async def expiring_results(
    conn: Conn, older_than_s: float, limit: int
) -> list[tuple[UUID, list[str]]]:
    """Finished generations older than `older_than_s` that still have files, with their
    files' keys, locked until the caller's transaction ends (run it inside one)."""
    rows = await fetch_rows(
        conn, "expiring_results", {"older_than_s": older_than_s, "limit": limit}
    )
    return [(row[0], [key for key in row[1:] if key]) for row in rows]


async def forget_results(conn: Conn, generation_ids: Sequence[UUID]) -> None:
    """Clears the keys and URLs of these generations' files (deleted from storage)."""
    await execute(conn, "forget_results", {"ids": list(generation_ids)})


async def expiring_results_due(db: Db, older_than_s: float) -> int:
    row = await fetch_row(db, "expiring_results_due", {"older_than_s": older_than_s})
    return int(row[0]) if row else 0
