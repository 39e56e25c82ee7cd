"""`imagejobs migrate`: procrastinate's schema, then each sql/migrations/NNN_*.sql once, in order
(recorded in the ledger by file name).

Every file runs in its own transaction while the migrator holds a session advisory lock, so two
migrators started at once (two deploys) apply each file exactly once; a second run is a no-op.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import re
from pathlib import Path
from typing import Any, LiteralString

import psycopg
from procrastinate.schema import SchemaManager

from worker.core.sqlfiles import migration_files

logger = logging.getLogger(__name__)

MIGRATION_LOCK_KEY = 7_245_101_733  # arbitrary, stable: pg_advisory_lock(bigint)
PROCRASTINATE = "procrastinate"

_CREATE_LEDGER: LiteralString = """
CREATE TABLE IF NOT EXISTS imagejobs_migrations (
    name text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""
_PROCRASTINATE_MIGRATION = re.compile(r"^(\d+)\.(\d+)\.(\d+)_")


def _checksum(sql: str) -> str:
    return hashlib.sha256(sql.encode()).hexdigest()


def _version_tuple(version: str) -> tuple[int, int, int]:
    major, minor, patch = (int(re.sub(r"\D.*", "", part) or 0) for part in version.split(".")[:3])
    return major, minor, patch


def _procrastinate_upgrades(applied: str, installed: str) -> list[Path]:
    """procrastinate's own migration files between the recorded and the installed version."""
    low, high = _version_tuple(applied), _version_tuple(installed)
    folder = Path(SchemaManager.get_migrations_path())
    selected = []
    for path in sorted(folder.glob("*.sql")):
        match = _PROCRASTINATE_MIGRATION.match(path.name)
        if match and low < tuple(int(g) for g in match.groups()) <= high:
            selected.append(path)
    return selected


async def _execute_file(
    conn: psycopg.AsyncConnection[tuple[Any, ...]], name: str, sql: str
) -> None:
    async with conn.transaction():
        await conn.execute(sql.encode())
        await conn.execute(
            "INSERT INTO imagejobs_migrations (name, checksum) VALUES (%s, %s) "
            "ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum, applied_at = now()",
            (name, _checksum(sql)),
        )
    logger.info("applied %s", name)


async def _migrate_procrastinate(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> list[str]:
    installed = importlib.metadata.version("procrastinate")
    row = await (
        await conn.execute(
            "SELECT checksum FROM imagejobs_migrations WHERE name = %s", (PROCRASTINATE,)
        )
    ).fetchone()
    exists = await (
        await conn.execute("SELECT to_regclass('procrastinate_jobs') IS NOT NULL")
    ).fetchone()
    if not (exists and exists[0]):
        async with conn.transaction():
            await conn.execute(SchemaManager.get_schema())
            await _record_procrastinate(conn, installed)
        return [f"procrastinate {installed} schema"]
    if row is None:
        # Installed by someone else (procrastinate's own CLI): adopt it as current.
        await _record_procrastinate(conn, installed)
        return []
    recorded = str(row[0])
    applied = []
    for path in _procrastinate_upgrades(recorded, installed):
        async with conn.transaction():
            await conn.execute(path.read_bytes())
        applied.append(f"procrastinate {path.name}")
    if recorded != installed:
        await _record_procrastinate(conn, installed)
    return applied


async def _record_procrastinate(
    conn: psycopg.AsyncConnection[tuple[Any, ...]], version: str
) -> None:
    # For procrastinate the ledger's checksum column holds the schema version it is at.
    await conn.execute(
        "INSERT INTO imagejobs_migrations (name, checksum) VALUES (%s, %s) "
        "ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum, applied_at = now()",
        (PROCRASTINATE, version),
    )


async def _refresh_row_level_security(conn: psycopg.AsyncConnection[tuple[Any, ...]]) -> None:
    """On Supabase (an `auth` schema), re-applies sql/008's RLS setup after every run: it covers
    tables added since (procrastinate upgrades too) and trigger functions a later migration
    replaced (CREATE OR REPLACE drops SECURITY DEFINER). A no-op when all is in place."""
    cursor = await conn.execute(
        "SELECT to_regnamespace('auth') IS NOT NULL"
        " AND to_regprocedure('imagejobs_enable_rls()') IS NOT NULL"
    )
    row = await cursor.fetchone()
    if row is not None and row[0]:
        async with conn.transaction():
            await conn.execute("SELECT imagejobs_enable_rls()")


async def migrate(database_url: str) -> list[str]:
    """Applies what is missing and returns the names of what it applied."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        await conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            await conn.execute(_CREATE_LEDGER)
            applied = await _migrate_procrastinate(conn)
            cursor = await conn.execute("SELECT name, checksum FROM imagejobs_migrations")
            done = {str(name): str(checksum) for name, checksum in await cursor.fetchall()}
            for path in migration_files():
                sql = path.read_text(encoding="utf-8")
                if path.name in done:
                    if done[path.name] != _checksum(sql):
                        logger.warning(
                            "%s changed after it was applied; not re-applying", path.name
                        )
                    continue
                await _execute_file(conn, path.name, sql)
                applied.append(path.name)
            await _refresh_row_level_security(conn)
            return applied
        finally:
            await conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
