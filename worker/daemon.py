"""`imagejobs worker`: one procrastinate worker on the `images` queue.

procrastinate installs the SIGTERM/SIGINT handlers: it stops fetching, lets running jobs finish
for up to WORKER_SHUTDOWN_GRACE_S, then aborts the rest.
"""

from __future__ import annotations

import logging
import os
import socket

from worker.config import Settings
from worker.db import create_pool
from worker.runtime import build_runtime
from worker.tasks import QUEUE, WEBHOOK_QUEUE, app

logger = logging.getLogger(__name__)


async def run_worker(settings: Settings) -> None:
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is required for the worker")
    # One connection per running job, one for procrastinate's LISTEN, one for fetching and
    # heartbeats, one spare for the lifecycle writes between them.
    pool = create_pool(
        settings.database_url,
        min_size=2,
        max_size=settings.worker_concurrency + 3,
        name="imagejobs-worker",
    )
    async with pool, app.open_async(pool):
        runtime = build_runtime(settings, pool)
        name = f"{socket.gethostname()}:{os.getpid()}"
        logger.info("worker %s started (concurrency %d)", name, settings.worker_concurrency)
        await app.run_worker_async(
            queues=[QUEUE, WEBHOOK_QUEUE],
            name=name,
            concurrency=settings.worker_concurrency,
            additional_context={"runtime": runtime},
            shutdown_graceful_timeout=settings.worker_shutdown_grace_s,
            install_signal_handlers=True,
            fetch_job_polling_interval=5.0,
        )
    logger.info("worker %s stopped", name)
