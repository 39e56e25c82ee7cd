"""The producer: hands procrastinate's worker its jobs, many fetched per round trip, and takes
their finishes and retries back in groups (worker/queue/completer.py).

procrastinate's worker asks its job manager for one job each time a slot is free, and the
manager fetches one job per statement. With thousands of slots free and as many jobs queued,
that round trip, made one after another, was what bounded how fast a worker started its work
(docs/benchmarks.md). Here the manager fetches as many jobs as the worker has free slots (at
most MAX_BATCH) in one statement (sql/migrations/031: procrastinate's own fetch, that many
times, so the order and the cap rule are unchanged) and hands them out one per ask. A job is
held here only between two asks of the worker's fetch loop, which takes a slot for each; the
ones a stopping worker did not start are put back (`release`), their attempts untouched.
"""

from __future__ import annotations

import datetime
import logging
from collections import deque
from collections.abc import Callable, Iterable

from procrastinate.connector import BaseConnector
from procrastinate.jobs import Job, Status
from procrastinate.manager import JobManager

from worker.core.sqlfiles import query
from worker.queue.completer import Completer, Finish, Retry

logger = logging.getLogger(__name__)

# Jobs fetched in one statement, at most: each one of them is a fetch in the database, so a
# batch holds its transaction for about a millisecond per ten jobs.
MAX_BATCH = 100


class BatchingJobManager(JobManager):
    """procrastinate's job manager, with `fetch_job` served from batches, and `finish_job` and
    `retry_job` made in groups."""

    def __init__(self, connector: BaseConnector) -> None:
        super().__init__(connector)
        self.completer = Completer(connector, self._finish_one, self._retry_one)
        self._fetched: deque[Job] = deque()
        self._fetched_for: int | None = None
        # Free slots of the worker asking, the one being filled included (set by the worker;
        # without one, a job per fetch, as procrastinate does).
        self.room: Callable[[], int] = lambda: 1
        self.batches = 0

    async def fetch_job(self, queues: Iterable[str] | None, worker_id: int) -> Job | None:
        if self._fetched and self._fetched_for == worker_id:
            return self._fetched.popleft()
        if self._fetched:  # held for a worker that is gone (restarted): back to the queue
            await self.release(self._fetched_for)
        wanted = max(1, min(MAX_BATCH, self.room()))
        rows = await self.connector.execute_query_all_async(
            query=query("fetch_jobs"),
            queues=list(queues) if queues is not None else None,
            worker_id=worker_id,
            max=wanted,
        )
        if not rows:
            return None
        self.batches += 1
        jobs = [Job.from_row(row) for row in rows]
        self._fetched.extend(jobs[1:])
        self._fetched_for = worker_id
        return jobs[0]

    async def finish_job(self, job: Job, status: Status, delete_job: bool) -> None:
        assert job.id is not None
        await self.completer.finish(Finish(job.id, status, delete_job))

    async def _finish_one(self, finish: Finish) -> None:
        await self.finish_job_by_id_async(
            job_id=finish.job_id, status=finish.status, delete_job=finish.delete_job
        )

    async def retry_job(
        self,
        job: Job,
        retry_at: datetime.datetime | None = None,
        priority: int | None = None,
        queue: str | None = None,
        lock: str | None = None,
    ) -> None:
        assert job.id is not None
        when = retry_at or datetime.datetime.now(datetime.UTC)
        await self.completer.retry(Retry(job.id, when, priority, queue, lock))

    async def _retry_one(self, retry: Retry) -> None:
        await self.retry_job_by_id_async(
            job_id=retry.job_id,
            retry_at=retry.retry_at,
            priority=retry.priority,
            queue=retry.queue,
            lock=retry.lock,
        )

    @property
    def held(self) -> int:
        """Jobs fetched and not yet handed out."""
        return len(self._fetched)

    async def release(self, worker_id: int | None) -> list[int]:
        """Puts the jobs fetched and not handed out back in the queue (those whose abort was
        requested meanwhile end `aborted`, as a running one would); the ids put back. If that
        fails they stay `doing`, and the rescuer re-queues them (attempt + 1) once the worker
        is gone."""
        job_ids = [job.id for job in self._fetched if job.id is not None]
        self._fetched.clear()
        self._fetched_for = None
        if not job_ids or worker_id is None:
            return []
        try:
            rows = await self.connector.execute_query_all_async(
                query=query("release_jobs"), job_ids=job_ids, worker_id=worker_id
            )
        except Exception as error:
            logger.warning("%d fetched jobs not put back: %s", len(job_ids), type(error).__name__)
            return []
        released = [int(row["id"]) for row in rows if row["status"] == "todo"]
        logger.info("put back %d fetched jobs the worker did not start", len(released))
        return released
