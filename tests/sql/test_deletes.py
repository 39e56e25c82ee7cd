"""Deletes (sql/migrations/025, worker/storage/deletes.py) on a real database: rows, files, counters,
versions, canvas nodes, the audit trail; storage failing half-way; a project in batches."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from psycopg import errors
from psycopg_pool import AsyncConnectionPool

from tests.emulators.recorder import Scripted
from tests.emulators.supabase_storage import StorageState
from tests.providers.supabase_fixtures import supabase_storage  # noqa: F401
from tests.sql.helpers import (
    Conn,
    assert_project_consistent,
    fetch_value,
    insert_generation,
    update_generation,
    walk_to,
)
from worker.core import store
from worker.storage import deletes
from worker.storage.local import LocalStorage
from worker.storage.supabase import SupabaseStorage

BY = "api_key:00000000-0000-0000-0000-000000000001"


@pytest.fixture
def storage(tmp_path: Path) -> LocalStorage:
    return LocalStorage(tmp_path / "files", "http://files.test")


async def complete_with_files(
    conn: Conn, storage: LocalStorage, generation_id: uuid.UUID, **columns: Any
) -> list[Path]:
    """Walks a generation to completed with a result and a thumbnail stored under its keys."""
    row = await store.get_generation_for_worker(conn, generation_id)
    assert row is not None
    stem = f"{row.workspace_id}/{row.project_id}/{row.id}"
    result_url = await storage.put(f"{stem}.png", b"png", "image/png")
    thumb_url = await storage.put(f"{stem}-thumb.webp", b"webp", "image/webp")
    await walk_to(conn, generation_id, "processing")
    await update_generation(
        conn,
        generation_id,
        status="completed",
        result_image_url=result_url,
        result_key=f"{stem}.png",
        thumbnail_url=thumb_url,
        thumbnail_key=f"{stem}-thumb.webp",
        **columns,
    )
    return [storage.path_for(f"{stem}.png"), storage.path_for(f"{stem}-thumb.webp")]


async def running(conn: Conn, project_id: uuid.UUID) -> tuple[uuid.UUID, int]:
    """A generation whose job a worker has taken and runs (processing): the id and the job's."""
    target = await insert_generation(conn, project_id)
    job_id = await fetch_value(
        conn, "SELECT job_id FROM image_generations WHERE id = %s", (target,)
    )
    await conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job_id,))
    await walk_to(conn, target, "processing")
    return target, int(job_id)


async def exists(conn: Conn, generation_id: uuid.UUID) -> bool:
    return bool(
        await fetch_value(
            conn, "SELECT count(*) FROM image_generations WHERE id = %s", (generation_id,)
        )
    )


async def test_a_completed_generation_goes_with_its_files_events_and_an_audit_row(
    conn: Conn, pool: AsyncConnectionPool, storage: LocalStorage, project_id: uuid.UUID
) -> None:
    keep = await insert_generation(conn, project_id, job_id=-1)
    gone = await insert_generation(conn, project_id, job_id=-1)
    files = await complete_with_files(conn, storage, gone)
    assert all(path.exists() for path in files)
    row = await store.get_generation_for_worker(conn, gone)
    assert row is not None

    deleted = await deletes.delete_generation(pool, storage, row.workspace_id, gone, BY)

    assert deleted == [gone]
    assert not any(path.exists() for path in files)
    assert not await exists(conn, gone) and await exists(conn, keep)
    events = "SELECT count(*) FROM image_events WHERE generation_id = %s"
    assert await fetch_value(conn, events, (gone,)) == 0
    await assert_project_consistent(conn, project_id, ["pending"])
    audit = await fetch_value(
        conn,
        "SELECT to_jsonb(d) FROM imagejobs_deletions d WHERE target_id = %s",
        (gone,),
    )
    assert audit["kind"] == "generation" and audit["deleted_by"] == BY
    assert audit["status"] == "done" and audit["deleted_at"] is not None
    assert audit["detail"]["generations"] == [str(gone)]
    # Again: nothing to delete, nothing recorded twice.
    assert await deletes.delete_generation(pool, storage, row.workspace_id, gone, BY) is None
    count = "SELECT count(*) FROM imagejobs_deletions WHERE target_id = %s"
    assert await fetch_value(conn, count, (gone,)) == 1


@pytest.mark.parametrize("status", ["pending", "processing", "failed", "cancelled"])
async def test_counters_stay_right_whatever_the_status_deleted(
    conn: Conn,
    pool: AsyncConnectionPool,
    storage: LocalStorage,
    project_id: uuid.UUID,
    workspace_id: uuid.UUID,
    status: str,
) -> None:
    others = [await insert_generation(conn, project_id, job_id=-1) for _ in range(2)]
    await walk_to(conn, others[1], "completed")
    target = await insert_generation(conn, project_id)
    await walk_to(conn, target, status)

    assert await deletes.delete_generation(pool, storage, workspace_id, target, BY) == [target]

    await assert_project_consistent(conn, project_id, ["pending", "completed"])


async def test_a_pending_generations_job_is_cancelled_and_never_runs(
    conn: Conn, pool: AsyncConnectionPool, storage: LocalStorage, project_id: uuid.UUID
) -> None:
    target = await insert_generation(conn, project_id)
    job_id = await fetch_value(
        conn, "SELECT job_id FROM image_generations WHERE id = %s", (target,)
    )
    workspace_id = await fetch_value(
        conn, "SELECT workspace_id FROM image_generations WHERE id = %s", (target,)
    )
    await deletes.delete_generation(pool, storage, workspace_id, target, BY)
    status = "SELECT status FROM procrastinate_jobs WHERE id = %s"
    assert await fetch_value(conn, status, (job_id,)) == "cancelled"


async def history(conn: Conn, project_id: uuid.UUID) -> list[uuid.UUID]:
    """A root and two more versions of it."""
    root = await insert_generation(conn, project_id, job_id=-1)
    versions = [root]
    for _ in range(2):
        versions.append(
            await insert_generation(conn, project_id, job_id=-1, parent_id=root, version=1)
        )
    return versions


async def test_deleting_a_root_makes_its_next_version_the_root(
    conn: Conn,
    pool: AsyncConnectionPool,
    storage: LocalStorage,
    project_id: uuid.UUID,
    workspace_id: uuid.UUID,
) -> None:
    root, second, third = await history(conn, project_id)

    assert await deletes.delete_generation(pool, storage, workspace_id, root, BY) == [root]

    rows = {
        g.id: (g.parent_id, g.version) for g in await store.list_versions(pool, third, workspace_id)
    }
    assert rows == {second: (None, 2), third: (second, 3)}
    # The history goes on numbering from where it was.
    fourth = await insert_generation(conn, project_id, job_id=-1, parent_id=second, version=1)
    assert (
        await fetch_value(conn, "SELECT version FROM image_generations WHERE id = %s", (fourth,))
        == 4
    )


async def test_deleting_a_middle_version_leaves_the_rest(
    conn: Conn,
    pool: AsyncConnectionPool,
    storage: LocalStorage,
    project_id: uuid.UUID,
    workspace_id: uuid.UUID,
) -> None:
    root, second, third = await history(conn, project_id)
    await deletes.delete_generation(pool, storage, workspace_id, second, BY)
    versions = await store.list_versions(pool, root, workspace_id)
    assert [(g.id, g.parent_id, g.version) for g in versions] == [
        (root, None, 1),
        (third, root, 3),
    ]


async def test_cascade_deletes_the_whole_history_from_any_version(
    conn: Conn,
    pool: AsyncConnectionPool,
    storage: LocalStorage,
    project_id: uuid.UUID,
    workspace_id: uuid.UUID,
) -> None:
    versions = await history(conn, project_id)
    unrelated = await insert_generation(conn, project_id, job_id=-1)

    deleted = await deletes.delete_generation(
        pool, storage, workspace_id, versions[1], BY, cascade=True
    )

    assert sorted(deleted or []) == sorted(versions)
    assert not any([await exists(conn, v) for v in versions])
    assert await exists(conn, unrelated)
    await assert_project_consistent(conn, project_id, ["pending"])


async def test_the_nodes_image_and_current_generation_are_cleared(
    conn: Conn,
    pool: AsyncConnectionPool,
    storage: LocalStorage,
    project_id: uuid.UUID,
    workspace_id: uuid.UUID,
) -> None:
    workflow_id = uuid.uuid4()
    node = {"node_id": "n1", "workflow_id": workflow_id, "job_id": -1}
    shown = await insert_generation(conn, project_id, **node)
    await complete_with_files(conn, storage, shown)
    await conn.execute(
        'UPDATE workflow_nodes SET node_data = node_data || \'{"label": "mine"}\''
        " WHERE workflow_id = %s",
        (workflow_id,),
    )
    node_data = "SELECT node_data FROM workflow_nodes WHERE workflow_id = %s AND id = 'n1'"
    before = await fetch_value(conn, node_data, (workflow_id,))
    assert before["generationId"] == str(shown) and before["imageKey"]

    await deletes.delete_generation(pool, storage, workspace_id, shown, BY)

    after = await fetch_value(conn, node_data, (workflow_id,))
    for key in ("imageUrl", "thumbnailUrl", "imageKey", "thumbnailKey", "generationId"):
        assert key not in after
    assert after["label"] == "mine"
    # A new generation on the node takes it over as before.
    newer = await insert_generation(conn, project_id, **node)
    assert (await fetch_value(conn, node_data, (workflow_id,)))["generationId"] == str(newer)


async def test_a_node_showing_an_older_versions_image_keeps_its_newer_generation(
    conn: Conn,
    pool: AsyncConnectionPool,
    storage: LocalStorage,
    project_id: uuid.UUID,
    workspace_id: uuid.UUID,
) -> None:
    workflow_id = uuid.uuid4()
    node = {"node_id": "n1", "workflow_id": workflow_id, "job_id": -1}
    shown = await insert_generation(conn, project_id, **node)
    await complete_with_files(conn, storage, shown)
    newer = await insert_generation(conn, project_id, **node)  # pending: the image stays

    await deletes.delete_generation(pool, storage, workspace_id, shown, BY)

    node_data = "SELECT node_data FROM workflow_nodes WHERE workflow_id = %s AND id = 'n1'"
    after = await fetch_value(conn, node_data, (workflow_id,))
    assert "imageUrl" not in after and "imageKey" not in after
    assert after["generationId"] == str(newer)


async def test_keys_of_another_workspace_are_never_deleted(
    storage: LocalStorage, pool: AsyncConnectionPool, project_id: uuid.UUID
) -> None:
    generation_id = await insert_generation(pool, project_id, job_id=-1)
    row = await store.get_generation_for_worker(pool, generation_id)
    assert row is not None
    row.result_key = f"{uuid.uuid4()}/someone/else.png"
    keys = deletes.file_keys([row])
    assert row.result_key not in keys
    assert all(key.startswith(f"{row.workspace_id}/{row.project_id}/{row.id}") for key in keys)


# --- storage failing -------------------------------------------------------------------------


@pytest.fixture
async def supabase(supabase_storage: StorageState) -> AsyncIterator[SupabaseStorage]:  # noqa: F811
    supabase_storage.add_bucket("images")
    storage = SupabaseStorage(
        supabase_storage.url, supabase_storage.key, attempts=1, backoff_s=0.01
    )
    yield storage
    await storage.aclose()


async def test_storage_failing_keeps_the_row_until_the_files_are_gone_and_a_repeat_finishes(
    conn: Conn,
    pool: AsyncConnectionPool,
    project_id: uuid.UUID,
    workspace_id: uuid.UUID,
    supabase: SupabaseStorage,
    supabase_storage: StorageState,  # noqa: F811
) -> None:
    target = await insert_generation(conn, project_id, job_id=-1)
    key = f"{workspace_id}/{project_id}/{target}.png"
    url = await supabase.put(key, b"png", "image/png")
    await walk_to(conn, target, "processing")
    await update_generation(conn, target, status="completed", result_image_url=url, result_key=key)
    supabase_storage.recorder.script(
        Scripted(500, {"statusCode": "500", "error": "boom", "message": "down"})
    )

    with pytest.raises(OSError, match="Supabase Storage delete"):
        await deletes.delete_generation(pool, supabase, workspace_id, target, BY)

    assert await exists(conn, target)
    assert f"images/{key}" in supabase_storage.objects
    assert (
        await fetch_value(
            conn, "SELECT count(*) FROM imagejobs_deletions WHERE target_id = %s", (target,)
        )
        == 0
    )
    await assert_project_consistent(conn, project_id, ["completed"])

    assert await deletes.delete_generation(pool, supabase, workspace_id, target, BY) == [target]
    assert f"images/{key}" not in supabase_storage.objects
    assert not await exists(conn, target)


# --- running jobs ------------------------------------------------------------------------------


async def test_a_delete_waits_for_the_aborted_job_to_stop_and_else_keeps_the_row(
    conn: Conn,
    pool: AsyncConnectionPool,
    storage: LocalStorage,
    project_id: uuid.UUID,
    workspace_id: uuid.UUID,
) -> None:
    target, job_id = await running(conn, project_id)

    with pytest.raises(deletes.StillRunning):
        await deletes.delete_generation(pool, storage, workspace_id, target, BY, wait_s=0.2)
    assert await exists(conn, target)
    status = "SELECT status FROM image_generations WHERE id = %s"
    assert await fetch_value(conn, status, (target,)) == "cancelled"
    abort = "SELECT abort_requested FROM procrastinate_jobs WHERE id = %s"
    assert await fetch_value(conn, abort, (job_id,)) is True

    # The worker stops the job, having uploaded a result before it noticed.
    stem = f"{workspace_id}/{project_id}/{target}"
    late = storage.path_for(f"{stem}.jpg")
    await storage.put(f"{stem}.jpg", b"jpeg", "image/jpeg")
    await conn.execute("UPDATE procrastinate_jobs SET status = 'aborted' WHERE id = %s", (job_id,))

    assert await deletes.delete_generation(pool, storage, workspace_id, target, BY) == [target]
    assert not late.exists()
    assert not await exists(conn, target)


# --- projects ----------------------------------------------------------------------------------


class Watching:
    """Local storage that checks the project's counters each time files are removed."""

    def __init__(self, inner: LocalStorage, pool: AsyncConnectionPool, project_id: uuid.UUID):
        self.inner = inner
        self.pool = pool
        self.project_id = project_id
        self.checks = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def delete(self, keys: Sequence[str]) -> None:
        async with self.pool.connection() as conn:
            await assert_project_consistent(conn, self.project_id)
        self.checks += 1
        await self.inner.delete(keys)


async def test_a_project_is_deleted_in_batches_with_counters_right_throughout(
    conn: Conn,
    pool: AsyncConnectionPool,
    storage: LocalStorage,
    project_id: uuid.UUID,
    workspace_id: uuid.UUID,
) -> None:
    ids = [await insert_generation(conn, project_id, job_id=-1) for _ in range(7)]
    await walk_to(conn, ids[0], "completed")
    await walk_to(conn, ids[1], "failed")
    await walk_to(conn, ids[2], "processing")
    await walk_to(conn, ids[3], "cancelled")
    files = await complete_with_files(conn, storage, ids[4])
    deletion = await store.start_project_deletion(pool, project_id, workspace_id, BY)
    assert deletion is not None and deletion.status == "running" and deletion.job_id

    # Hidden, and no new generation gets in, from SQL either.
    assert await store.get_project(pool, project_id, workspace_id) is None
    with pytest.raises(errors.CheckViolation):
        await insert_generation(conn, project_id)
    # A second start does not start twice; a resume answers the running one.
    assert await store.start_project_deletion(pool, project_id, workspace_id, BY) is None
    resumed = await store.resume_project_deletion(pool, project_id, workspace_id)
    assert resumed is not None and resumed.id == deletion.id and resumed.job_id == deletion.job_id

    watching = Watching(storage, pool, project_id)
    assert await deletes.delete_project(pool, watching, deletion.id, batch=3)

    assert watching.checks == 3
    assert not any(path.exists() for path in files)
    gone = "SELECT count(*) FROM image_generations WHERE id = ANY (%s)"
    assert await fetch_value(conn, gone, (ids,)) == 0
    assert (
        await fetch_value(conn, "SELECT count(*) FROM projects WHERE id = %s", (project_id,)) == 0
    )
    done = await store.get_deletion(pool, deletion.id, workspace_id)
    assert done is not None and done.status == "done" and done.deleted_at is not None
    assert done.detail["generations"] == 7
    # Done is done: running it again changes nothing.
    assert not await deletes.delete_project(pool, storage, deletion.id)


async def test_a_project_delete_that_storage_interrupts_goes_on_where_it_stopped(
    conn: Conn,
    pool: AsyncConnectionPool,
    project_id: uuid.UUID,
    workspace_id: uuid.UUID,
    supabase: SupabaseStorage,
    supabase_storage: StorageState,  # noqa: F811
) -> None:
    ids = [await insert_generation(conn, project_id, job_id=-1) for _ in range(4)]
    deletion = await store.start_project_deletion(pool, project_id, workspace_id, BY)
    assert deletion is not None

    class FailSecond:
        def __init__(self) -> None:
            self.calls = 0

        def __getattr__(self, name: str) -> Any:
            return getattr(supabase, name)

        async def delete(self, keys: Sequence[str]) -> None:
            self.calls += 1
            if self.calls == 2:
                raise OSError("storage is down")
            await supabase.delete(keys)

    with pytest.raises(OSError, match="storage is down"):
        await deletes.delete_project(pool, FailSecond(), deletion.id, batch=2)
    remaining = "SELECT count(*) FROM image_generations WHERE project_id = %s"
    assert await fetch_value(conn, remaining, (project_id,)) == 2
    # The batch that storage refused was cancelled first (its jobs stopped) and is kept.
    await assert_project_consistent(conn, project_id, ["cancelled", "cancelled"])
    halfway = await store.get_deletion(pool, deletion.id, workspace_id)
    assert halfway is not None and halfway.status == "running"
    assert halfway.detail["generations"] == 2

    assert await deletes.delete_project(pool, supabase, deletion.id, batch=2)
    done = await store.get_deletion(pool, deletion.id, workspace_id)
    assert done is not None and done.detail["generations"] == 4
    assert await fetch_value(conn, remaining, (project_id,)) == 0
    assert ids


async def test_a_mask_shared_with_a_regeneration_stays_until_its_last_version_goes(
    conn: Conn,
    pool: AsyncConnectionPool,
    storage: LocalStorage,
    project_id: uuid.UUID,
    workspace_id: uuid.UUID,
) -> None:
    root = await insert_generation(conn, project_id, job_id=-1)
    await complete_with_files(conn, storage, root)
    key = f"{workspace_id}/{project_id}/{uuid.uuid4()}-mask-0123abcd.png"
    url = await storage.put(key, b"mask", "image/png")
    edit = await insert_generation(
        conn, project_id, job_id=-1, parent_id=root, edited_from=root, edit_mode="add"
    )
    await update_generation(conn, edit, mask_url=url, mask_key=key, status="cancelled")
    again = await store.insert_regeneration(
        pool,
        {
            "id": edit,
            "workspace_id": workspace_id,
            "user_id": None,
            "prompt": None,
            "prompt_spec": None,
            "provider": None,
            "model": None,
        },
    )
    assert again is not None and again.mask_key == key

    await deletes.delete_generation(pool, storage, workspace_id, edit, BY)
    assert storage.path_for(key).exists()

    await deletes.delete_generation(pool, storage, workspace_id, again.id, BY)
    assert not storage.path_for(key).exists()


async def test_a_generation_cancelled_before_the_delete_still_waits_for_its_job(
    conn: Conn,
    pool: AsyncConnectionPool,
    storage: LocalStorage,
    project_id: uuid.UUID,
    workspace_id: uuid.UUID,
) -> None:
    target, _ = await running(conn, project_id)
    await walk_to(conn, target, "cancelled")  # a user's cancel; the job is still aborting

    with pytest.raises(deletes.StillRunning):
        await deletes.delete_generation(pool, storage, workspace_id, target, BY, wait_s=0.1)
    assert await exists(conn, target)
