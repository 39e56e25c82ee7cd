"""The group-commit lane (worker/queue/groups.py) on its own: how groups form, and what a failed
group does. The lanes built on it are tested against Postgres in test_committer.py and
test_producer.py."""

from __future__ import annotations

import asyncio

import psycopg
import pytest
from procrastinate.exceptions import ConnectorException

from worker.queue.groups import MAX_GROUP, Lane


class Recorder:
    def __init__(self, fail_group: BaseException | None = None) -> None:
        self.fail_group = fail_group
        self.groups: list[list[tuple[str, int]]] = []
        self.alone: list[tuple[str, int]] = []

    async def write_group(self, writes: list[tuple[str, int]]) -> dict[str, int]:
        self.groups.append(writes)
        if self.fail_group is not None:
            raise self.fail_group
        return {key: value * 10 for key, value in writes if value >= 0}

    async def write_one(self, write: tuple[str, int]) -> int:
        self.alone.append(write)
        if write[1] == 13:
            raise psycopg.errors.CheckViolation("13 is refused")
        return write[1] * 10


def lane(recorder: Recorder) -> Lane[str, tuple[str, int], int]:
    return Lane(recorder.write_group, recorder.write_one, key=lambda w: w[0], missing=-1)


async def test_writes_made_at_once_form_one_group_and_each_gets_its_answer() -> None:
    recorder = Recorder()
    writes = lane(recorder)
    answers = await asyncio.gather(*(writes.submit((f"k{n}", n)) for n in range(5)))
    assert answers == [0, 10, 20, 30, 40]
    assert len(recorder.groups) == 1 and (writes.groups, writes.writes) == (1, 5)
    # A key the group leaves out of its answer did not match.
    assert await writes.submit(("late", -5)) == -1


async def test_an_idle_lane_writes_at_once_and_a_busy_one_groups() -> None:
    recorder = Recorder()
    writes = lane(recorder)
    first = asyncio.create_task(writes.submit(("a", 1)))
    await asyncio.sleep(0)  # the first group is committing
    rest = [asyncio.create_task(writes.submit((f"b{n}", n))) for n in range(3)]
    await asyncio.gather(first, *rest)
    assert [len(group) for group in recorder.groups] == [1, 3]


async def test_one_key_twice_waits_for_the_next_group_and_groups_are_capped() -> None:
    recorder = Recorder()
    writes = lane(recorder)
    many = [writes.submit((f"k{n}", n)) for n in range(MAX_GROUP + 1)]
    await asyncio.gather(writes.submit(("same", 1)), writes.submit(("same", 2)), *many)
    assert [len(group) for group in recorder.groups] == [MAX_GROUP, 3]
    assert ("same", 1) in recorder.groups[0] and ("same", 2) in recorder.groups[1]


@pytest.mark.parametrize(
    "failure",
    [psycopg.errors.CheckViolation("no"), psycopg.errors.DeadlockDetected("deadlock")],
)
async def test_a_group_that_fails_is_written_one_by_one(failure: Exception) -> None:
    recorder = Recorder(fail_group=failure)
    writes = lane(recorder)
    outcomes = await asyncio.gather(
        *(writes.submit((f"k{n}", n)) for n in (1, 13, 2)), return_exceptions=True
    )
    assert outcomes[0] == 10 and outcomes[2] == 20
    assert isinstance(outcomes[1], psycopg.errors.CheckViolation)
    assert recorder.alone == [("k1", 1), ("k13", 13), ("k2", 2)]


@pytest.mark.parametrize(
    "lost",
    [psycopg.OperationalError("server closed the connection"), psycopg.errors.AdminShutdown("x")],
)
async def test_a_lost_connection_fails_the_whole_group(lost: Exception) -> None:
    wrapped = ConnectorException("Database error.")
    wrapped.__cause__ = lost
    for error in (lost, wrapped):
        recorder = Recorder(fail_group=error)
        writes = lane(recorder)
        outcomes = await asyncio.gather(
            *(writes.submit((f"k{n}", n)) for n in range(3)), return_exceptions=True
        )
        assert outcomes == [error] * 3 and recorder.alone == []


async def test_a_failed_group_is_redone_all_at_once_not_in_a_row() -> None:
    """One write that waits (a lock, a timeout) holds up neither the others nor the lane."""

    async def slow_one(write: tuple[str, int]) -> int:
        await asyncio.sleep(0.2)
        return write[1]

    recorder = Recorder(fail_group=psycopg.errors.LockNotAvailable("lock timeout"))
    writes: Lane[str, tuple[str, int], int] = Lane(
        recorder.write_group, slow_one, key=lambda w: w[0], missing=-1
    )
    started = asyncio.get_running_loop().time()
    answers = await asyncio.gather(*(writes.submit((f"k{n}", n)) for n in range(5)))
    assert answers == [0, 1, 2, 3, 4]
    assert asyncio.get_running_loop().time() - started < 0.6


async def test_callers_are_not_left_waiting_when_the_lane_is_cancelled() -> None:
    gate = asyncio.Event()

    async def stuck_group(writes: list[tuple[str, int]]) -> dict[str, int]:
        await gate.wait()
        return {}

    async def never(write: tuple[str, int]) -> int:
        raise AssertionError("not reached")

    writes: Lane[str, tuple[str, int], int] = Lane(
        stuck_group, never, key=lambda w: w[0], missing=-1
    )
    in_group = asyncio.create_task(writes.submit(("a", 1)))
    await asyncio.sleep(0)
    waiting = asyncio.create_task(writes.submit(("b", 2)))
    await asyncio.sleep(0)
    assert writes.committing is not None
    writes.committing.cancel()
    for caller in (in_group, waiting):
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(caller, 1)
    assert writes.committing is None and writes.waiting == []
