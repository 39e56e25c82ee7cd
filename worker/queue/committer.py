"""Group commit for the lifecycle writes of every job running in this worker process.

A generation's steps are compare-and-set writes (worker/queue/lifecycle.py). Written one by
one, each costs a round trip, a statement and a commit, and every status change queues on its
project's row lock until that commit. Here the writes of one kind (start, step, complete, fail)
that arrive while the previous group of that kind is being committed wait for it, then go
together: one SQL function call (sql/migrations/030), so one statement, one transaction and one
round trip, each job awaiting its own row's answer. (No pipeline: psycopg's async pipeline
spins on the always-writable socket while it waits, measured as a tenth of the worker's CPU.) With nothing in flight a write goes at once, so an idle worker pays no
latency for it; under load the groups grow by themselves.

What a client can observe does not change: the row triggers still give every generation its
own event rows, NOTIFYs and counter shifts, in order; writes a compare-and-set refuses are
refused as before. A group locks its rows first in a fixed order (sql/migrations/030). If a
group fails on anything but a lost connection (a row a CHECK refuses, a deadlock between the
starts of two capped workspaces), its writes are made again one by one, so each job gets its
own answer or its own error.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from uuid import UUID

import psycopg
from psycopg_pool import AsyncConnectionPool

from worker.core import store
from worker.core.models import Generation, Step, StoredFile

logger = logging.getLogger(__name__)

# A group is cut here; the rest waits for the next one. Large enough for a burst of
# completions, small enough that one transaction holds its locks briefly.
MAX_GROUP = 200

W = TypeVar("W", bound="_Write")
R = TypeVar("R")


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


class _Lane(Generic[W, R]):
    """The writes of one kind: a queue, and at most one group of them being committed."""

    def __init__(
        self,
        pool: AsyncConnectionPool,
        write_group: Callable[[store.Db, list[W]], Awaitable[dict[UUID, R]]],
        write_one: Callable[[W], Awaitable[R]],
        missing: R,
    ) -> None:
        self.pool = pool
        self.write_group = write_group
        self.write_one = write_one
        # A generation absent from a group's answer: the write did not match.
        self.missing = missing
        self.waiting: list[tuple[W, asyncio.Future[R]]] = []
        self.committing: asyncio.Task[None] | None = None
        self.groups = 0
        self.writes = 0

    async def submit(self, write: W) -> R:
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.waiting.append((write, future))
        if self.committing is None:
            self.committing = asyncio.create_task(self._commit_while_waiting())
        return await future

    async def _commit_while_waiting(self) -> None:
        try:
            while self.waiting:
                group = self._next_group()
                await self._commit(group)
        finally:
            self.committing = None

    def _next_group(self) -> list[tuple[W, asyncio.Future[R]]]:
        """Up to MAX_GROUP writes, at most one per generation (a second write for the same
        generation waits for the next group, so its writes land in the order they were made)."""
        group: list[tuple[W, asyncio.Future[R]]] = []
        later: list[tuple[W, asyncio.Future[R]]] = []
        seen: set[UUID] = set()
        for item in self.waiting:
            write, future = item
            if future.done():  # its job was cancelled while it waited
                continue
            if len(group) >= MAX_GROUP or write.generation_id in seen:
                later.append(item)
            else:
                seen.add(write.generation_id)
                group.append(item)
        self.waiting = later
        return group

    async def _commit(self, group: list[tuple[W, asyncio.Future[R]]]) -> None:
        if not group:
            return
        writes = [write for write, _ in group]
        try:
            answers = await self.write_group(self.pool, writes)
        except psycopg.OperationalError as error:
            # The connection is gone: no write of the group can have committed on its own.
            for _, future in group:
                _settle(future, error=error)
            return
        except psycopg.Error as error:
            logger.warning(
                "a group of %d writes failed (%s); writing them one by one",
                len(group),
                type(error).__name__,
            )
            await self._one_by_one(group)
            return
        except BaseException as error:
            for _, future in group:
                _settle(future, error=error)
            raise
        self.groups += 1
        self.writes += len(group)
        for write, future in group:
            _settle(future, answers.get(write.generation_id, self.missing))

    async def _one_by_one(self, group: list[tuple[W, asyncio.Future[R]]]) -> None:
        for write, future in group:
            try:
                answer = await self.write_one(write)
            except Exception as error:
                _settle(future, error=error)
            else:
                _settle(future, answer)


def _settle(
    future: asyncio.Future[Any], answer: Any = None, *, error: BaseException | None = None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(answer)


class Committer:
    """One lane per kind of write; see the module's doc. `grouped=False` writes each on its own
    (WORKER_GROUP_COMMIT=false), as a group that failed does."""

    def __init__(self, pool: AsyncConnectionPool, *, grouped: bool = True) -> None:
        self.pool = pool
        self.grouped = grouped
        self.starts: _Lane[Start, StartResult] = _Lane(
            pool, _start_group, self._start_one, (None, False)
        )
        self.steps: _Lane[StepTo, bool] = _Lane(pool, _step_group, self._step_one, False)
        self.completions: _Lane[Complete, bool] = _Lane(
            pool, _complete_group, self._complete_one, False
        )
        self.failures: _Lane[Fail, bool] = _Lane(pool, _fail_group, self._fail_one, False)

    @property
    def lanes(self) -> tuple[_Lane[Any, Any], ...]:
        return (self.starts, self.steps, self.completions, self.failures)

    async def start(self, write: Start) -> StartResult:
        """(the generation, now processing; None when there is nothing to run) and whether it
        went on to `processing` in the same transaction."""
        return await (self.starts.submit(write) if self.grouped else self._start_one(write))

    async def step(self, write: StepTo) -> bool:
        return await (self.steps.submit(write) if self.grouped else self._step_one(write))

    async def complete(self, write: Complete) -> bool:
        return await (self.completions.submit(write) if self.grouped else self._complete_one(write))

    async def fail(self, write: Fail) -> bool:
        return await (self.failures.submit(write) if self.grouped else self._fail_one(write))

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
