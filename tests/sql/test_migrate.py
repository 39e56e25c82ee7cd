"""`imagejobs migrate` is idempotent and safe when two migrators start at once."""

from __future__ import annotations

import asyncio
import importlib.metadata
import os
import secrets
import sys
import uuid
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

from tests.sql.helpers import Conn, create_project, fetch_value, generation, insert_generation
from worker.core.migrate import MIGRATION_LOCK_KEY, migrate
from worker.core.sqlfiles import migration_files
from worker.devtools.embedded import with_database

FILES = [path.name for path in migration_files()]
EVERYTHING = [f"procrastinate {importlib.metadata.version('procrastinate')} schema", *FILES]


@pytest.fixture
def fresh_database_url(server_url: str) -> Iterator[str]:
    """An empty database on the test server, dropped afterwards."""
    name = f"imagejobs_migrate_{secrets.token_hex(4)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield with_database(server_url, name)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
async def fresh_conn(fresh_database_url: str) -> AsyncIterator[Conn]:
    async with await psycopg.AsyncConnection.connect(fresh_database_url, autocommit=True) as conn:
        yield conn


async def test_migrating_again_applies_nothing(database_url: str) -> None:
    assert await migrate(database_url) == []
    assert await migrate(database_url) == []


async def waiting_for_the_lock(conn: Conn) -> int:
    return int(
        await fetch_value(
            conn,
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database"
            " WHERE l.locktype = 'advisory' AND NOT l.granted AND d.datname = current_database()",
        )
    )


async def assert_fully_migrated_once(conn: Conn) -> None:
    cur = await conn.execute("SELECT name FROM imagejobs_migrations ORDER BY name")
    assert [str(r[0]) for r in await cur.fetchall()] == sorted([*FILES, "procrastinate"])
    for query, expected in [
        ("SELECT count(*) FROM pg_proc WHERE proname = 'recompute_project_counts'", 1),
        ("SELECT count(*) FROM pg_proc WHERE proname = 'imagejobs_acquire_rate'", 1),
        ("SELECT count(*) FROM pg_trigger WHERE tgname = 'image_generations_count_updates'", 1),
        ("SELECT count(*) FROM pg_trigger WHERE tgname = 'image_generations_sync_node'", 1),
        ("SELECT count(*) FROM pg_class WHERE relname = 'image_generations'", 1),
        ("SELECT count(*) FROM pg_class WHERE relname = 'procrastinate_jobs'", 1),
        (
            "SELECT count(*) FROM information_schema.columns"
            " WHERE table_name = 'image_events' AND column_name = 'txid'",
            1,
        ),
    ]:
        assert await fetch_value(conn, query) == expected, query


async def test_two_migrators_at_once_apply_each_file_once(
    fresh_database_url: str, fresh_conn: Conn
) -> None:
    # Hold the migrators' lock so both are provably running, and waiting, at the same time.
    await fresh_conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
    runs = [asyncio.create_task(migrate(fresh_database_url)) for _ in range(2)]
    async with asyncio.timeout(20):
        while await waiting_for_the_lock(fresh_conn) < 2:
            assert not any(run.done() for run in runs)
            await asyncio.sleep(0.05)
    await fresh_conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    first, second = await asyncio.gather(*runs)

    assert sorted([first, second], key=len) == [[], EVERYTHING]
    await assert_fully_migrated_once(fresh_conn)
    assert await migrate(fresh_database_url) == []

    # The fresh database works: a plain insert is enqueued.
    project_id = await create_project(fresh_conn, uuid.uuid4())
    generation_id = await insert_generation(fresh_conn, project_id)
    assert (await generation(fresh_conn, generation_id))["job_id"] is not None


async def test_two_migrate_commands_at_once(fresh_database_url: str, fresh_conn: Conn) -> None:
    env = {**os.environ, "DATABASE_URL": fresh_database_url}
    processes = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "worker.cli",
            "migrate",
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(2)
    ]
    outputs = await asyncio.gather(*(p.communicate() for p in processes))
    assert [p.returncode for p in processes] == [0, 0], outputs
    printed = sorted((out.decode().splitlines() for out, _ in outputs), key=len)
    assert printed == [["database is up to date"], [f"applied {name}" for name in EVERYTHING]]
    await assert_fully_migrated_once(fresh_conn)
