"""Concurrent writers never break the O(1) counters: they always equal a full recount."""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from psycopg import errors
from psycopg_pool import AsyncConnectionPool

from tests.sql.helpers import (
    LEGAL,
    Conn,
    Counters,
    counted_statuses,
    create_project,
    fetch_value,
    insert_generation,
    project_counters,
    recomputed_counters,
)

WRITERS = 8
DURATION_S = 3.0
MAX_OPS_PER_WRITER = 250
GENERATIONS_PER_PROJECT = 12
RETRYABLE = (errors.DeadlockDetected, errors.SerializationFailure, errors.LockNotAvailable)


@dataclass
class Shared:
    """What the writers share: the projects, the generation ids, and what they did."""

    projects: list[uuid.UUID]
    generations: list[uuid.UUID]
    done: Counter[str] = field(default_factory=Counter)


async def transition(conn: Conn, rng: random.Random, shared: Shared) -> str:
    """A legal transition of a random generation that still has one."""
    cur = await conn.execute(
        "SELECT id, status FROM image_generations"
        " WHERE project_id = ANY(%s) AND status IN ('pending', 'processing', 'failed')"
        " ORDER BY md5(id::text || %s) LIMIT 1 FOR UPDATE",
        (shared.projects, str(rng.random())),
    )
    row = await cur.fetchone()
    if row is None:
        return "idle"
    generation_id, status = row
    target = rng.choice(LEGAL[str(status)])
    await conn.execute(
        "UPDATE image_generations SET status = %s WHERE id = %s", (target, generation_id)
    )
    return f"{status}->{target}"


async def progress(conn: Conn, rng: random.Random, shared: Shared) -> str:
    await conn.execute(
        "UPDATE image_generations SET step = 'processing', progress = %s"
        " WHERE id = %s AND status = 'processing'",
        (rng.randint(50, 79), rng.choice(shared.generations)),
    )
    return "progress"


async def insert(conn: Conn, rng: random.Random, shared: Shared) -> str:
    shared.generations.append(await insert_generation(conn, rng.choice(shared.projects)))
    return "insert"


async def delete(conn: Conn, rng: random.Random, shared: Shared) -> str:
    generation_id = rng.choice(shared.generations)
    await conn.execute("DELETE FROM image_generations WHERE id = %s", (generation_id,))
    if generation_id in shared.generations:
        shared.generations.remove(generation_id)
    return "delete"


async def move(conn: Conn, rng: random.Random, shared: Shared) -> str:
    await conn.execute(
        "UPDATE image_generations SET project_id = %s WHERE id = %s",
        (rng.choice(shared.projects), rng.choice(shared.generations)),
    )
    return "move"


Operation = Callable[[Conn, random.Random, Shared], Awaitable[str]]
OPERATIONS: list[tuple[Operation, int]] = [
    (transition, 70),
    (progress, 8),
    (insert, 10),
    (delete, 5),
    (move, 7),
]


async def run_once(conn: Conn, operation: Operation, rng: random.Random, shared: Shared) -> str:
    """The operation in a transaction of its own, retried on deadlock or serialization errors."""
    for attempt in range(20):
        try:
            async with conn.transaction():
                return await operation(conn, rng, shared)
        except RETRYABLE:
            shared.done["retried"] += 1
            await asyncio.sleep(rng.uniform(0, 0.01 * (attempt + 1)))
    raise AssertionError(f"{operation.__name__} kept failing")


async def writer(pool: AsyncConnectionPool, seed: int, shared: Shared, deadline: float) -> None:
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    operations, weights = zip(*OPERATIONS, strict=True)
    async with pool.connection() as conn:
        for _ in range(MAX_OPS_PER_WRITER):
            if loop.time() > deadline:
                break
            operation = rng.choices(operations, weights)[0]
            shared.done[await run_once(conn, operation, rng, shared)] += 1


async def test_concurrent_writers_keep_counters_equal_to_a_recount(
    pool: AsyncConnectionPool,
) -> None:
    workspace_id = uuid.uuid4()
    async with pool.connection() as conn:
        projects = [await create_project(conn, workspace_id, f"shared-{i}") for i in range(3)]
        generations = [
            await insert_generation(conn, project_id)
            for project_id in projects
            for _ in range(GENERATIONS_PER_PROJECT)
        ]
    shared = Shared(projects, generations)
    seed = random.randrange(1 << 30)
    deadline = asyncio.get_running_loop().time() + DURATION_S
    await asyncio.gather(*(writer(pool, seed + i, shared, deadline) for i in range(WRITERS)))

    done = shared.done
    transitions = sum(n for name, n in done.items() if "->" in name)
    assert transitions >= 200, f"too little happened (seed {seed}): {done}"
    assert done["insert"] and done["delete"] and done["move"], done
    # Every kind of transition into each status happened at least once.
    for target in ("processing", "completed", "failed", "cancelled", "pending"):
        assert any(name.endswith(f"->{target}") for name in done), (target, done)

    async with pool.connection() as conn:
        total = 0
        for project_id in projects:
            stored = await project_counters(conn, project_id)
            rows = await counted_statuses(conn, project_id)
            total += len(rows)
            assert stored == Counters.expected(rows), f"seed {seed}: {project_id}"
            assert await recomputed_counters(conn, project_id) == stored, f"seed {seed}"
            assert await project_counters(conn, project_id) == stored
        in_workspace = await fetch_value(
            conn, "SELECT count(*) FROM image_generations WHERE workspace_id = %s", (workspace_id,)
        )
        assert total == in_workspace
