"""The completer: procrastinate's job finishes and retries, committed in groups.

procrastinate's worker finishes (or retries) each job with its own statement
(`procrastinate_finish_job_v1`, `procrastinate_retry_job_v2`) and commit, one round trip per
job, after the job's last lifecycle write. Here the finishes that arrive while the previous
group is being committed go together in one statement (`finish_jobs`, sql/queries/jobs.sql:
procrastinate's own function, once per job), each job's worker awaiting the group as it awaited
its own statement (worker/queue/groups.py); retries likewise (`retry_jobs`). A finish or retry
procrastinate refuses (the job is no longer `doing`) fails the group, which is then made one by
one, so only that job sees the error, as before.

Retries come in thousands at once when a worker stops with thousands of jobs in flight: each
aborted job goes back to the queue with a retry, one statement per job through a pool of
twenty connections; grouped, a stop with 3,000 in flight took 6.0 s instead of 7.3 s
(docs/benchmarks.md, round four).
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from operator import attrgetter

from procrastinate.connector import BaseConnector
from procrastinate.jobs import Status

from worker.core.sqlfiles import query
from worker.queue.groups import Lane


@dataclass(frozen=True, slots=True)
class Finish:
    job_id: int
    status: Status
    delete_job: bool


@dataclass(frozen=True, slots=True)
class Retry:
    job_id: int
    retry_at: datetime
    priority: int | None
    queue: str | None
    lock: str | None


class Completer:
    def __init__(
        self,
        connector: BaseConnector,
        finish_one: Callable[[Finish], Awaitable[None]],
        retry_one: Callable[[Retry], Awaitable[None]],
    ) -> None:
        self.finishes: Lane[int, Finish, None] = Lane(
            functools.partial(_finish_group, connector),
            finish_one,
            key=attrgetter("job_id"),
            missing=None,
        )
        self.retries: Lane[int, Retry, None] = Lane(
            functools.partial(_retry_group, connector),
            retry_one,
            key=attrgetter("job_id"),
            missing=None,
        )

    async def finish(self, finish: Finish) -> None:
        await self.finishes.submit(finish)

    async def retry(self, retry: Retry) -> None:
        await self.retries.submit(retry)


async def _finish_group(connector: BaseConnector, finishes: list[Finish]) -> dict[int, None]:
    await connector.execute_query_async(
        query=query("finish_jobs"),
        job_ids=[f.job_id for f in finishes],
        statuses=[f.status.value for f in finishes],
        delete_jobs=[f.delete_job for f in finishes],
    )
    return {}


async def _retry_group(connector: BaseConnector, retries: list[Retry]) -> dict[int, None]:
    await connector.execute_query_async(
        query=query("retry_jobs"),
        job_ids=[r.job_id for r in retries],
        retry_ats=[r.retry_at for r in retries],
        priorities=[r.priority for r in retries],
        queues=[r.queue for r in retries],
        locks=[r.lock for r in retries],
    )
    return {}
