"""Creating many generations in one transaction: `n` variations of one request, or the items of
POST /v1/generations/batch. A batch row ties them and holds the Idempotency-Key, so a repeated
request answers with the same generations; quotas (insert triggers) see the whole batch at once,
so it is created entirely or not at all."""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import errors
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from worker.core import store
from worker.core.models import Generation

SEED_SPACE = 2**32


def variations(
    row: dict[str, Any], n: int, rng: random.Random | None = None
) -> list[dict[str, Any]]:
    """`n` copies of one insert with distinct seeds, recorded in their prompt_spec: the given
    seed and the ones after it, or distinct random ones."""
    spec: dict[str, Any] = dict(row["prompt_spec"].obj)
    given = spec.get("seed")
    if isinstance(given, int) and not isinstance(given, bool):
        seeds = [(given + i) % SEED_SPACE for i in range(n)]
    else:
        seeds = (rng or random.SystemRandom()).sample(range(SEED_SPACE), n)
    return [{**row, "prompt_spec": Jsonb({**spec, "seed": seed})} for seed in seeds]


class BatchResult:
    def __init__(self, batch_id: UUID, generations: list[Generation], created: bool) -> None:
        self.batch_id = batch_id
        self.generations = generations
        self.created = created


async def create_batch(
    pool: AsyncConnectionPool,
    workspace_id: UUID,
    rows: Sequence[dict[str, Any]],
    idempotency_key: str | None,
) -> BatchResult:
    """The batch's generations, in order; `created` is False when the Idempotency-Key names an
    earlier batch (its generations are the answer, whatever this request asked)."""
    if idempotency_key is not None:
        earlier = await _earlier(pool, workspace_id, idempotency_key)
        if earlier is not None:
            return earlier
    try:
        async with store.transaction(pool) as conn:
            batch_id = await store.insert_batch(conn, workspace_id, idempotency_key, len(rows))
            numbered = [
                {**row, "batch_id": batch_id, "batch_index": index}
                for index, row in enumerate(rows)
            ]
            created = await store.insert_generations(conn, numbered)
    except errors.UniqueViolation as exc:
        # A concurrent request with the same key won the race: its batch is the answer.
        if (
            idempotency_key is None
            or exc.diag.constraint_name != "imagejobs_batches_idempotency_idx"
        ):
            raise
        earlier = await _earlier(pool, workspace_id, idempotency_key)
        if earlier is None:
            raise
        return earlier
    return BatchResult(batch_id, created, True)


async def _earlier(
    pool: AsyncConnectionPool, workspace_id: UUID, idempotency_key: str
) -> BatchResult | None:
    batch_id = await store.get_batch_by_idempotency_key(pool, workspace_id, idempotency_key)
    if batch_id is None:
        return None
    generations = await store.list_batch_generations(pool, batch_id, workspace_id)
    return BatchResult(batch_id, generations, False)
