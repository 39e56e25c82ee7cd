"""Group commit (worker/queue/committer.py): writes made at once by many jobs commit together,
each job gets its own row's answer, and what the triggers record per generation is unchanged."""

from __future__ import annotations

import asyncio
import uuid

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from tests.factories import insert_generation
from tests.worker.conftest import event_trail, generation_row
from worker.core.models import StoredFile
from worker.queue.committer import Committer, Complete, Fail, Start, StepTo

PROVIDERS = ("local",)


def start(generation_id: uuid.UUID) -> Start:
    return Start(
        generation_id, count_attempt=True, straight_to_processing=PROVIDERS, processing_progress=50
    )


def complete(generation_id: uuid.UUID, url: str | None = None) -> Complete:
    key = f"results/{generation_id}.png"
    return Complete(
        generation_id,
        result=StoredFile(key=key, url=url or f"http://files.test/{key}"),
        thumbnail=None,
        metadata={"width": 64},
        saving_progress=80,
    )


async def counts(pool: AsyncConnectionPool, project_id: uuid.UUID) -> tuple[int, ...]:
    """The project's counters, beside what counting its rows gives."""
    async with pool.connection() as conn:
        cur = await conn.execute(
            """SELECT p.pending_count, p.processing_count, p.completed_count, p.failed_count,
                      p.cancelled_count,
                      count(*) FILTER (WHERE g.status = 'pending'),
                      count(*) FILTER (WHERE g.status = 'processing'),
                      count(*) FILTER (WHERE g.status = 'completed'),
                      count(*) FILTER (WHERE g.status = 'failed'),
                      count(*) FILTER (WHERE g.status = 'cancelled')
               FROM projects p LEFT JOIN image_generations g ON g.project_id = p.id
               WHERE p.id = %s GROUP BY p.id""",
            (project_id,),
        )
        row = await cur.fetchone()
    assert row is not None
    assert tuple(row[:5]) == tuple(row[5:]), "the counters match the rows"
    return tuple(row[:5])


async def generations(pool: AsyncConnectionPool, project_id: uuid.UUID, n: int) -> list[uuid.UUID]:
    return [await insert_generation(pool, project_id, job_id=-1) for _ in range(n)]


async def started(
    pool: AsyncConnectionPool, project_id: uuid.UUID, n: int
) -> tuple[Committer, list[uuid.UUID]]:
    """A committer and `n` generations it has started (in one group)."""
    ids = await generations(pool, project_id, n)
    committer = Committer(pool)
    await asyncio.gather(*(committer.start(start(i)) for i in ids))
    return committer, ids


async def test_writes_made_at_once_commit_as_one_group_each_with_its_own_answer(
    pool: AsyncConnectionPool, project_id: uuid.UUID
) -> None:
    ids = await generations(pool, project_id, 30)
    committer = Committer(pool)

    started = await asyncio.gather(*(committer.start(start(i)) for i in ids))
    assert [(g.id if g else None, went_on) for g, went_on in started] == [(i, True) for i in ids]
    assert all(
        g is not None and (g.status, g.step, g.attempts) == ("processing", "processing", 1)
        for g, _ in started
    )
    assert (committer.starts.groups, committer.starts.writes) == (1, 30)

    # One is cancelled while the model works: its completion is refused, the others land.
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE image_generations SET status = 'cancelled' WHERE id = %s", (ids[7],)
        )
    completed = await asyncio.gather(*(committer.complete(complete(i)) for i in ids))
    assert completed == [i != ids[7] for i in ids]
    assert committer.completions.groups == 1

    assert await counts(pool, project_id) == (0, 0, 29, 0, 1)
    for generation_id in ids:
        trail = await event_trail(pool, generation_id)
        head = [
            ("status", "pending", "queued", 0),
            ("status", "processing", "fetching", 10),
            ("progress", "processing", "processing", 50),
        ]
        if generation_id == ids[7]:
            assert trail == [*head, ("status", "cancelled", "cancelled", 50)]
        else:
            assert trail == [
                *head,
                ("progress", "processing", "saving", 80),
                ("status", "completed", "completed", 100),
            ]
            row = await generation_row(pool, generation_id)
            assert row["result_key"] == f"results/{generation_id}.png"
            metadata = row["metadata"]
            assert isinstance(metadata, dict) and metadata["width"] == 64  # merged into it


async def test_steps_and_failures_group_too(
    pool: AsyncConnectionPool, project_id: uuid.UUID
) -> None:
    committer, ids = await started(pool, project_id, 6)

    stepped = await asyncio.gather(
        *(committer.step(StepTo(i, step="saving", progress=80)) for i in ids)
    )
    failed = await asyncio.gather(
        *(
            committer.fail(Fail(i, error_code="no_result", error_message="nothing came back"))
            for i in ids[:3]
        )
    )
    assert stepped == [True] * 6 and failed == [True] * 3
    assert (committer.steps.groups, committer.failures.groups) == (1, 1)
    # A failure of a finished generation is refused: compare-and-set, as one by one.
    assert await committer.fail(Fail(ids[0], error_code="timeout", error_message="late")) is False

    row = await generation_row(pool, ids[1])
    assert (row["status"], row["error_code"], row["error_message"]) == (
        "failed",
        "no_result",
        "nothing came back",
    )
    assert await counts(pool, project_id) == (0, 3, 0, 3, 0)


async def test_two_writes_for_one_generation_land_in_the_order_they_were_made(
    pool: AsyncConnectionPool, project_id: uuid.UUID
) -> None:
    (generation_id,) = await generations(pool, project_id, 1)
    committer = Committer(pool)
    await committer.start(start(generation_id))
    await asyncio.gather(
        committer.step(StepTo(generation_id, step="uploading", progress=60)),
        committer.step(StepTo(generation_id, step="saving", progress=80)),
    )
    assert committer.steps.groups == 2
    trail = await event_trail(pool, generation_id)
    assert [step for _, _, step, _ in trail][-2:] == ["uploading", "saving"]


async def test_a_write_the_group_cannot_make_fails_alone(
    pool: AsyncConnectionPool, project_id: uuid.UUID
) -> None:
    committer, ids = await started(pool, project_id, 5)

    # The CHECK on result URLs refuses one row, which fails the group's statement: the group
    # is written again one by one, so only that job sees the error.
    outcomes = await asyncio.gather(
        *(
            committer.complete(complete(i, "javascript:alert(1)" if i == ids[2] else None))
            for i in ids
        ),
        return_exceptions=True,
    )
    assert isinstance(outcomes[2], psycopg.errors.CheckViolation)
    assert [o for k, o in enumerate(outcomes) if k != 2] == [True] * 4
    assert (await generation_row(pool, ids[2]))["status"] == "processing"
    assert await counts(pool, project_id) == (0, 1, 4, 0, 0)


async def test_a_group_waits_for_a_writer_holding_one_of_its_rows_without_deadlocking(
    pool: AsyncConnectionPool, project_id: uuid.UUID
) -> None:
    """A cancel holds one generation of a group of starts, then takes the project's row. The
    starts run one statement per generation, each taking the project's row for its counters:
    were the group to hold the project's row when it reached the cancel's generation, the two
    would wait for each other (Postgres aborts one after deadlock_timeout). The group takes its
    generations' rows first, so the cancel goes through and the group refuses that one."""
    first, held = sorted(await generations(pool, project_id, 2))
    committer = Committer(pool)

    async with pool.connection() as conn:
        async with conn.transaction():
            await conn.execute("SET LOCAL deadlock_timeout = '100ms'")
            await conn.execute(
                "SELECT 1 FROM image_generations WHERE id = %s FOR NO KEY UPDATE", (held,)
            )
            group = asyncio.gather(*(committer.start(start(i)) for i in (first, held)))
            await asyncio.sleep(0.3)
            assert not group.done(), "the group waits for the row"
            await conn.execute(
                "UPDATE image_generations SET status = 'cancelled' WHERE id = %s", (held,)
            )
        answers = await asyncio.wait_for(group, 10)

    assert [(g.id if g else None, went_on) for g, went_on in answers] == [
        (first, True),
        (None, False),
    ]
    assert committer.starts.groups == 1, "the group went through, not one by one"
    assert await counts(pool, project_id) == (0, 1, 0, 0, 1)


async def test_one_by_one_when_grouping_is_off(
    pool: AsyncConnectionPool, project_id: uuid.UUID
) -> None:
    ids = await generations(pool, project_id, 3)
    committer = Committer(pool, grouped=False)
    started = await asyncio.gather(*(committer.start(start(i)) for i in ids))
    assert all(g is not None and went_on for g, went_on in started)
    assert await asyncio.gather(*(committer.complete(complete(i)) for i in ids)) == [True] * 3
    assert committer.starts.groups == committer.completions.groups == 0
    assert await counts(pool, project_id) == (0, 0, 3, 0, 0)


@pytest.mark.parametrize("cap", [1, 2])
async def test_a_group_of_starts_keeps_a_workspace_to_its_concurrency_cap(
    pool: AsyncConnectionPool, project_id: uuid.UUID, workspace_id: uuid.UUID, cap: int
) -> None:
    async with pool.connection() as conn:
        await conn.execute(
            "INSERT INTO workspace_limits (workspace_id, max_concurrency) VALUES (%s, %s)",
            (workspace_id, cap),
        )
    ids = await generations(pool, project_id, 5)
    committer = Committer(pool)
    started = await asyncio.gather(*(committer.start(start(i)) for i in ids))
    assert committer.starts.groups == 1
    assert sum(g is not None for g, _ in started) == cap
    assert await counts(pool, project_id) == (5 - cap, cap, 0, 0, 0)


async def test_two_groups_of_starts_in_two_capped_workspaces_do_not_deadlock(
    pool: AsyncConnectionPool,
) -> None:
    """Two workers' groups of starts, each with a generation of workspace W1 and one of W2, in
    opposite project order. The caps' advisory locks last until commit; were they taken row by
    row, in project order, the first group would hold W2's and wait for W1's while the second
    held W1's and waited for W2's. They are taken up front, in key order."""
    w1, w2 = uuid.uuid4(), uuid.uuid4()
    prefix = uuid.uuid4().hex[:24]
    pa, pb, pc = (uuid.UUID(f"{prefix}{n:08x}") for n in (1, 2, 3))
    async with pool.connection() as conn:
        for project, workspace in ((pa, w2), (pb, w1), (pc, w2)):
            await conn.execute(
                "INSERT INTO projects (id, workspace_id, name) VALUES (%s, %s, 'caps')",
                (project, workspace),
            )
        for workspace in (w1, w2):
            await conn.execute(
                "INSERT INTO workspace_limits (workspace_id, max_concurrency) VALUES (%s, 10)",
                (workspace,),
            )
    first_group = [await insert_generation(pool, p, job_id=-1) for p in (pa, pb)]
    second_group = [await insert_generation(pool, p, job_id=-1) for p in (pb, pc)]
    first, second = Committer(pool), Committer(pool)

    async with pool.connection() as conn:
        async with conn.transaction():
            # Holding W2's cap lock lines both groups up behind it.
            await conn.execute("SELECT pg_advisory_xact_lock(22, hashtext(%s))", (str(w2),))
            await conn.execute("SET LOCAL deadlock_timeout = '100ms'")
            one = asyncio.gather(*(first.start(start(i)) for i in first_group))
            await asyncio.sleep(0.2)
            two = asyncio.gather(*(second.start(start(i)) for i in second_group))
            await asyncio.sleep(0.2)
        started = await asyncio.wait_for(asyncio.gather(one, two), 10)

    assert all(g is not None for group in started for g, _ in group)
    assert (first.starts.groups, second.starts.groups) == (1, 1), "neither fell back"
