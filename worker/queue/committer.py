"""Group commit for the lifecycle writes of every job running in this worker process.

A generation's steps are compare-and-set writes (worker/queue/lifecycle.py). Written one by
one, each costs a round trip, a statement and a commit, and every status change queues on its
project's row lock until that commit. Here each kind of write (start, step, complete, fail) has
a lane (worker/queue/groups.py): the writes that arrive while the previous group of that kind
is being committed go together in one SQL function call (sql/migrations/030), so one
statement, one transaction and one round trip, each job awaiting its own row's answer. (No
pipeline: psycopg's async pipeline spins on the always-writable socket while it waits,
measured as a tenth of the worker's CPU.)

What a client can observe does not change: the row triggers still give every generation its
own event rows, NOTIFYs and counter shifts, in order; writes a compare-and-set refuses are
refused as before. A group locks its rows first in a fixed order (sql/migrations/030), so it
cannot deadlock with a writer holding one of its generations.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass, field
from operator import attrgetter
from typing import Any
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from worker.core import store
from worker.core.models import Generation, Step, StoredFile
from worker.queue.groups import Lane

_by_generation = attrgetter("generation_id")


@dataclass(frozen=True, slots=True)
class _Write:
    generation_id: UUID


@dataclass(frozen=True, slots=True)
class Start(_Write):
    count_attempt: bool
    # Providers whose generations, with no source to fetch, go on to `processing` in the
    # same transaction (the `fetching` and `processing` events both written, in order).
    straight_to_processing: tuple[str, ...]
    processing_progress: int


@dataclass(frozen=True, slots=True)
class StepTo(_Write):
    step: Step
    progress: int


@dataclass(frozen=True, slots=True)
class Complete(_Write):
    result: StoredFile
    thumbnail: StoredFile | None
    metadata: dict[str, Any] = field(hash=False)
    # `saving` written just before, in the same transaction.
    saving_progress: int | None


@dataclass(frozen=True, slots=True)
class Fail(_Write):
    error_code: str
    error_message: str


StartResult = tuple[Generation | None, bool]


class Committer:
    """One lane per kind of write; see the module's doc. `grouped=False` writes each on its own
    (WORKER_GROUP_COMMIT=false), as a group that failed does."""

    def __init__(self, pool: AsyncConnectionPool, *, grouped: bool = True) -> None:
        self.pool = pool
        self.starts: Lane[UUID, Start, StartResult] = Lane(
            functools.partial(_start_group, pool),
            self._start_one,
            key=_by_generation,
            missing=(None, False),
            grouped=grouped,
        )
        self.steps: Lane[UUID, StepTo, bool] = Lane(
            functools.partial(_step_group, pool),
            self._step_one,
            key=_by_generation,
            missing=False,
            grouped=grouped,
        )
        self.completions: Lane[UUID, Complete, bool] = Lane(
            functools.partial(_complete_group, pool),
            self._complete_one,
            key=_by_generation,
            missing=False,
            grouped=grouped,
        )
        self.failures: Lane[UUID, Fail, bool] = Lane(
            functools.partial(_fail_group, pool),
            self._fail_one,
            key=_by_generation,
            missing=False,
            grouped=grouped,
        )

    async def start(self, write: Start) -> StartResult:
        """(the generation, now processing; None when there is nothing to run) and whether it
        went on to `processing` in the same transaction."""
        return await self.starts.submit(write)

    async def step(self, write: StepTo) -> bool:
        return await self.steps.submit(write)

    async def complete(self, write: Complete) -> bool:
        return await self.completions.submit(write)

    async def fail(self, write: Fail) -> bool:
        return await self.failures.submit(write)

    # One by one: what a failed group falls back to, and what grouped=False always does.

    async def _start_one(self, write: Start) -> StartResult:
        return await store.start_generation(
            self.pool,
            write.generation_id,
            count_attempt=write.count_attempt,
            straight_to_processing=write.straight_to_processing,
            processing_progress=write.processing_progress,
        )

    async def _step_one(self, write: StepTo) -> bool:
        return await store.set_step(self.pool, write.generation_id, write.step, write.progress)

    async def _complete_one(self, write: Complete) -> bool:
        return await store.complete_generation(
            self.pool,
            write.generation_id,
            write.result,
            write.metadata,
            write.thumbnail,
            saving_progress=write.saving_progress,
        )

    async def _fail_one(self, write: Fail) -> bool:
        return await store.fail_generation(
            self.pool, write.generation_id, write.error_code, write.error_message
        )


def _ids(writes: Collection[_Write]) -> list[UUID]:
    return [write.generation_id for write in writes]


async def _start_group(db: store.Db, writes: list[Start]) -> dict[UUID, StartResult]:
    started = await store.start_generations(
        db,
        _ids(writes),
        [w.count_attempt for w in writes],
        [w.straight_to_processing for w in writes],
        [w.processing_progress for w in writes],
    )
    return {
        generation_id: (generation, generation.step == "processing")
        for generation_id, generation in started.items()
    }


async def _step_group(db: store.Db, writes: list[StepTo]) -> dict[UUID, bool]:
    written = await store.set_steps(
        db, _ids(writes), [w.step for w in writes], [w.progress for w in writes]
    )
    return dict.fromkeys(written, True)


async def _complete_group(db: store.Db, writes: list[Complete]) -> dict[UUID, bool]:
    written = await store.complete_generations(
        db,
        _ids(writes),
        [w.result for w in writes],
        [w.thumbnail for w in writes],
        [w.metadata for w in writes],
        [w.saving_progress for w in writes],
    )
    return dict.fromkeys(written, True)


async def _fail_group(db: store.Db, writes: list[Fail]) -> dict[UUID, bool]:
    written = await store.fail_generations(
        db, _ids(writes), [w.error_code for w in writes], [w.error_message for w in writes]
    )
    return dict.fromkeys(written, True)
