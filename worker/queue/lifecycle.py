"""The only code that moves a generation from step to step.

Every write is conditional on the current status (compare-and-set), so a late finisher can
never overwrite a cancel; the triggers add the image_events rows and NOTIFYs. Starts, steps,
completions and failures go through the committer (worker/queue/committer.py), which commits
those of all running jobs in groups; WORKER_GROUP_COMMIT=false writes each on its own.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection
from typing import Any
from uuid import UUID

from psycopg_pool import AsyncConnectionPool

from worker.core import store
from worker.core.logs import prompts_at_info
from worker.core.models import Generation, Step, StoredFile
from worker.core.observability import tag_generation
from worker.queue.committer import Committer, Complete, Fail, Start, StepTo

logger = logging.getLogger(__name__)
# Traces of generations started here but never finished here (a fal job finished by another
# worker's webhook) are dropped beyond this many, so the map cannot grow without bound.
MAX_TRACES = 10_000

STEP_PROGRESS: dict[str, int] = {
    "queued": 0,
    "fetching": 10,
    "uploading": 25,
    "preparing": 25,
    "processing": 50,
    "saving": 80,
    "completed": 100,
}


class _Trace:
    """Where a generation is, for one log line per step: provider, step, when it began."""

    __slots__ = ("provider", "started", "step", "step_started")

    def __init__(self, provider: str, step: Step) -> None:
        self.provider = provider
        self.step = step
        self.started = self.step_started = time.monotonic()


class Lifecycle:
    def __init__(self, pool: AsyncConnectionPool, *, group_commit: bool = True) -> None:
        self.pool = pool
        self.committer = Committer(pool, grouped=group_commit)
        self._traces: dict[UUID, _Trace] = {}

    async def start(
        self,
        generation_id: UUID,
        *,
        count_attempt: bool = True,
        straight_to_processing: Collection[str] = (),
    ) -> Generation | None:
        """pending/processing -> processing at `fetching`; None when there is nothing to run.

        A generation of one of the `straight_to_processing` providers with no source image has
        nothing to fetch: its `processing` step is written in the same transaction, so both
        events still happen, in order.
        """
        write = Start(
            generation_id,
            count_attempt=count_attempt,
            straight_to_processing=tuple(straight_to_processing),
            processing_progress=STEP_PROGRESS["processing"],
        )
        generation, advanced_now = await self.committer.start(write)
        if generation is not None:
            self._trace_start(generation, "fetching" if advanced_now else generation.step)
            if advanced_now:
                self._end_step(generation_id, "processing", "done")
        return generation

    def _trace_start(self, generation: Generation, step: Step) -> None:
        tag_generation(generation.provider)
        if not logger.isEnabledFor(logging.INFO):
            return
        generation_id = generation.id
        if len(self._traces) >= MAX_TRACES:
            self._traces.clear()
        self._traces[generation_id] = _Trace(generation.provider, step)
        extra = {"generation_id": generation_id, "provider": generation.provider}
        extra |= {"step": step, "attempt": generation.attempts}
        logger.info("generation %s started (%s)", generation_id, generation.provider, extra=extra)
        prompt_level = logging.INFO if prompts_at_info() else logging.DEBUG
        if logger.isEnabledFor(prompt_level):
            logger.log(
                prompt_level,
                "generation %s prompt: %s",
                generation_id,
                generation.prompt,
                extra={"generation_id": generation_id, "prompt": generation.prompt},
            )

    def _end_step(self, generation_id: UUID, next_step: Step | None, status: str) -> None:
        """Logs the step that just ended with its duration; `next_step` None ends the trace."""
        trace = (
            self._traces.get(generation_id) if next_step else self._traces.pop(generation_id, None)
        )
        if trace is None:
            return
        now = time.monotonic()
        logger.info(
            "generation %s %s %s in %.0f ms",
            generation_id,
            trace.step,
            status,
            (now - trace.step_started) * 1000,
            extra={
                "generation_id": generation_id,
                "provider": trace.provider,
                "step": trace.step,
                "status": status,
                "duration_ms": round((now - trace.step_started) * 1000, 1),
            },
        )
        if next_step is None:
            logger.info(
                "generation %s %s after %.0f ms",
                generation_id,
                status,
                (now - trace.started) * 1000,
                extra={
                    "generation_id": generation_id,
                    "provider": trace.provider,
                    "step": status,
                    "status": status,
                    "duration_ms": round((now - trace.started) * 1000, 1),
                },
            )
        else:
            trace.step, trace.step_started = next_step, now

    async def get(self, generation_id: UUID) -> Generation | None:
        return await store.get_generation_for_worker(self.pool, generation_id)

    async def set_provider_job(self, generation_id: UUID, provider_job_id: str) -> bool:
        return await store.set_provider_job(self.pool, generation_id, provider_job_id)

    async def reschedule(
        self, generation_id: UUID, task_name: str, delay_s: float, args: dict[str, Any]
    ) -> bool:
        """Hands the generation to a new job of `task_name` starting in `delay_s` seconds."""
        return await store.reschedule_generation(self.pool, generation_id, task_name, delay_s, args)

    async def webhook_delivery(self, delivery_id: str) -> tuple[str, Any] | None:
        """(provider, payload) of a stored provider callback."""
        return await store.get_webhook_delivery(self.pool, delivery_id)

    async def step(self, generation_id: UUID, step: Step, progress: int | None = None) -> bool:
        written = await self.committer.step(
            StepTo(generation_id, step=step, progress=progress or STEP_PROGRESS[step])
        )
        if written and self._traces:
            trace = self._traces.get(generation_id)
            if trace is not None and trace.step != step:
                self._end_step(generation_id, step, "done")
        return written

    async def complete(
        self,
        generation_id: UUID,
        result: StoredFile,
        metadata: dict[str, Any],
        thumbnail: StoredFile | None = None,
        *,
        saving_first: bool = False,
    ) -> bool:
        """`saving_first`: the `saving` step is written in the same round trip, just before."""
        written = await self.committer.complete(
            Complete(
                generation_id,
                result=result,
                thumbnail=thumbnail,
                metadata=metadata,
                saving_progress=STEP_PROGRESS["saving"] if saving_first else None,
            )
        )
        if written and saving_first and self._traces:
            self._end_step(generation_id, "saving", "done")
        if self._traces:
            self._end_step(generation_id, None, "completed" if written else "superseded")
        return written

    async def fail(self, generation_id: UUID, error_code: str, error_message: str) -> bool:
        written = await self.committer.fail(
            Fail(generation_id, error_code=error_code, error_message=error_message[:4000])
        )
        if self._traces:
            self._end_step(generation_id, None, "failed" if written else "superseded")
        return written

    async def log(
        self, generation_id: UUID, kind: str, message: str, data: dict[str, Any] | None = None
    ) -> bool:
        return await store.log_event(self.pool, generation_id, kind, message, data)
