"""A delete racing a running generation: nothing is left behind (row, events, files) and no
result lands after the delete, whichever step the worker was at."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from psycopg_pool import AsyncConnectionPool

from tests.factories import insert_generation
from tests.worker.conftest import make_runtime
from worker.core import store
from worker.core.errors import ErrorCode, GenerationError
from worker.providers.base import ImageRequest, ImageResult
from worker.providers.local import LocalProvider
from worker.queue.pipeline import run_generation
from worker.storage import deletes
from worker.storage.local import LocalStorage

BY = "api_key:race"


class HeldUpload(LocalStorage):
    """Local storage whose uploads wait until the test lets them through."""

    def __init__(self, root: Path) -> None:
        super().__init__(root, "http://files.test")
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def put(self, key: str, data: bytes, content_type: str) -> str:
        self.started.set()
        await self.release.wait()
        return await super().put(key, data, content_type)


class HeldProvider(LocalProvider):
    """Renders for real, once the test lets the model finish."""

    def __init__(self) -> None:
        super().__init__(delay_ms=0)
        self.started = asyncio.Event()
        self.release = asyncio.Event()

    async def generate(self, request: ImageRequest) -> ImageResult:
        self.started.set()
        await self.release.wait()
        return await super().generate(request)


def stored_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file()] if root.exists() else []


async def left_behind(pool: AsyncConnectionPool, generation_id: uuid.UUID) -> tuple[int, int]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT (SELECT count(*) FROM image_generations WHERE id = %s),"
            " (SELECT count(*) FROM image_events WHERE generation_id = %s)",
            (generation_id, generation_id),
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def workspace_of(pool: AsyncConnectionPool, generation_id: uuid.UUID) -> uuid.UUID:
    row = await store.get_generation_for_worker(pool, generation_id)
    assert row is not None
    return row.workspace_id


async def test_a_delete_during_the_upload_leaves_no_file_and_no_result(
    pool: AsyncConnectionPool, project_id: uuid.UUID, tmp_path: Path
) -> None:
    storage = HeldUpload(tmp_path / "files")
    runtime = make_runtime(pool, tmp_path / "unused", {"local": LocalProvider(delay_ms=0)})
    runtime.storage = storage
    generation_id = await insert_generation(pool, project_id, job_id=-1)
    workspace_id = await workspace_of(pool, generation_id)
    run = asyncio.create_task(run_generation(runtime, generation_id, attempt=1))
    await asyncio.wait_for(storage.started.wait(), 10)

    # Mid-upload: the delete cancels, removes the (not yet written) files and the row.
    assert await deletes.delete_generation(pool, storage, workspace_id, generation_id, BY) == [
        generation_id
    ]
    storage.release.set()
    await asyncio.wait_for(run, 10)

    # The upload landed after the delete; the worker's complete write found no row and removed it.
    assert stored_files(storage.root) == []
    assert await left_behind(pool, generation_id) == (0, 0)


async def test_a_delete_while_the_model_works_stops_the_run_before_it_stores_anything(
    pool: AsyncConnectionPool, project_id: uuid.UUID, tmp_path: Path
) -> None:
    provider = HeldProvider()
    runtime = make_runtime(pool, tmp_path / "files", {"local": provider})
    generation_id = await insert_generation(pool, project_id, job_id=-1)
    workspace_id = await workspace_of(pool, generation_id)
    run = asyncio.create_task(run_generation(runtime, generation_id, attempt=1))
    await asyncio.wait_for(provider.started.wait(), 10)

    await deletes.delete_generation(pool, runtime.storage, workspace_id, generation_id, BY)
    provider.release.set()
    await asyncio.wait_for(run, 10)

    assert stored_files(tmp_path / "files") == []
    assert await left_behind(pool, generation_id) == (0, 0)


@pytest.mark.parametrize("repeat", [1, 5])
async def test_racing_deletes_and_runs_never_leave_anything(
    pool: AsyncConnectionPool, project_id: uuid.UUID, tmp_path: Path, repeat: int
) -> None:
    """Deletes fired at every moment of many runs at once, with no holding back."""
    root = tmp_path / "files"
    runtime = make_runtime(pool, root, {"local": LocalProvider(delay_ms=0)})
    ids = [await insert_generation(pool, project_id, job_id=-1) for _ in range(10 * repeat)]
    workspace_id = await workspace_of(pool, ids[0])

    async def race(index: int, generation_id: uuid.UUID) -> None:
        run = asyncio.create_task(run_generation(runtime, generation_id, attempt=1))
        await asyncio.sleep(0.002 * (index % 10))
        await deletes.delete_generation(pool, runtime.storage, workspace_id, generation_id, BY)
        try:
            await run
        except GenerationError as error:  # deleted before the run began: nothing to run
            codes.append(error.code)

    codes: list[ErrorCode] = []

    await asyncio.gather(*(race(i, g) for i, g in enumerate(ids)))

    assert set(codes) <= {ErrorCode.NOT_FOUND}

    assert stored_files(root) == []
    for generation_id in ids:
        assert await left_behind(pool, generation_id) == (0, 0)
