"""Deleting generations and their files, safely against a worker that is still producing them.

The order (docs/operations.md, *Deletes*):

1. cancel what is pending or processing, through the cancel path: the trigger cancels a queued
   job and asks a running one to abort; the worker's complete write is a compare-and-set on
   `processing`, so no result lands after this;
2. wait until none of their jobs is still running (an aborted upload may have been half-way);
3. read the rows again and remove their files by key (`Storage.delete`): the keys the rows
   record plus the keys a run would write (`<id>.png|jpg|webp`, `<id>-thumb.webp|png`), so an
   upload that landed without being recorded goes too. A storage failure raises OSError and
   nothing else has changed but the cancel: the delete can simply be repeated;
4. in one transaction, delete the rows that did not change since step 3
   (`imagejobs_delete_generations`): a row retried or completed meanwhile is left for another
   round, so no row goes while a file it points at stays.

A worker whose complete write finds its row cancelled or gone removes what it uploaded
(worker/queue/pipeline.py), which covers uploads that finish after step 3.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from worker.core import store
from worker.core.images import EXTENSIONS
from worker.core.models import Generation
from worker.core.store import Db
from worker.storage.base import Storage

# How long a delete waits for aborted jobs to stop before giving up for now.
STOP_WAIT_S = 10.0
POLL_S = 0.05
# Rounds of cancel → files → rows before a delete gives up for now (rows kept changing).
MAX_ROUNDS = 3


class StillRunning(Exception):
    """A job of a generation being deleted has not stopped yet, or the rows kept changing: the
    rows are kept (cancelled) and the delete can be repeated shortly."""


@dataclass
class Outcome:
    deleted: list[UUID] = field(default_factory=list)
    files: int = 0


@dataclass(frozen=True)
class Audit:
    """Who asked to delete what: recorded in the transaction that deletes the rows."""

    target_id: UUID
    deleted_by: str
    cascade: bool = False


def file_keys(generations: Iterable[Generation]) -> list[str]:
    """Every key a generation's files may have: the recorded ones and those a run writes. Only
    keys under the generation's own workspace: a key is never a way to reach another's files."""
    keys: set[str] = set()
    for generation in generations:
        prefix = f"{generation.workspace_id}/"
        for key in (generation.result_key, generation.thumbnail_key, generation.mask_key):
            if key and key.startswith(prefix):
                keys.add(key)
        stem = f"{generation.workspace_id}/{generation.project_id}/{generation.id}"
        keys.update(f"{stem}.{ext}" for ext in set(EXTENSIONS.values()))
        keys.update(f"{stem}-thumb.{ext}" for ext in ("webp", "png"))
    return sorted(keys)


async def wait_until_stopped(db: Db, generations: Sequence[Generation], wait_s: float) -> None:
    job_ids = [g.job_id for g in generations if g.job_id is not None and g.job_id > 0]
    if not job_ids:
        return
    deadline = time.monotonic() + wait_s
    while await store.jobs_running(db, job_ids):
        if time.monotonic() >= deadline:
            raise StillRunning("a job of the generation is still stopping")
        await asyncio.sleep(POLL_S)


async def delete_generations(
    db: Db,
    storage: Storage,
    workspace_id: UUID,
    ids: Sequence[UUID],
    *,
    whole_history: bool = False,
    wait_s: float = STOP_WAIT_S,
    audit: Audit | None = None,
) -> Outcome:
    """One round of a delete of `ids` (see the module): what went. Raises OSError when storage
    fails and StillRunning when a job has not stopped within `wait_s`; the rows are then kept."""
    outcome = Outcome()
    rows = await store.generations_by_ids(db, ids, workspace_id)
    if not rows:
        return outcome
    cancelled = await store.cancel_for_delete(
        db, [g.id for g in rows if g.status in ("pending", "processing")], workspace_id
    )
    # Also for rows cancelled earlier: their aborted job may still be stopping, mid-upload.
    await wait_until_stopped(db, rows, wait_s)
    if cancelled:
        rows = await store.generations_by_ids(db, ids, workspace_id)
    finished = [g for g in rows if g.status not in ("pending", "processing")]
    if not finished:
        return outcome
    keys = file_keys(finished)
    # A regeneration of an edit shares the edit's mask: it stays while a version uses it.
    shared = await store.keys_in_use(db, workspace_id, keys, [g.id for g in finished])
    keys = [key for key in keys if key not in shared]
    await storage.delete(keys)
    seen: dict[UUID, datetime] = {g.id: g.updated_at for g in finished}
    async with store.transaction(db) as conn:
        gone = await store.delete_generations(conn, workspace_id, seen, whole_history=whole_history)
        outcome.deleted = [generation_id for generation_id, _ in gone]
        outcome.files = len(keys)
        if gone and audit is not None:
            await store.insert_deletion(
                conn,
                workspace_id,
                "generation",
                audit.target_id,
                audit.deleted_by,
                {
                    "cascade": "versions" if audit.cascade else None,
                    "generations": [str(i) for i in outcome.deleted],
                    "file_keys_removed": outcome.files,
                },
            )
    return outcome


async def delete_generation(
    db: Db,
    storage: Storage,
    workspace_id: UUID,
    generation_id: UUID,
    deleted_by: str,
    *,
    cascade: bool = False,
    wait_s: float = STOP_WAIT_S,
) -> list[UUID] | None:
    """Deletes a generation (with `cascade`, its whole history) and its files, and records it;
    the ids deleted, None when there was nothing to delete (not there, or already gone)."""
    deleted: list[UUID] = []
    audit = Audit(generation_id, deleted_by, cascade)
    for _ in range(MAX_ROUNDS):
        targets = await store.deletion_targets(db, generation_id, workspace_id, cascade=cascade)
        if not targets:
            return deleted or None
        outcome = await delete_generations(
            db,
            storage,
            workspace_id,
            [g.id for g in targets],
            whole_history=cascade,
            wait_s=wait_s,
            audit=audit,
        )
        deleted += outcome.deleted
    if await store.deletion_targets(db, generation_id, workspace_id, cascade=cascade):
        raise StillRunning("the generation kept changing while it was being deleted")
    return deleted or None


PROJECT_BATCH = 200


async def delete_project(
    db: Db, storage: Storage, deletion_id: int, *, batch: int = PROJECT_BATCH
) -> bool:
    """Carries out a recorded project delete (imagejobs_deletions, `running`): its generations
    in batches, each as a generation delete is done, with progress on the project stream, then
    the project row. Whether it finished. Raises OSError (storage) or StillRunning (a job not
    stopped yet) to be run again; what was deleted stays deleted."""
    deletion = await store.get_deletion_for_worker(db, deletion_id)
    if deletion is None or deletion.status == "done" or deletion.kind != "project":
        return False
    project_id, workspace_id = deletion.target_id, deletion.workspace_id
    deleted = int(deletion.detail.get("generations", 0))
    files = int(deletion.detail.get("file_keys_removed", 0))
    while ids := await store.project_generation_batch(db, project_id, batch):
        outcome = await delete_generations(db, storage, workspace_id, ids)
        if not outcome.deleted:
            raise StillRunning(f"no generation of project {project_id} could be deleted yet")
        deleted += len(outcome.deleted)
        files += outcome.files
        await store.record_deletion_progress(
            db, deletion_id, {"generations": deleted, "file_keys_removed": files}
        )
    return await store.finish_project_deletion(
        db, deletion_id, {"generations": deleted, "file_keys_removed": files}
    )
