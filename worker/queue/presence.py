"""A worker's presence: a session-level advisory lock that Postgres releases when the worker dies.

Heartbeats say a worker is dead only after a silence long enough not to be a slow beat (60 s by
default). A lock held on a connection of its own says it as soon as that session ends: at once
when the process dies on a live machine (the kernel closes its socket), within about
`SERVER_KEEPALIVE_S` when the machine is lost (the server's TCP keepalives and
`tcp_user_timeout` drop the connection). The rescuer's fast pass (`worker/queue/rescuer.py`)
re-queues the `doing` jobs of workers whose lock is not held.

The lock is `pg_advisory_lock(NAMESPACE, worker_id)` (two int4 keys: pg_locks shows them as
classid, objid with objsubid 2), taken by `PresentWorker` after procrastinate registers the
worker and before it fetches its first job, and kept until the worker is unregistered, so a
draining worker keeps it. If the connection drops while the worker lives (a Postgres restart, a
network blip), it is opened again and the lock taken again at once; the rescuer waits for an
absence to last `CONFIRM_S`, and ignores absences in the first moments after Postgres started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import psycopg
from procrastinate.worker import Worker

from worker.queue.producer import BatchingJobManager

logger = logging.getLogger(__name__)

# The first key of every presence lock ("ij" + "wp" in ASCII): other advisory locks keep out of
# it. The rescuer serialises its passes on (RESCUER_NAMESPACE, 0).
NAMESPACE = 0x696A7770
RESCUER_NAMESPACE = 0x696A7772
# How often the presence connection is pinged (it is watched in between), and how soon it is
# opened again once lost.
PING_S = 1.0
RETRY_S = 0.5
# Server side (the backend's socket): a lost client machine is dropped after ~2 + 3 x 1 s of
# unanswered keepalives, or when data stays unacknowledged for 5 s. Client side likewise, so the
# worker notices a lost server as quickly and takes its lock again.
KEEPALIVE_IDLE_S = 2
KEEPALIVE_INTERVAL_S = 1
KEEPALIVE_COUNT = 3
USER_TIMEOUT_MS = 5000
SERVER_KEEPALIVE_S = KEEPALIVE_IDLE_S + KEEPALIVE_INTERVAL_S * KEEPALIVE_COUNT


def lock_key(worker_id: int) -> int:
    """The second key of a worker's lock (an int4; worker ids beyond 2**31 wrap)."""
    return worker_id & 0x7FFFFFFF


def connection_kwargs(worker_id: int) -> dict[str, Any]:
    """The presence connection's: libpq's client-side keepalives, and a name that says whose it
    is in pg_stat_activity."""
    return {
        "autocommit": True,
        "keepalives": 1,
        "keepalives_idle": KEEPALIVE_IDLE_S,
        "keepalives_interval": KEEPALIVE_INTERVAL_S,
        "keepalives_count": KEEPALIVE_COUNT,
        "tcp_user_timeout": USER_TIMEOUT_MS,
        "application_name": f"imagejobs-presence {worker_id}",
    }


class Presence:
    """Holds one worker's lock on a dedicated connection, taking it again if the connection is
    lost, until `release`."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.worker_id: int | None = None
        self._conn: psycopg.AsyncConnection[Any] | None = None
        self._keeper: asyncio.Task[None] | None = None

    @property
    def held(self) -> bool:
        return self._conn is not None and not self._conn.closed

    async def _connect_and_lock(self, worker_id: int) -> None:
        conn = await psycopg.AsyncConnection.connect(
            self.database_url, **connection_kwargs(worker_id)
        )
        try:
            # The server's side of the same socket: USERSET settings, ignored on Unix sockets.
            await conn.execute(
                "SELECT set_config('tcp_keepalives_idle', %s, false),"
                " set_config('tcp_keepalives_interval', %s, false),"
                " set_config('tcp_keepalives_count', %s, false),"
                " set_config('tcp_user_timeout', %s, false)",
                (
                    str(KEEPALIVE_IDLE_S),
                    str(KEEPALIVE_INTERVAL_S),
                    str(KEEPALIVE_COUNT),
                    str(USER_TIMEOUT_MS),
                ),
            )
            cur = await conn.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (NAMESPACE, lock_key(worker_id))
            )
            row = await cur.fetchone()
            if not (row and row[0]):
                # Another session holds it: a worker id that wrapped around. The heartbeat
                # still speaks for this worker.
                logger.warning("presence lock of worker %s is held elsewhere", worker_id)
        except BaseException:
            await conn.close()
            raise
        self._conn = conn

    async def acquire(self, worker_id: int, timeout_s: float = 10.0) -> None:
        """Takes the lock (trying again for up to `timeout_s`, then raising: the daemon starts
        the worker again), then keeps it in the background."""
        self.worker_id = worker_id
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            try:
                await self._connect_and_lock(worker_id)
                break
            except psycopg.Error as exc:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                logger.warning("presence lock not taken yet: %s", type(exc).__name__)
                await asyncio.sleep(RETRY_S)
        self._keeper = asyncio.create_task(self._keep(worker_id), name="presence")

    async def _keep(self, worker_id: int) -> None:
        while True:
            try:
                if self._conn is None or self._conn.closed:
                    raise psycopg.OperationalError("presence connection closed")
                # Waits on the socket for PING_S: a session ended by the server (a restart,
                # pg_terminate_backend) is noticed at once, not at the next ping.
                async for _ in self._conn.notifies(timeout=PING_S):
                    pass
                await self._conn.execute("SELECT 1")
            except psycopg.Error:
                logger.warning("worker %s lost its presence connection; taking it again", worker_id)
                await self._close()
                while True:
                    try:
                        await self._connect_and_lock(worker_id)
                        break
                    except psycopg.Error:
                        await asyncio.sleep(RETRY_S)

    async def _close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def release(self) -> None:
        """Gives the lock up (closing its session): only once the worker is unregistered."""
        if self._keeper is not None:
            self._keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._keeper
            self._keeper = None
        await self._close()
        self.worker_id = None


class PresentWorker(Worker):
    """A procrastinate worker that holds its presence lock from just after it registers (before
    its first fetch, so no job of it is ever `doing` without the lock) until it is unregistered
    (after its drain)."""

    def __init__(self, *args: Any, presence: Presence, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.presence = presence

    async def _run_loop(self) -> None:
        assert self.worker_id is not None
        # The producer fetches as many jobs as this worker has free slots (the one being filled
        # included: it is not among the running ones yet), and puts back what it did not start.
        producer = self.app.job_manager
        if isinstance(producer, BatchingJobManager):
            producer.room = lambda: self.concurrency - len(self._running_jobs)
        try:
            await self.presence.acquire(self.worker_id)
            await super()._run_loop()  # type: ignore[no-untyped-call]
        finally:
            if isinstance(producer, BatchingJobManager):
                producer.room = lambda: 1
            await self.presence.release()

    async def _shutdown(self, side_tasks: list[asyncio.Task[Any]]) -> None:
        # procrastinate's run loop ends with this, whatever stopped it: jobs fetched and not
        # started go back now, before the drain (they would wait for it) and before
        # procrastinate unregisters this worker.
        producer = self.app.job_manager
        if isinstance(producer, BatchingJobManager) and self.worker_id is not None:
            await producer.release(self.worker_id)
        await super()._shutdown(side_tasks=side_tasks)
