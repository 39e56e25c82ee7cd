"""`imagejobs delete generation|project|workspace ID`: the operator's deletes, files included."""

from __future__ import annotations

import argparse
import uuid
from pathlib import Path

import pytest
from psycopg_pool import AsyncConnectionPool

from tests.factories import create_project, insert_generation
from worker.cli.admin import build_parser
from worker.cli.deletes import run_delete
from worker.core import store
from worker.core.config import load_settings
from worker.storage.local import LocalStorage


def args(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["delete", *argv])


async def put_result(
    storage_dir: Path, pool: AsyncConnectionPool, generation_id: uuid.UUID
) -> Path:
    row = await store.get_generation_for_worker(pool, generation_id)
    assert row is not None
    storage = LocalStorage(storage_dir, "http://files.test")
    key = f"{row.workspace_id}/{row.project_id}/{row.id}.png"
    await storage.put(key, b"png", "image/png")
    return storage.path_for(key)


async def count(pool: AsyncConnectionPool, sql: str, value: uuid.UUID) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(sql, (value,))
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_delete_a_generation_a_project_and_a_workspace(
    pool: AsyncConnectionPool, database_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = load_settings({"DATABASE_URL": database_url, "LOCAL_STORAGE_DIR": str(tmp_path)})
    workspace_id = uuid.uuid4()
    projects = [await create_project(pool, workspace_id) for _ in range(3)]
    generations = [await insert_generation(pool, p, job_id=-1) for p in projects]
    files = [await put_result(tmp_path, pool, g) for g in generations]

    await run_delete(settings, args("generation", str(generations[0])))
    assert not files[0].exists() and files[1].exists()
    assert "deleted 1 generation(s)" in capsys.readouterr().out
    who = (
        "SELECT count(*) FROM imagejobs_deletions WHERE target_id = %s AND deleted_by LIKE 'cli:%%'"
    )
    assert await count(pool, who, generations[0]) == 1

    await run_delete(settings, args("project", str(projects[1])))
    assert not files[1].exists()
    assert await count(pool, "SELECT count(*) FROM projects WHERE id = %s", projects[1]) == 0

    await run_delete(settings, args("workspace", str(workspace_id)))
    assert not files[2].exists()
    assert (
        await count(pool, "SELECT count(*) FROM projects WHERE workspace_id = %s", workspace_id)
        == 0
    )
    assert "workspace" in capsys.readouterr().out

    with pytest.raises(SystemExit, match="no generation"):
        await run_delete(settings, args("generation", str(generations[0])))
