"""The rescuer: finds work that a dead worker left behind and queues it again.

procrastinate notices dead workers (stale heartbeats) but re-queues nothing by itself. Once a
minute, on one worker (a periodic task), this re-queues the `doing` jobs of workers silent for
RESCUE_STALE_S, and gives a new job to pending/processing generations whose job is gone. A job
that runs again counts an attempt: a generation that has used MAX_ATTEMPTS is failed here with
`timeout` instead (the generate and edit tasks alike), and its status event says why.
"""

from __future__ import annotations

import logging

from procrastinate.manager import JobManager
from psycopg_pool import AsyncConnectionPool

from worker.core import store
from worker.core.errors import MAX_ATTEMPTS

logger = logging.getLogger(__name__)


async def rescue(
    job_manager: JobManager, pool: AsyncConnectionPool, *, stale_s: float, grace_s: float
) -> tuple[int, int]:
    """Returns (jobs re-queued, generations given a new job)."""
    stalled = list(await job_manager.get_stalled_jobs(seconds_since_heartbeat=stale_s))
    exhausted = await store.give_up_on_exhausted_generations(
        pool, [job.id for job in stalled if job.id is not None], grace_s, MAX_ATTEMPTS
    )
    for generation_id in exhausted:
        logger.warning(
            "generation %s gave up after %s attempts: its worker stopped each time",
            generation_id,
            MAX_ATTEMPTS,
        )
    for job in stalled:
        logger.warning("re-queueing job %s (%s) of a dead worker", job.id, job.task_name)
        await job_manager.retry_job(job)
    orphans = await store.rescue_orphaned_generations(pool, grace_s)
    for generation_id in orphans:
        logger.warning("generation %s had no live job; queued it again", generation_id)
    return len(stalled), len(orphans)
