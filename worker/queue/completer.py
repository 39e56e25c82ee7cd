"""The completer: procrastinate's job finishes, committed in groups.

procrastinate's worker finishes each job with its own statement (`procrastinate_finish_job_v1`)
and commit, one round trip per job, after the job's last lifecycle write. Here the finishes that
arrive while the previous group is being committed go together in one statement
(`finish_jobs`, sql/queries/jobs.sql: procrastinate's own function, once per job), each job's
worker awaiting the group as it awaited its own statement (worker/queue/groups.py). A finish
procrastinate refuses (the job is no longer `doing` or `todo`) fails the group, which is then
made one by one, so only that job sees the error, as before.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
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


class Completer:
    def __init__(
        self, connector: BaseConnector, finish_one: Callable[[Finish], Awaitable[None]]
    ) -> None:
        self.lane: Lane[int, Finish, None] = Lane(
            functools.partial(_finish_group, connector),
            finish_one,
            key=attrgetter("job_id"),
            missing=None,
        )

    async def finish(self, finish: Finish) -> None:
        await self.lane.submit(finish)


async def _finish_group(connector: BaseConnector, finishes: list[Finish]) -> dict[int, None]:
    await connector.execute_query_async(
        query=query("finish_jobs"),
        job_ids=[f.job_id for f in finishes],
        statuses=[f.status.value for f in finishes],
        delete_jobs=[f.delete_job for f in finishes],
    )
    return {}
