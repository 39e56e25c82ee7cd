"""Group commit, the primitive: writes of one kind that arrive while the previous group of them
is being committed wait for it, then go together in one call, each caller awaiting its own
answer. With nothing in flight a write goes at once, so an idle worker pays no latency for it;
under load the groups grow by themselves. Used for a generation's lifecycle writes
(worker/queue/committer.py) and for procrastinate's job finishes (worker/queue/completer.py).

If a group fails on anything but a lost connection (a row a CHECK refuses, a deadlock, a job
procrastinate will not finish), its writes are made again one by one, so each caller gets its
own answer or its own error. A lost connection fails the whole group: no write of it can have
committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, Generic, TypeVar

import psycopg

logger = logging.getLogger(__name__)

# A group is cut here; the rest waits for the next one. Large enough for a burst of
# completions, small enough that one transaction holds its locks briefly.
MAX_GROUP = 200

K = TypeVar("K", bound=Hashable)
W = TypeVar("W")
R = TypeVar("R")


class Lane(Generic[K, W, R]):
    """The writes of one kind: a queue, and at most one group of them being committed.

    `write_group` writes a group in one call and answers by key; a key it leaves out gets
    `missing` (for a compare-and-set write: it did not match). `write_one` writes one on its
    own. At most one write per key goes in a group: a second waits for the next one, so the
    writes of one key land in the order they were made. `grouped=False` makes every write on
    its own, as a failed group is."""

    def __init__(
        self,
        write_group: Callable[[list[W]], Awaitable[dict[K, R]]],
        write_one: Callable[[W], Awaitable[R]],
        *,
        key: Callable[[W], K],
        missing: R,
        grouped: bool = True,
    ) -> None:
        self.write_group = write_group
        self.write_one = write_one
        self.key = key
        self.missing = missing
        self.grouped = grouped
        self.waiting: list[tuple[W, asyncio.Future[R]]] = []
        self.committing: asyncio.Task[None] | None = None
        self.groups = 0
        self.writes = 0

    async def submit(self, write: W) -> R:
        if not self.grouped:
            return await self.write_one(write)
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self.waiting.append((write, future))
        if self.committing is None:
            self.committing = asyncio.create_task(self._commit_while_waiting())
        return await future

    async def _commit_while_waiting(self) -> None:
        try:
            while self.waiting:
                await self._commit(self._next_group())
        finally:
            self.committing = None
            # Cancelled (the loop is closing): no caller may wait for ever.
            for _, future in self.waiting:
                future.cancel()
            self.waiting = []

    def _next_group(self) -> list[tuple[W, asyncio.Future[R]]]:
        group: list[tuple[W, asyncio.Future[R]]] = []
        later: list[tuple[W, asyncio.Future[R]]] = []
        seen: set[K] = set()
        for item in self.waiting:
            write, future = item
            if future.done():  # its caller was cancelled while it waited
                continue
            key = self.key(write)
            if len(group) >= MAX_GROUP or key in seen:
                later.append(item)
            else:
                seen.add(key)
                group.append(item)
        self.waiting = later
        return group

    async def _commit(self, group: list[tuple[W, asyncio.Future[R]]]) -> None:
        if not group:
            return
        try:
            answers = await self.write_group([write for write, _ in group])
        except Exception as error:
            if _connection_lost(error):
                for _, future in group:
                    _settle(future, error=error)
                return
            logger.warning(
                "a group of %d writes failed (%s); writing them one by one",
                len(group),
                type(error).__name__,
            )
            await self._one_by_one(group)
            return
        except BaseException:  # cancelled: so are the callers
            for _, future in group:
                future.cancel()
            raise
        self.groups += 1
        self.writes += len(group)
        for write, future in group:
            _settle(future, answers.get(self.key(write), self.missing))

    async def _one_by_one(self, group: list[tuple[W, asyncio.Future[R]]]) -> None:
        """Each write on its own, all at once: one that waits (a lock, a timeout) holds up
        neither the others nor the lane for longer than itself."""

        async def write_alone(write: W, future: asyncio.Future[R]) -> None:
            try:
                answer = await self.write_one(write)
            except Exception as error:
                _settle(future, error=error)
            else:
                _settle(future, answer)

        try:
            await asyncio.gather(*(write_alone(write, future) for write, future in group))
        except BaseException:
            for _, future in group:
                future.cancel()
            raise


# Server-side SQLSTATEs that mean the session is gone: class 08 (connection exception) and the
# server shutting down or starting. A deadlock or a lock timeout is an OperationalError too, but
# the session is fine: those are retried one by one.
_SESSION_GONE = ("08", "57P01", "57P02", "57P03")


def _connection_lost(error: BaseException) -> bool:
    """The connection or the pool failed (psycopg's error, or procrastinate's connector wrapping
    it as its `__cause__`): no statement of the group ran to its commit."""
    cause = error if isinstance(error, psycopg.Error) else error.__cause__
    if not isinstance(cause, psycopg.OperationalError):
        return False
    return cause.sqlstate is None or cause.sqlstate.startswith(_SESSION_GONE)


def _settle(
    future: asyncio.Future[Any], answer: Any = None, *, error: BaseException | None = None
) -> None:
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(answer)
