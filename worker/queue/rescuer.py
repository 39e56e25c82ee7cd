"""The rescuer: finds work that a dead worker left behind and queues it again.

procrastinate notices dead workers (stale heartbeats) but re-queues nothing by itself. Two passes
do it here:

- **The fast pass** (`FastRescuer`, every RESCUE_FAST_S in every worker's daemon): a `doing`
  job whose worker's presence lock (worker/queue/presence.py) is not held, and has not been for
  CONFIRM_S, belonged to a worker that is gone (its session ended: killed, machine lost). It is
  re-queued within a few seconds, without waiting for a stale heartbeat.
- **The slow pass** (`rescue`, the periodic task `rescue_stalled` on RESCUE_CRON, once a minute
  by default, on one worker): the fallback. It re-queues the `doing` jobs of workers silent for
  RESCUE_STALE_S (a worker whose lock could not be told apart: a wrapped worker id), and gives a
  new job to pending/processing generations whose job is gone.

A job that runs again counts an attempt (procrastinate's retry, attempt + 1): a generation that
has used MAX_ATTEMPTS is failed here with `timeout` instead (the generate and edit tasks alike),
and its status event says why. Re-queued jobs wake the workers listening on their queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from uuid import UUID

import psycopg
from procrastinate.manager import JobManager
from psycopg_pool import AsyncConnectionPool

from worker.core import store
from worker.core.errors import MAX_ATTEMPTS
from worker.queue.presence import NAMESPACE

logger = logging.getLogger(__name__)

# An absence shorter than this is a live worker opening its presence connection again (it tries
# every 0.5 s); a dead worker's jobs are re-queued this long after its lock went.
CONFIRM_S = 2.0
# For this long after Postgres started, every worker's lock is absent while it reconnects: the
# fast pass waits (the heartbeat pass does not).
SETTLE_S = 15.0


def _log_exhausted(generation_ids: Sequence[UUID]) -> None:
    for generation_id in generation_ids:
        logger.warning(
            "generation %s gave up after %s attempts: its worker stopped each time",
            generation_id,
            MAX_ATTEMPTS,
        )


async def rescue(
    job_manager: JobManager, pool: AsyncConnectionPool, *, stale_s: float, grace_s: float
) -> tuple[int, int]:
    """The slow pass. Returns (jobs re-queued, generations given a new job)."""
    stalled = list(await job_manager.get_stalled_jobs(seconds_since_heartbeat=stale_s))
    exhausted = await store.give_up_on_exhausted_generations(
        pool, [job.id for job in stalled if job.id is not None], grace_s, MAX_ATTEMPTS
    )
    _log_exhausted(exhausted)
    requeued = 0
    for job in stalled:
        if job.id is None:
            continue
        logger.warning("re-queueing job %s (%s) of a dead worker", job.id, job.task_name)
        try:
            # Only if still `doing`: the fast pass may have re-queued it meanwhile.
            requeued += len(await store.requeue_jobs(pool, [job.id]))
        except psycopg.Error as exc:
            logger.warning("job %s not re-queued: %s", job.id, type(exc).__name__)
    orphans = await store.rescue_orphaned_generations(pool, grace_s)
    for generation_id in orphans:
        logger.warning("generation %s had no live job; queued it again", generation_id)
    return requeued, len(orphans)


class FastRescuer:
    """The fast pass: one per worker process. Each pass is one indexed query (the `doing` jobs
    against pg_locks); only jobs seen without their worker's lock for `confirm_s` are re-checked
    under a row lock and re-queued, so two workers' passes never re-queue one job twice."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        queues: Sequence[str],
        *,
        grace_s: float,
        confirm_s: float = CONFIRM_S,
        settle_s: float = SETTLE_S,
    ) -> None:
        self.pool = pool
        self.queues = list(queues)
        self.grace_s = grace_s
        self.confirm_s = confirm_s
        self.settle_s = settle_s
        self._absent_since: dict[int, float] = {}

    async def run_once(self) -> int:
        """Jobs re-queued by this pass."""
        now = time.monotonic()
        absent = await store.jobs_of_absent_workers(
            self.pool, self.queues, namespace=NAMESPACE, settle_s=self.settle_s
        )
        self._absent_since = {job: self._absent_since.get(job, now) for job in absent}
        due = [job for job, since in self._absent_since.items() if now - since >= self.confirm_s]
        if not due:
            return 0
        async with store.transaction(self.pool) as conn:
            confirmed = await store.jobs_of_absent_workers(
                conn, self.queues, namespace=NAMESPACE, settle_s=self.settle_s, job_ids=due
            )
            if not confirmed:
                return 0
            exhausted = await store.give_up_on_exhausted_generations(
                conn, confirmed, self.grace_s, MAX_ATTEMPTS
            )
            requeued = await store.requeue_jobs(conn, confirmed)
        _log_exhausted(exhausted)
        for job_id in requeued:
            self._absent_since.pop(job_id, None)
        logger.warning(
            "re-queued %d job(s) of a dead worker (presence lock gone): %s",
            len(requeued),
            ", ".join(map(str, requeued)),
        )
        return len(requeued)

    async def run_forever(self, interval_s: float) -> None:
        while True:
            try:
                await self.run_once()
            except Exception as exc:
                logger.warning("fast rescue pass failed: %s", type(exc).__name__)
            await asyncio.sleep(interval_s)


@contextlib.asynccontextmanager
async def fast_rescue(
    pool: AsyncConnectionPool, queues: Sequence[str], *, interval_s: float, grace_s: float
) -> AsyncIterator[None]:
    """Runs the fast pass every `interval_s` for the block (not at all when it is 0)."""
    if interval_s <= 0:
        yield
        return
    task = asyncio.create_task(
        FastRescuer(pool, queues, grace_s=grace_s).run_forever(interval_s), name="fast rescue"
    )
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
