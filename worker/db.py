"""The one way to get a Postgres connection pool, shared by the API and the worker."""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

_encoder = msgspec.json.Encoder()


def _dumps(value: Any) -> str:
    return _encoder.encode(value).decode()


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    set_json_dumps(_dumps, conn)
    set_json_loads(msgspec.json.decode, conn)


def create_pool(
    database_url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    name: str = "imagejobs",
    autocommit: bool = False,
    timeout: float = 30.0,
) -> AsyncConnectionPool:
    """An unopened pool: `await pool.open()` (or `async with`) before use.

    Connections are transactional by default (what procrastinate expects of a shared pool):
    `async with pool.connection()` commits when the block ends.
    """
    return AsyncConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        name=name,
        open=False,
        kwargs={"autocommit": True} if autocommit else {},
        configure=_configure,
        check=AsyncConnectionPool.check_connection,
        timeout=timeout,
    )
