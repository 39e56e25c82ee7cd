"""The producer (worker/queue/producer.py): jobs fetched many per round trip, in the order single
fetches would take them, handed out one per ask, and put back when the worker stops first."""

from __future__ import annotations

import asyncio
import datetime
import uuid
from collections.abc import AsyncIterator

import pytest
from procrastinate import App, PsycopgConnector
from procrastinate.jobs import Job, Status
from psycopg_pool import AsyncConnectionPool

from tests.factories import insert_generation
from worker.queue.producer import MAX_BATCH, BatchingJobManager


@pytest.fixture
async def producer(database_url: str) -> AsyncIterator[BatchingJobManager]:
    app = App(connector=PsycopgConnector(conninfo=database_url))
    async with app.open_async():
        yield BatchingJobManager(app.connector)


@pytest.fixture
def queue() -> str:
    """A queue of this test's own: other tests' jobs share the table."""
    return f"producer-{uuid.uuid4().hex[:8]}"


async def defer(pool: AsyncConnectionPool, queue: str, count: int) -> list[int]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT unnest(procrastinate_defer_jobs_v1(array_agg(ROW(%s, 'noop', 0, NULL, NULL,"
            " jsonb_build_object('n', i), NULL)::procrastinate_job_to_defer_v1)))"
            " FROM generate_series(1, %s) AS i",
            (queue, count),
        )
        return [int(row[0]) for row in await cur.fetchall()]


async def register_worker(pool: AsyncConnectionPool) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT worker_id FROM procrastinate_register_worker_v1()")
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def statuses(pool: AsyncConnectionPool, job_ids: list[int]) -> dict[int, tuple[str, int]]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id, status::text, attempts FROM procrastinate_jobs WHERE id = ANY(%s)",
            (job_ids,),
        )
        return {int(i): (str(s), int(a)) for i, s, a in await cur.fetchall()}


async def take(producer: BatchingJobManager, queue: str, worker_id: int, asks: int) -> list[Job]:
    """What `asks` asks of a worker's fetch loop are handed."""
    jobs = [await producer.fetch_job([queue], worker_id) for _ in range(asks)]
    return [job for job in jobs if job is not None]


async def holding(
    pool: AsyncConnectionPool, producer: BatchingJobManager, queue: str, count: int
) -> tuple[list[int], int]:
    """`count` jobs deferred and fetched in one batch for a new worker, which is handed the
    first; the ids of all, and the worker's."""
    deferred = await defer(pool, queue, count)
    worker_id = await register_worker(pool)
    producer.room = lambda: count
    assert len(await take(producer, queue, worker_id, 1)) == 1
    return deferred, worker_id


async def test_a_worker_with_free_slots_gets_them_filled_in_one_round_trip(
    pool: AsyncConnectionPool, producer: BatchingJobManager, queue: str
) -> None:
    deferred = await defer(pool, queue, 12)
    worker_id = await register_worker(pool)
    producer.room = lambda: 10

    taken = await take(producer, queue, worker_id, 10)
    assert producer.batches == 1
    assert [job.id for job in taken] == deferred[:10], "in queue order, each once"
    assert set((await statuses(pool, deferred[:10])).values()) == {("doing", 0)}

    producer.room = lambda: 1
    rest = [await producer.fetch_job([queue], worker_id) for _ in range(3)]
    assert [job.id if job else None for job in rest] == [*deferred[10:], None]
    assert producer.batches == 3


async def test_a_batch_is_never_larger_than_max_batch(
    pool: AsyncConnectionPool, producer: BatchingJobManager, queue: str
) -> None:
    await defer(pool, queue, MAX_BATCH + 5)
    worker_id = await register_worker(pool)
    producer.room = lambda: 10_000
    await producer.fetch_job([queue], worker_id)
    assert producer.held == MAX_BATCH - 1


async def test_jobs_fetched_but_not_started_go_back_untouched(
    pool: AsyncConnectionPool, producer: BatchingJobManager, queue: str
) -> None:
    deferred, worker_id = await holding(pool, producer, queue, 5)
    assert producer.held == 4

    released = await producer.release(worker_id)
    assert sorted(released) == deferred[1:]
    assert producer.held == 0
    assert await statuses(pool, deferred) == {
        deferred[0]: ("doing", 0),
        **dict.fromkeys(deferred[1:], ("todo", 0)),
    }
    # Another worker's ask gets them.
    other = await register_worker(pool)
    producer.room = lambda: 10
    again = await take(producer, queue, other, 4)
    assert [job.id for job in again] == deferred[1:]


async def test_jobs_held_for_a_worker_that_is_gone_are_put_back_first(
    pool: AsyncConnectionPool, producer: BatchingJobManager, queue: str
) -> None:
    deferred = await defer(pool, queue, 3)
    old, new = await register_worker(pool), await register_worker(pool)
    producer.room = lambda: 3
    await producer.fetch_job([queue], old)
    # A new worker (a restart) asks: what was held for the old one goes back, then is fetched.
    taken = await take(producer, queue, new, 2)
    assert [job.id for job in taken] == deferred[1:]
    assert all(job is not None and job.id in deferred for job in taken)


async def test_a_capped_workspaces_generation_ends_the_batch(
    pool: AsyncConnectionPool,
    producer: BatchingJobManager,
    queue: str,
    project_id: uuid.UUID,
    workspace_id: uuid.UUID,
) -> None:
    """The cap counts running generations, and the ones fetched before it in the batch are not
    running yet: a capped workspace's job is the last of its batch, as a single fetch sees it."""
    generations = [await insert_generation(pool, project_id) for _ in range(4)]
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE procrastinate_jobs SET queue_name = %s"
            " WHERE id IN (SELECT job_id FROM image_generations WHERE id = ANY(%s))",
            (queue, generations),
        )
        await conn.execute(
            "INSERT INTO workspace_limits (workspace_id, max_concurrency) VALUES (%s, 3)",
            (workspace_id,),
        )
    worker_id = await register_worker(pool)
    producer.room = lambda: 10
    first = await producer.fetch_job([queue], worker_id)
    assert first is not None and producer.held == 0

    async with pool.connection() as conn:
        await conn.execute("DELETE FROM workspace_limits WHERE workspace_id = %s", (workspace_id,))
    await producer.fetch_job([queue], worker_id)
    assert producer.held == 2, "uncapped, the rest come in one batch"


async def test_finishes_made_at_once_commit_as_one_group(
    pool: AsyncConnectionPool, producer: BatchingJobManager, queue: str
) -> None:
    deferred = await defer(pool, queue, 8)
    worker_id = await register_worker(pool)
    producer.room = lambda: 8
    jobs = await take(producer, queue, worker_id, 8)
    assert len(jobs) == 8

    await asyncio.gather(
        *(
            producer.finish_job(job, Status.FAILED if n == 0 else Status.SUCCEEDED, False)
            for n, job in enumerate(jobs)
        )
    )
    assert producer.completer.finishes.groups == 1
    assert await statuses(pool, deferred) == {
        deferred[0]: ("failed", 1),
        **dict.fromkeys(deferred[1:], ("succeeded", 1)),
    }


async def test_a_finish_procrastinate_refuses_fails_alone(
    pool: AsyncConnectionPool, producer: BatchingJobManager, queue: str
) -> None:
    deferred = await defer(pool, queue, 4)
    worker_id = await register_worker(pool)
    producer.room = lambda: 4
    jobs = await take(producer, queue, worker_id, 4)
    # One of them is finished by someone else first: procrastinate's finish refuses it.
    await producer.finish_job_by_id_async(
        job_id=deferred[1], status=Status.SUCCEEDED, delete_job=False
    )
    outcomes = await asyncio.gather(
        *(producer.finish_job(job, Status.SUCCEEDED, False) for job in jobs),
        return_exceptions=True,
    )
    assert [isinstance(o, Exception) for o in outcomes] == [False, True, False, False]
    assert {status for status, _ in (await statuses(pool, deferred)).values()} == {"succeeded"}


async def test_retries_made_at_once_commit_as_one_group(
    pool: AsyncConnectionPool, producer: BatchingJobManager, queue: str
) -> None:
    """What a stopping worker does with every job it aborts: each goes back to the queue with
    procrastinate's retry, as it would alone (the time, priority, queue and lock it asks)."""
    deferred = await defer(pool, queue, 6)
    worker_id = await register_worker(pool)
    producer.room = lambda: 6
    jobs = await take(producer, queue, worker_id, 6)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    other_queue = f"{queue}-moved"

    await asyncio.gather(
        producer.retry_job(jobs[0], retry_at=later),
        producer.retry_job(jobs[1], priority=7, queue=other_queue, lock="held"),
        *(producer.retry_job(job) for job in jobs[2:]),
    )
    assert producer.completer.retries.groups == 1
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id, status::text, attempts, scheduled_at > now() + interval '50 minutes',"
            " priority, queue_name, lock FROM procrastinate_jobs WHERE id = ANY(%s) ORDER BY id",
            (deferred,),
        )
        rows = {int(row[0]): row[1:] for row in await cur.fetchall()}
    assert rows[deferred[0]] == ("todo", 1, True, 0, queue, None)
    assert rows[deferred[1]] == ("todo", 1, False, 7, other_queue, "held")
    assert all(rows[job_id][:3] == ("todo", 1, False) for job_id in deferred[2:])


async def test_a_retry_procrastinate_refuses_fails_alone(
    pool: AsyncConnectionPool, producer: BatchingJobManager, queue: str
) -> None:
    deferred = await defer(pool, queue, 3)
    worker_id = await register_worker(pool)
    producer.room = lambda: 3
    jobs = await take(producer, queue, worker_id, 3)
    await producer.finish_job_by_id_async(
        job_id=deferred[0], status=Status.SUCCEEDED, delete_job=False
    )
    outcomes = await asyncio.gather(
        *(producer.retry_job(job) for job in jobs), return_exceptions=True
    )
    assert [isinstance(o, Exception) for o in outcomes] == [True, False, False]
    assert await statuses(pool, deferred) == {
        deferred[0]: ("succeeded", 1),
        deferred[1]: ("todo", 1),
        deferred[2]: ("todo", 1),
    }


async def test_jobs_held_by_a_worker_already_unregistered_still_go_back(
    pool: AsyncConnectionPool, producer: BatchingJobManager, queue: str
) -> None:
    """procrastinate sets worker_id NULL on its jobs when a worker unregisters."""
    deferred, worker_id = await holding(pool, producer, queue, 5)
    async with pool.connection() as conn:
        await conn.execute("SELECT procrastinate_unregister_worker_v1(%s)", (worker_id,))

    assert sorted(await producer.release(worker_id)) == deferred[1:]
    assert [s for s, _ in (await statuses(pool, deferred[1:])).values()] == ["todo"] * 4


async def test_a_held_job_whose_abort_was_requested_ends_aborted(
    pool: AsyncConnectionPool, producer: BatchingJobManager, queue: str
) -> None:
    """Its generation was cancelled while it waited to start: it is not put back in the queue
    (procrastinate forbids a `todo` job with an abort request), and the others still are."""
    deferred, worker_id = await holding(pool, producer, queue, 4)
    async with pool.connection() as conn:
        await conn.execute("SELECT procrastinate_cancel_job_v1(%s, true, false)", (deferred[2],))

    assert sorted(await producer.release(worker_id)) == [deferred[1], deferred[3]]
    assert await statuses(pool, deferred[1:]) == {
        deferred[1]: ("todo", 0),
        deferred[2]: ("aborted", 0),
        deferred[3]: ("todo", 0),
    }
