"""The one way to get a Postgres connection pool, shared by the API and the worker."""

from __future__ import annotations

import time
import weakref
from typing import Any

import msgspec
import psycopg
from psycopg.types.json import set_json_dumps, set_json_loads
from psycopg_pool import AsyncConnectionPool

from worker.core.jsonenc import encode_str

# A connection handed back to the pool in a good state this recently is taken as alive without a
# round trip; older ones are pinged. Checking every checkout doubled the round trips of every
# one-statement write. A connection that died inside the window fails its statement and the
# pool discards it; callers already treat OperationalError as transient (503, job retry).
RECENTLY_RETURNED_S = 2.0
_returned_at: weakref.WeakKeyDictionary[psycopg.AsyncConnection[Any], float] = (
    weakref.WeakKeyDictionary()
)


async def _configure(conn: psycopg.AsyncConnection[Any]) -> None:
    set_json_dumps(encode_str, conn)
    set_json_loads(msgspec.json.decode, conn)


async def _configure_autocommit(conn: psycopg.AsyncConnection[Any]) -> None:
    await _configure(conn)
    await conn.set_autocommit(True)


async def _stamp_return(conn: psycopg.AsyncConnection[Any]) -> None:
    _returned_at[conn] = time.monotonic()


async def _check_unless_recent(conn: psycopg.AsyncConnection[Any]) -> None:
    returned = _returned_at.get(conn)
    if returned is not None and time.monotonic() - returned < RECENTLY_RETURNED_S:
        return
    await AsyncConnectionPool.check_connection(conn)


# psycopg_pool retries a lost connection with exponential backoff (1, 2, 4, 8 s, ...) for
# `reconnect_timeout`: after a 10 s outage the next attempt could be 5-15 s after Postgres is
# back, and an idle API answered 503 all that time. Instead each attempt gives up after this
# long and a fresh one, whose first try is immediate, replaces it: during an outage the pool
# tries about once a second, and is back within a second of Postgres.
RECONNECT_TIMEOUT_S = 2.0


async def _reconnect_again(pool: AsyncConnectionPool) -> None:
    if not pool.closed:
        # check() grows the pool back towards min_size with a new attempt, started at once.
        await pool.check()


def create_pool(
    database_url: str,
    *,
    min_size: int = 1,
    max_size: int = 10,
    name: str = "imagejobs",
    autocommit: bool = True,
    timeout: float = 30.0,
) -> AsyncConnectionPool:
    """An unopened pool: `await pool.open()` (or `async with`) before use.

    Connections are in autocommit mode: a statement commits on its own, in one round trip
    (psycopg would otherwise send BEGIN and COMMIT around it). Work that must be atomic across
    statements says so with `async with conn.transaction()`. procrastinate's queries are single
    statements, so the worker shares this pool with it.
    """
    return AsyncConnectionPool(
        database_url,
        min_size=min_size,
        max_size=max_size,
        name=name,
        # pg_stat_activity says which process a connection belongs to (imagejobs-api, -worker).
        kwargs={"application_name": name},
        open=False,
        # Set in `configure`, not `kwargs`: procrastinate opens its LISTEN connection with the
        # pool's kwargs plus its own autocommit=True.
        configure=_configure_autocommit if autocommit else _configure,
        reset=_stamp_return,
        check=_check_unless_recent,
        timeout=timeout,
        reconnect_timeout=RECONNECT_TIMEOUT_S,
        reconnect_failed=_reconnect_again,
    )
