"""The only code that moves a generation from step to step.

Every write is one statement, conditional on the current status (compare-and-set), so a late
finisher can never overwrite a cancel; the triggers add the image_events rows and NOTIFYs.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any
from uuid import UUID

from psycopg.rows import class_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from worker.models import Generation
from worker.sqlfiles import query

STEP_PROGRESS: dict[str, int] = {
    "queued": 0,
    "fetching": 10,
    "uploading": 25,
    "preparing": 25,
    "processing": 50,
    "saving": 80,
    "completed": 100,
}


class Lifecycle:
    def __init__(self, pool: AsyncConnectionPool) -> None:
        self.pool = pool

    async def start(
        self,
        generation_id: UUID,
        *,
        count_attempt: bool = True,
        straight_to_processing: Collection[str] = (),
    ) -> Generation | None:
        """pending/processing -> processing at `fetching`; None when there is nothing to run.

        A generation of one of the `straight_to_processing` providers with no source image has
        nothing to fetch: its `processing` step is written in the same round trip (one pipeline,
        one transaction), so both events still happen, in order.
        """
        params = {"id": generation_id, "count_attempt": int(count_attempt)}
        async with self.pool.connection() as conn, conn.pipeline():
            cur = conn.cursor(row_factory=class_row(Generation))
            await cur.execute(query("start_generation"), params)
            advanced = None
            if straight_to_processing:
                advanced = await conn.execute(
                    query("advance_to_processing"),
                    {
                        "id": generation_id,
                        "providers": list(straight_to_processing),
                        "progress": STEP_PROGRESS["processing"],
                    },
                )
            generation = await cur.fetchone()
            if generation is not None and advanced is not None and await advanced.fetchone():
                generation.step, generation.progress = "processing", STEP_PROGRESS["processing"]
        return generation

    async def get(self, generation_id: UUID) -> Generation | None:
        return await self._generation("get_generation_for_worker", {"id": generation_id})

    async def set_provider_job(self, generation_id: UUID, provider_job_id: str) -> bool:
        return await self._write(
            "set_provider_job", {"id": generation_id, "provider_job_id": provider_job_id}
        )

    async def reschedule(
        self, generation_id: UUID, task_name: str, delay_s: float, args: dict[str, Any]
    ) -> bool:
        """Hands the generation to a new job of `task_name` starting in `delay_s` seconds."""
        return await self._write(
            "reschedule_generation",
            {"id": generation_id, "task_name": task_name, "delay_s": delay_s, "args": Jsonb(args)},
        )

    async def webhook_delivery(self, delivery_id: str) -> tuple[str, Any] | None:
        """(provider, payload) of a stored provider callback."""
        async with self.pool.connection() as conn:
            cur = await conn.execute(query("get_webhook_delivery"), {"id": delivery_id})
            row = await cur.fetchone()
        return (str(row[0]), row[1]) if row is not None else None

    async def _generation(self, name: str, params: dict[str, Any]) -> Generation | None:
        async with self.pool.connection() as conn:
            cur = conn.cursor(row_factory=class_row(Generation))
            await cur.execute(query(name), params)
            return await cur.fetchone()

    async def exists(self, generation_id: UUID) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute(
                "SELECT 1 FROM image_generations WHERE id = %s", (generation_id,)
            )
            return await cur.fetchone() is not None

    async def step(self, generation_id: UUID, step: str, progress: int | None = None) -> bool:
        return await self._write(
            "set_step",
            {"id": generation_id, "step": step, "progress": progress or STEP_PROGRESS[step]},
        )

    async def complete(
        self, generation_id: UUID, result_image_url: str, metadata: dict[str, Any]
    ) -> bool:
        return await self._write(
            "complete_generation",
            {
                "id": generation_id,
                "result_image_url": result_image_url,
                "metadata": Jsonb(metadata),
            },
        )

    async def fail(self, generation_id: UUID, error_code: str, error_message: str) -> bool:
        return await self._write(
            "fail_generation",
            {"id": generation_id, "error_code": error_code, "error_message": error_message[:4000]},
        )

    async def log(
        self, generation_id: UUID, kind: str, message: str, data: dict[str, Any] | None = None
    ) -> bool:
        return await self._write(
            "log_event",
            {"id": generation_id, "kind": kind, "message": message, "data": Jsonb(data or {})},
        )

    async def _write(self, name: str, params: dict[str, Any]) -> bool:
        async with self.pool.connection() as conn:
            cur = await conn.execute(query(name), params)
            return await cur.fetchone() is not None
