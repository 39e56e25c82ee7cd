"""The procrastinate app and its tasks. Jobs are deferred by the database (the INSERT trigger on
image_generations, or a re-schedule), never by Python code, so API- and SQL-created generations
run alike. The tasks are thin: the flow lives in worker/queue/pipeline.py."""

from __future__ import annotations

import asyncio
import logging
from uuid import UUID

import psycopg
from procrastinate import App, BaseRetryStrategy, JobContext, PsycopgConnector, RetryDecision
from procrastinate.jobs import Job

from worker.core import store
from worker.core.config import read_setting
from worker.core.errors import MAX_ATTEMPTS, GenerationError
from worker.queue import outgoing, pipeline, rescuer, retention
from worker.queue.outgoing import WebhookBackoff
from worker.queue.producer import BatchingJobManager
from worker.queue.runtime import Runtime
from worker.storage import deletes

logger = logging.getLogger(__name__)

QUEUE = "images"
WEBHOOK_QUEUE = "webhooks"
# The pool is handed over by `app.open_async(pool)`; the connector's own settings are unused.
app = App(connector=PsycopgConnector())
# Jobs are fetched many per round trip and finished in groups (worker/queue/producer.py).
app.job_manager = BatchingJobManager(connector=app.connector)


def _interrupted(exception: BaseException) -> bool:
    """A run cut short by a shutdown or a lost database, not by what it was doing."""
    return isinstance(exception, asyncio.CancelledError | psycopg.OperationalError)


class ShutdownRetry(BaseRetryStrategy):
    """Runs cut short by a worker shutdown (procrastinate aborts what is left after the grace
    period) or a lost database go straight back to the queue for the next worker. A job a user
    cancelled is not retried: procrastinate fails jobs whose abort was requested."""

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        return RetryDecision(retry_in={"seconds": 0}) if _interrupted(exception) else None


class TransientRetry(ShutdownRetry):
    """Also retries transient catalogue errors with exponential backoff (2 s, 4 s, ...), at most
    MAX_ATTEMPTS runs in all; honours a provider's Retry-After when it is longer."""

    base_seconds = 2.0

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if _interrupted(exception):
            return super().get_retry_decision(exception=exception, job=job)
        if not isinstance(exception, GenerationError) or not exception.retryable:
            return None
        if job.attempts + 1 >= MAX_ATTEMPTS:
            return None
        wait = self.base_seconds * 2**job.attempts
        if exception.retry_after:
            wait = max(wait, exception.retry_after)
        return RetryDecision(retry_in={"seconds": int(wait)})


def _attempt(context: JobContext) -> int:
    return (context.job.attempts if context.job else 0) + 1


@app.task(name=pipeline.GENERATE_TASK, queue=QUEUE, pass_context=True, retry=TransientRetry())
async def generate_image(context: JobContext, generation_id: str, resume: bool = False) -> None:
    await pipeline.run_generation(
        Runtime.from_context(context), UUID(generation_id), _attempt(context), resume=resume
    )


@app.task(name=pipeline.EDIT_TASK, queue=QUEUE, pass_context=True, retry=TransientRetry())
async def edit_image(context: JobContext, generation_id: str) -> None:
    await pipeline.run_edit(Runtime.from_context(context), UUID(generation_id), _attempt(context))


@app.task(name="finish_from_webhook", queue=QUEUE, pass_context=True, retry=TransientRetry())
async def finish_from_webhook(context: JobContext, generation_id: str, delivery_id: str) -> None:
    await pipeline.finish_from_webhook(
        Runtime.from_context(context), UUID(generation_id), delivery_id, _attempt(context)
    )


@app.task(name="cancel_provider_job", queue=QUEUE, pass_context=True, retry=ShutdownRetry())
async def cancel_provider_job(
    context: JobContext,
    generation_id: str,
    provider: str | None = None,
    model: str | None = None,
    provider_job_id: str | None = None,
) -> None:
    # provider, model and provider_job_id: added by a delete (sql/migrations/025) that removed
    # the row before this job ran.
    gone = (provider, model or "", provider_job_id) if provider and provider_job_id else None
    await pipeline.cancel_provider_job(Runtime.from_context(context), UUID(generation_id), gone)


@app.task(name="expire_generation", queue=QUEUE, pass_context=True, retry=ShutdownRetry())
async def expire_generation(context: JobContext, generation_id: str) -> None:
    """Scheduled for a generation's deadline by the insert trigger (sql/migrations/021)."""
    runtime = Runtime.from_context(context)
    if await store.expire_generation(runtime.lifecycle.pool, UUID(generation_id)):
        logger.info("generation %s: deadline passed, failed with timeout", generation_id)


@app.task(name="deliver_webhook", queue=WEBHOOK_QUEUE, pass_context=True, retry=WebhookBackoff())
async def deliver_webhook(
    context: JobContext, generation_id: str, event_id: int, type: str
) -> None:
    runtime = Runtime.from_context(context)
    await outgoing.deliver(
        runtime.lifecycle.pool,
        runtime.settings.outgoing_webhook_secret,
        UUID(generation_id),
        event_id,
        type,
        _attempt(context),
        policy=runtime.outbound,
        storage=runtime.storage,
    )


@app.task(name=pipeline.POLL_TASK, queue=QUEUE, pass_context=True, retry=ShutdownRetry())
async def poll_generation(
    context: JobContext, generation_id: str, submitted_at: float, seen_logs: int = 0
) -> None:
    await pipeline.poll_generation(
        Runtime.from_context(context), UUID(generation_id), submitted_at, seen_logs
    )


class DeleteRetry(ShutdownRetry):
    """A project delete held up by storage failing or a job still stopping runs again later
    (5 s, 10 s, ... up to 5 minutes apart), at most `max_attempts` times; a repeated DELETE of
    the project starts it again after that."""

    max_attempts = 12

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if _interrupted(exception):
            return super().get_retry_decision(exception=exception, job=job)
        if not isinstance(exception, OSError | deletes.StillRunning):
            return None
        if job.attempts + 1 >= self.max_attempts:
            return None
        return RetryDecision(retry_in={"seconds": int(min(300, 5 * 2**job.attempts))})


@app.task(name="delete_project", queue=QUEUE, pass_context=True, retry=DeleteRetry())
async def delete_project(context: JobContext, deletion_id: int) -> None:
    """Deferred by DELETE /v1/projects/{id} (sql/queries/deletions.sql)."""
    runtime = Runtime.from_context(context)
    if await deletes.delete_project(runtime.lifecycle.pool, runtime.storage, deletion_id):
        logger.info("project delete %s finished", deletion_id)


# Once a minute; RESCUE_CRON (6 fields for seconds) lets tests and impatient operators go faster.
# Read alone at import, where the periodic task is declared (worker/core/config.py).
RESCUE_CRON: str = read_setting("rescue_cron")


@app.periodic(cron=RESCUE_CRON, periodic_id="rescue")
@app.task(name="rescue_stalled", queue=QUEUE, pass_context=True, queueing_lock="rescue_stalled")
async def rescue_stalled(context: JobContext, timestamp: int) -> None:
    runtime = Runtime.from_context(context)
    settings = runtime.settings
    await rescuer.rescue(
        app.job_manager,
        runtime.lifecycle.pool,
        stale_s=settings.rescue_stale_s,
        grace_s=settings.rescue_grace_s,
    )


# Hourly by default; PRUNE_CRON like RESCUE_CRON (read alone at import). What is pruned and for
# how long each table keeps its rows: worker/queue/retention.py.
PRUNE_CRON: str = read_setting("prune_cron")


@app.periodic(cron=PRUNE_CRON, periodic_id="prune")
@app.task(name="prune", queue=QUEUE, pass_context=True, queueing_lock="prune")
async def prune(context: JobContext, timestamp: int) -> None:
    runtime = Runtime.from_context(context)
    await retention.prune_with_settings(runtime.lifecycle.pool, runtime.settings, runtime.storage)
