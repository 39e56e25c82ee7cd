"""`imagejobs worker`: a procrastinate worker on the `images` and `webhooks` queues.

SIGTERM/SIGINT: stop fetching, let running jobs finish for up to WORKER_SHUTDOWN_GRACE_S, abort
the rest (their retry strategy sends them straight back to the queue), exit 0. Two procrastinate
gaps are closed here: it stops heartbeats while draining (so a long drain looks like a dead
worker to the rescuer) and ignores abort requests during shutdown. If the worker stops for any
other reason — the database went away — it is started again, with backoff.

Each worker holds a presence lock from its registration to its unregistration (a drain
included), and every worker runs the rescuer's fast pass: a worker killed or lost is noticed in
seconds, not after its heartbeat goes stale (worker/queue/presence.py, worker/queue/rescuer.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket

from procrastinate.middleware import TaskMiddleware
from procrastinate.worker import Worker

from worker.core.catalogue import default_model_warnings
from worker.core.config import Settings
from worker.core.db import create_pool
from worker.core.observability import report_task_errors
from worker.queue.presence import Presence, PresentWorker
from worker.queue.rescuer import fast_rescue
from worker.queue.runtime import build_runtime
from worker.queue.tasks import QUEUE, WEBHOOK_QUEUE, app

logger = logging.getLogger(__name__)

MAX_RESTART_DELAY_S = 30.0


async def keep_beating_while_draining(
    worker: Worker, stopping: asyncio.Event, interval_s: float
) -> None:
    """Once a stop is requested, keep the worker's heartbeat fresh and honour abort requests
    until procrastinate unregisters it (its own side tasks are already cancelled by then)."""
    await stopping.wait()
    handle_aborts = getattr(worker, "_handle_abort_jobs_requested", None)
    while worker.worker_id is not None:
        try:
            await app.job_manager.update_heartbeat(worker.worker_id)
            if handle_aborts is not None:
                handle_aborts(await app.job_manager.list_jobs_to_abort_async())
        except Exception as exc:
            logger.warning("drain heartbeat failed: %s", type(exc).__name__)
        await asyncio.sleep(interval_s)


# Around every task this worker runs: Sentry's per-run scope (worker/core/observability.py).
TASK_MIDDLEWARE: list[TaskMiddleware] = [report_task_errors]


async def run_worker(settings: Settings) -> None:
    if not settings.database_url:
        raise SystemExit("DATABASE_URL is required for the worker")
    # A job holds a connection only for each statement it runs, never across a provider wait,
    # so the pool is sized by what the database can serve, not by the concurrency: at most one
    # per running job, procrastinate's LISTEN, fetching and heartbeats, and a spare, capped by
    # WORKER_DB_POOL_MAX however many generations are in flight. The presence lock has a
    # connection of its own, outside the pool.
    pool = create_pool(
        settings.database_url,
        min_size=2,
        max_size=min(settings.worker_concurrency + 3, settings.worker_db_pool_max),
        name="imagejobs-worker",
    )
    name = f"{socket.gethostname()}:{os.getpid()}"
    stopping = asyncio.Event()
    current: Worker | None = None

    def request_stop() -> None:
        logger.info("worker %s: stop requested, draining", name)
        stopping.set()
        if current is not None:
            current.stop()  # type: ignore[no-untyped-call]

    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, request_stop)

    presence = Presence(settings.database_url)
    async with (
        pool,
        app.open_async(pool),
        fast_rescue(
            pool,
            [QUEUE, WEBHOOK_QUEUE],
            interval_s=settings.rescue_fast_s,
            grace_s=settings.rescue_grace_s,
        ),
    ):
        runtime = build_runtime(settings, pool)
        await runtime.storage.prepare()
        for warning in await default_model_warnings(pool):
            logger.warning(warning)
        delay = 1.0
        try:
            while not stopping.is_set():
                current = PresentWorker(
                    app,
                    presence=presence,
                    queues=[QUEUE, WEBHOOK_QUEUE],
                    name=name,
                    concurrency=settings.worker_concurrency,
                    additional_context={"runtime": runtime},
                    shutdown_graceful_timeout=settings.worker_shutdown_grace_s,
                    install_signal_handlers=False,
                    # Jobs scheduled for later (run_at, deadlines, rate-limit resumes, polls)
                    # send no NOTIFY when they come due: one index probe a second finds them.
                    fetch_job_polling_interval=1.0,
                    update_heartbeat_interval=settings.heartbeat_interval_s,
                    task_middleware=TASK_MIDDLEWARE,
                )
                keeper = asyncio.create_task(
                    keep_beating_while_draining(
                        current, stopping, min(settings.heartbeat_interval_s, 5.0)
                    )
                )
                logger.info("worker %s started (concurrency %d)", name, settings.worker_concurrency)
                started = loop.time()
                try:
                    await current.run()  # type: ignore[no-untyped-call]
                except Exception:
                    logger.exception("worker %s stopped on an error", name)
                finally:
                    keeper.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await keeper
                if loop.time() - started > 60:
                    delay = 1.0
                if not stopping.is_set():
                    logger.warning("worker %s restarting in %.0f s", name, delay)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), delay)
                    delay = min(delay * 2, MAX_RESTART_DELAY_S)
        finally:
            await runtime.storage.aclose()
    logger.info("worker %s stopped", name)
