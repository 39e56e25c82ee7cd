"""The procrastinate app and its tasks. Jobs are deferred by the database (the INSERT trigger on
image_generations), never by Python code, so API- and SQL-created generations run alike."""

from __future__ import annotations

import logging
import time
from typing import Any
from uuid import UUID

from procrastinate import App, BaseRetryStrategy, JobContext, PsycopgConnector, RetryDecision
from procrastinate.jobs import Job

from worker.errors import MAX_ATTEMPTS, ErrorCode, GenerationError
from worker.images import download, image_size
from worker.models import Generation
from worker.providers.base import build_request
from worker.runtime import Runtime
from worker.storage.base import result_key

logger = logging.getLogger(__name__)

QUEUE = "images"
# The pool is handed over by `app.open_async(pool)`; the connector's own settings are unused.
app = App(connector=PsycopgConnector())


class TransientRetry(BaseRetryStrategy):
    """Retries transient catalogue errors with exponential backoff (2 s, 4 s, ...), at most
    MAX_ATTEMPTS runs in all; honours a provider's Retry-After when it is longer."""

    base_seconds = 2.0

    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if not isinstance(exception, GenerationError) or not exception.retryable:
            return None
        if job.attempts + 1 >= MAX_ATTEMPTS:
            return None
        wait = self.base_seconds * 2**job.attempts
        if exception.retry_after:
            wait = max(wait, exception.retry_after)
        return RetryDecision(retry_in={"seconds": int(wait)})


@app.task(name="generate_image", queue=QUEUE, pass_context=True, retry=TransientRetry())
async def generate_image(context: JobContext, generation_id: str) -> None:
    runtime = Runtime.from_context(context)
    attempt = (context.job.attempts if context.job else 0) + 1
    await run_generation(runtime, UUID(generation_id), attempt)


async def run_generation(runtime: Runtime, generation_id: UUID, attempt: int) -> None:
    lifecycle = runtime.lifecycle
    generation = await lifecycle.start(generation_id)
    if generation is None:
        if not await lifecycle.exists(generation_id):
            raise GenerationError(ErrorCode.NOT_FOUND, str(generation_id))
        logger.info("generation %s is no longer runnable; skipping", generation_id)
        return
    started = time.monotonic()
    try:
        await _produce(runtime, generation)
    except GenerationError as error:
        if error.retryable and attempt < MAX_ATTEMPTS:
            await lifecycle.log(
                generation_id,
                "error",
                f"{error.message}; retrying (attempt {attempt} of {MAX_ATTEMPTS})",
                {"error_code": error.code.value, "attempt": attempt},
            )
            raise
        await lifecycle.fail(generation_id, error.code.value, error.message)
        logger.info("generation %s failed: %s (%s)", generation_id, error.code.value, error.message)
        return
    logger.info(
        "generation %s completed in %.0f ms", generation_id, (time.monotonic() - started) * 1000
    )


async def _produce(runtime: Runtime, generation: Generation) -> None:
    lifecycle = runtime.lifecycle
    provider = runtime.provider(generation.provider)
    if provider is None:
        raise GenerationError(
            ErrorCode.PROVIDER_ERROR, f"provider {generation.provider!r} is not configured"
        )
    source: bytes | None = None
    if generation.original_image_url:
        await lifecycle.step(generation.id, "uploading")
        source = await download(generation.original_image_url, error=ErrorCode.SOURCE_UNREACHABLE)
        image_size(source)

    await lifecycle.step(generation.id, "processing")
    request = build_request(
        generation.prompt,
        generation.model,
        generation.prompt_spec,
        default_side=getattr(provider, "default_side", 1024),
        source=source,
    )
    result = await provider.generate(request)

    await lifecycle.step(generation.id, "saving")
    extension = "png" if result.content_type == "image/png" else result.content_type.split("/")[-1]
    key = result_key(generation.workspace_id, generation.project_id, generation.id, extension)
    try:
        url = await runtime.storage.put(key, result.data, result.content_type)
    except OSError as exc:
        raise GenerationError(ErrorCode.STORAGE_ERROR, str(exc)) from exc

    metadata: dict[str, Any] = {
        "width": request.width,
        "height": request.height,
        "bytes": len(result.data),
        "content_type": result.content_type,
        **result.metadata,
    }
    await lifecycle.complete(generation.id, url, metadata)
