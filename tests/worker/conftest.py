from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from psycopg_pool import AsyncConnectionPool

from worker.core.config import load_settings
from worker.providers.base import Provider
from worker.queue.runtime import Runtime
from worker.storage.local import LocalStorage


def make_runtime(
    pool: AsyncConnectionPool, storage_dir: Path, providers: dict[str, Provider]
) -> Runtime:
    settings = load_settings(
        {"LOCAL_STORAGE_DIR": str(storage_dir), "LOCAL_PROVIDER_DELAY_MS": "0"}
    )
    return Runtime(settings, pool, providers, LocalStorage(storage_dir, "http://files.test"))


async def generation_row(pool: AsyncConnectionPool, generation_id: uuid.UUID) -> dict[str, object]:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT * FROM image_generations WHERE id = %s", (generation_id,))
        row = await cur.fetchone()
        assert row is not None and cur.description is not None
        return {col.name: value for col, value in zip(cur.description, row, strict=True)}


async def event_trail(
    pool: AsyncConnectionPool, generation_id: uuid.UUID
) -> list[tuple[str, str, str, int]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT kind, status, step, progress FROM image_events WHERE generation_id = %s ORDER BY id",
            (generation_id,),
        )
        return [(str(k), str(s), str(st), int(p)) for k, s, st, p in await cur.fetchall()]


@pytest.fixture
def storage_dir(tmp_path: Path) -> Path:
    return tmp_path / "storage"
