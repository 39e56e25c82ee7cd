"""How a generation is produced: source → provider → result → storage, step by step.

Synchronous providers (OpenAI, Google, local) answer within the job. Queue-based ones (fal) are
submitted, then followed by a polling job that re-schedules itself (and, when a webhook is
expected, runs as a slower safety net); webhook and poll share `finish_from_urls`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Collection
from typing import Any, TypeVar
from uuid import UUID

import psycopg

from worker.core import store
from worker.core.errors import MAX_ATTEMPTS, ErrorCode, GenerationError
from worker.core.images import (
    EXTENSIONS,
    CheckedImage,
    check_result,
    download,
    image_size,
    prepare_mask,
    result_thumbnail,
)
from worker.core.models import Generation, StoredFile
from worker.core.webhook_payloads import PARSERS
from worker.providers.base import AsyncProvider, ImageRequest, ImageResult, Provider, build_request
from worker.queue.runtime import Runtime
from worker.storage.base import result_key
from worker.storage.fresh import fresh_generation

logger = logging.getLogger(__name__)

GENERATE_TASK = "generate_image"
EDIT_TASK = "edit_image"
POLL_TASK = "poll_generation"
# With a webhook expected, polling is only a safety net for lost webhooks.
SAFETY_NET_FACTOR = 4
# How long a run its workspace's concurrency cap refused waits before it is tried again.
SLOT_WAIT_S = 1.0
T = TypeVar("T")


async def run_generation(
    runtime: Runtime, generation_id: UUID, attempt: int, *, resume: bool = False
) -> None:
    generation = await _begin(
        runtime,
        generation_id,
        count_attempt=not resume,
        straight_to_processing=runtime.provider_names,
    )
    if generation is None:
        return
    started = time.monotonic()
    finished = await _guarded(runtime, generation_id, attempt, _produce(runtime, generation))
    if finished:
        logger.info(
            "generation %s completed in %.0f ms", generation_id, (time.monotonic() - started) * 1000
        )


async def _begin(
    runtime: Runtime,
    generation_id: UUID,
    *,
    count_attempt: bool = True,
    straight_to_processing: Collection[str] = (),
) -> Generation | None:
    """Starts a run (generate and edit alike); None when there is nothing to run, including a
    generation re-queued after crashes more often than it may run, which is failed here."""
    lifecycle = runtime.lifecycle
    generation = await lifecycle.start(
        generation_id, count_attempt=count_attempt, straight_to_processing=straight_to_processing
    )
    if generation is None:
        current = await lifecycle.get(generation_id)
        if current is None:
            raise GenerationError(ErrorCode.NOT_FOUND, str(generation_id))
        if current.status in ("pending", "processing"):
            # Runnable, but its workspace is at its max_concurrency: later, same place in line.
            await store.wait_for_slot(lifecycle.pool, generation_id, SLOT_WAIT_S)
            logger.info("generation %s waits for a slot of its workspace", generation_id)
            return None
        logger.info("generation %s is no longer runnable; skipping", generation_id)
        return None
    if generation.attempts > MAX_ATTEMPTS:
        await lifecycle.fail(
            generation_id, ErrorCode.TIMEOUT.value, f"Gave up after {MAX_ATTEMPTS} attempts"
        )
        return None
    return generation


async def _guarded(
    runtime: Runtime, generation_id: UUID, attempt: int, work: Awaitable[T]
) -> T | None:
    """Runs a job's work so that every failure ends in a catalogue state: catalogue errors as
    they say, anything unexpected as a final `provider_error` (a bug of ours is not made better
    by running it again). A shutdown or a lost database is not the generation's fault: it
    propagates, and the job runs again."""
    try:
        return await work
    except GenerationError as error:
        await _handle_failure(runtime, generation_id, error, attempt)
    except (asyncio.CancelledError, psycopg.OperationalError):
        raise
    except Exception as exc:
        logger.exception("generation %s: unexpected %s", generation_id, type(exc).__name__)
        internal = GenerationError(
            ErrorCode.PROVIDER_ERROR, f"internal error ({type(exc).__name__})", permanent=True
        )
        await _handle_failure(runtime, generation_id, internal, attempt, cause=exc)
    return None


async def _handle_failure(
    runtime: Runtime,
    generation_id: UUID,
    error: GenerationError,
    attempt: int,
    *,
    cause: BaseException | None = None,
) -> None:
    if error.retryable and attempt < MAX_ATTEMPTS:
        await runtime.lifecycle.log(
            generation_id,
            "error",
            f"{error.message}; retrying (attempt {attempt} of {MAX_ATTEMPTS})",
            {"error_code": error.code.value, "attempt": attempt},
        )
        raise error
    if error.code is ErrorCode.MODEL_UNAVAILABLE:
        error = await _with_replacement(runtime, generation_id, error)
    await runtime.lifecycle.fail(generation_id, error.code.value, error.message)
    logger.info("generation %s failed: %s (%s)", generation_id, error.code.value, error.message)
    if cause is not None:
        # Failed in the catalogue, but still a bug of ours: the job fails so it is reported.
        raise cause


async def _with_replacement(
    runtime: Runtime, generation_id: UUID, error: GenerationError
) -> GenerationError:
    """A provider that no longer serves a model: the message names what to use instead."""
    generation = await runtime.lifecycle.get(generation_id)
    if generation is None:
        return error
    instead = await runtime.catalogue.instead_of(generation.provider, generation.model)
    advice = f"; use {instead!r} instead" if instead else ""
    detail = error.detail or ""
    if generation.model not in detail:
        detail = f"{generation.model!r} ({detail})" if detail else repr(generation.model)
    return GenerationError(ErrorCode.MODEL_UNAVAILABLE, detail + advice)


EDIT_PROMPTS = {
    "add": "Add {prompt} in the transparent (masked) area, matching the rest of the image.",
    "remove": "Remove {prompt} from the transparent (masked) area and fill it in to match its surroundings.",
}


async def run_edit(runtime: Runtime, generation_id: UUID, attempt: int) -> None:
    """fetching 10 → preparing 25 (mask resized to the source) → processing 50 → saving 80."""
    generation = await _begin(runtime, generation_id)
    if generation is not None:
        await _guarded(runtime, generation_id, attempt, _edit(runtime, generation))


async def _edit(runtime: Runtime, generation: Generation) -> None:
    lifecycle = runtime.lifecycle
    max_pixels = runtime.settings.image_max_pixels
    provider = runtime.provider(generation.provider)
    if provider is None:
        raise GenerationError(
            ErrorCode.PROVIDER_ERROR,
            f"provider {generation.provider!r} cannot edit images on this worker",
            permanent=True,
        )
    await lifecycle.step(generation.id, "preparing")
    # An edit can run (or be retried) long after its source was stored: a private bucket's
    # stored URLs may be dead by then, so its source and mask are fetched by fresh URLs.
    generation = await fresh_generation(runtime.storage, generation)
    if not generation.original_image_url:
        raise GenerationError(ErrorCode.SOURCE_UNREACHABLE, "the edited version has no image")
    source = await download(
        generation.original_image_url, error=ErrorCode.SOURCE_UNREACHABLE, policy=runtime.outbound
    )
    size = image_size(source, max_pixels)
    if generation.mask_url is None:
        raise GenerationError(ErrorCode.MASK_MISSING)
    mask_bytes = await download(
        generation.mask_url, error=ErrorCode.MASK_INVALID, policy=runtime.outbound
    )
    mask = await prepare_mask(mask_bytes, size, max_pixels)
    prompt = EDIT_PROMPTS[generation.edit_mode or "add"].format(prompt=generation.prompt)
    request = build_request(
        prompt,
        generation.model,
        {**generation.prompt_spec, "size": f"{size[0]}x{size[1]}"},
        default_side=provider.default_side,
        source=source,
        mask=mask,
    )
    await lifecycle.step(generation.id, "processing")
    result = await provider.edit(request)
    await store_result(runtime, generation, result)


async def finish_from_webhook(
    runtime: Runtime, generation_id: UUID, delivery_id: str, attempt: int
) -> None:
    """A verified provider callback (stored by the API) finishes, fails or logs the generation."""
    lifecycle = runtime.lifecycle
    delivery = await lifecycle.webhook_delivery(delivery_id)
    generation = await lifecycle.get(generation_id)
    if delivery is None or generation is None or generation.status != "processing":
        return
    provider, payload = delivery
    outcome = PARSERS[provider](payload)
    if outcome.state == "failed":
        message = GenerationError(
            ErrorCode.PROVIDER_ERROR, outcome.error or "the job failed"
        ).message
        await lifecycle.fail(generation_id, ErrorCode.PROVIDER_ERROR.value, message)
    elif outcome.state == "completed":
        await _guarded(
            runtime, generation_id, attempt, finish_from_urls(runtime, generation, outcome.urls)
        )
    else:
        await lifecycle.log(generation_id, "log", f"Provider reports the job is {outcome.state}")


async def cancel_provider_job(
    runtime: Runtime,
    generation_id: UUID,
    gone: tuple[str, str, str] | None = None,
) -> None:
    """After a cancel: ask a queue-based provider to stop the job it runs for us. `gone` is
    (provider, model, provider_job_id), handed over by a delete that removed the row."""
    generation = await runtime.lifecycle.get(generation_id)
    if generation is None and gone is not None:
        provider_name, model, provider_job_id = gone
        queue_provider = runtime.queue_provider(provider_name)
        if queue_provider is not None:
            try:
                await queue_provider.cancel(model, provider_job_id)
            except Exception:
                logger.warning("could not cancel provider job %s", provider_job_id, exc_info=True)
        return
    if generation is None or generation.provider_job_id is None:
        return
    provider = runtime.queue_provider(generation.provider)
    if provider is not None:
        await _cancel_quietly(provider, generation)


async def _produce(runtime: Runtime, generation: Generation) -> bool:
    """Runs the generation; False when it was handed to a later job (queue, rate limit)."""
    lifecycle = runtime.lifecycle
    sync_provider = runtime.provider(generation.provider)
    queue_provider = runtime.queue_provider(generation.provider)
    provider: Provider | AsyncProvider | None = sync_provider or queue_provider
    if provider is None:
        raise GenerationError(
            ErrorCode.PROVIDER_ERROR,
            f"provider {generation.provider!r} is not configured on this worker",
            permanent=True,
        )

    source: bytes | None = None
    if generation.original_image_url and sync_provider is not None:
        await lifecycle.step(generation.id, "uploading")
        source = await download(
            generation.original_image_url,
            error=ErrorCode.SOURCE_UNREACHABLE,
            policy=runtime.outbound,
        )
        image_size(source, runtime.settings.image_max_pixels)
    request = build_request(
        generation.prompt,
        generation.model,
        generation.prompt_spec,
        default_side=provider.default_side,
        source=source,
        source_url=generation.original_image_url,
    )

    if generation.step != "processing":
        await lifecycle.step(generation.id, "processing")
    wait_s = await runtime.limiter.acquire(generation.provider)
    if wait_s > 0:
        await lifecycle.log(
            generation.id,
            "log",
            f"Provider rate limit reached; resuming in {wait_s:.1f} s",
            {"wait_s": wait_s},
        )
        await lifecycle.reschedule(generation.id, GENERATE_TASK, wait_s, {"resume": True})
        return False

    if queue_provider is not None:
        await _submit(runtime, queue_provider, generation, request)
        return False
    assert sync_provider is not None
    result = await sync_provider.generate(request)
    await store_result(runtime, generation, result)
    return True


async def _submit(
    runtime: Runtime, provider: AsyncProvider, generation: Generation, request: ImageRequest
) -> None:
    settings = runtime.settings
    webhook_url = runtime.webhook_url(provider.name)
    if generation.provider_job_id is None:
        job_id = await provider.submit(request, webhook_url)
        await runtime.lifecycle.set_provider_job(generation.id, job_id)
        await runtime.lifecycle.log(
            generation.id, "log", "Submitted to the provider's queue", {"provider_job_id": job_id}
        )
    delay = settings.poll_interval_s * (SAFETY_NET_FACTOR if webhook_url else 1)
    await runtime.lifecycle.reschedule(
        generation.id, POLL_TASK, delay, {"submitted_at": time.time(), "seen_logs": 0}
    )


async def poll_generation(
    runtime: Runtime, generation_id: UUID, submitted_at: float, seen_logs: int
) -> None:
    # A poll is not retried as a job (it re-schedules itself): what escapes it is final.
    await _guarded(
        runtime, generation_id, MAX_ATTEMPTS, _poll(runtime, generation_id, submitted_at, seen_logs)
    )


async def _poll(runtime: Runtime, generation_id: UUID, submitted_at: float, seen_logs: int) -> None:
    lifecycle = runtime.lifecycle
    generation = await lifecycle.get(generation_id)
    if (
        generation is None
        or generation.status != "processing"
        or generation.provider_job_id is None
    ):
        return
    provider = runtime.queue_provider(generation.provider)
    if provider is None:
        await lifecycle.fail(
            generation_id, ErrorCode.PROVIDER_ERROR.value, "provider is not configured"
        )
        return
    settings = runtime.settings
    if time.time() - submitted_at > settings.poll_timeout_s:
        await _cancel_quietly(provider, generation)
        await lifecycle.fail(generation_id, ErrorCode.TIMEOUT.value, "Polling timeout exceeded")
        return
    try:
        status = await provider.status(generation.model, generation.provider_job_id)
        for line in status.logs[seen_logs:]:
            await lifecycle.log(generation_id, "log", line[:1000])
        seen_logs = max(seen_logs, len(status.logs))
        if status.state == "completed":
            urls = await provider.result_urls(generation.model, generation.provider_job_id)
            await finish_from_urls(runtime, generation, urls)
            return
        if status.state == "failed":
            # The provider's job itself failed: polling again cannot change that.
            message = GenerationError(
                ErrorCode.PROVIDER_ERROR, status.error or "the job failed"
            ).message
            await lifecycle.fail(generation_id, ErrorCode.PROVIDER_ERROR.value, message)
            return
    except GenerationError as error:
        if not error.retryable:
            await lifecycle.fail(generation_id, error.code.value, error.message)
            return
        await lifecycle.log(
            generation_id,
            "error",
            f"{error.message}; polling again",
            {"error_code": error.code.value},
        )
    else:
        if status.state == "queued":
            position = (
                "" if status.queue_position is None else f" (position {status.queue_position})"
            )
            await lifecycle.log(generation_id, "log", f"Waiting in the provider's queue{position}")
        else:
            await lifecycle.step(
                generation_id, "processing", min(79, max(generation.progress + 3, 55))
            )
    delay = settings.poll_interval_s * (
        SAFETY_NET_FACTOR if runtime.webhook_url(provider.name) else 1
    )
    await lifecycle.reschedule(
        generation_id, POLL_TASK, delay, {"submitted_at": submitted_at, "seen_logs": seen_logs}
    )


async def _cancel_quietly(provider: AsyncProvider, generation: Generation) -> None:
    if generation.provider_job_id is None:
        return
    try:
        await provider.cancel(generation.model, generation.provider_job_id)
    except Exception:
        logger.warning(
            "could not cancel provider job %s", generation.provider_job_id, exc_info=True
        )


async def finish_from_urls(runtime: Runtime, generation: Generation, urls: list[str]) -> None:
    """The shared end of queue-based providers: download the result, store it, complete."""
    if not urls:
        raise GenerationError(ErrorCode.NO_RESULT, "the provider returned no image")
    await runtime.lifecycle.step(generation.id, "saving")
    data = await download(urls[0], error=ErrorCode.RESULT_UNREACHABLE, policy=runtime.outbound)
    await store_result(
        runtime, generation, ImageResult(data=data, content_type="", metadata={}), saving=False
    )


# An upload done within this long is reported with its completion, as one write.
SAVING_EVENT_AFTER_S = 0.05


async def store_result(
    runtime: Runtime, generation: Generation, result: ImageResult, *, saving: bool = True
) -> None:
    checked = await check_result(result.data, runtime.settings.image_max_pixels)
    key = result_key(
        generation.workspace_id,
        generation.project_id,
        generation.id,
        EXTENSIONS[checked.content_type],
    )

    async def upload() -> tuple[StoredFile, StoredFile | None]:
        thumb = await _thumbnail(generation, checked)
        result_upload = _put(runtime, key, checked.data, checked.content_type)
        if thumb is None:
            return await result_upload, None
        data, content_type = thumb
        thumb_upload = _put(runtime, thumbnail_key(key, content_type), data, content_type)
        stored, thumbnail = await asyncio.gather(result_upload, thumb_upload)
        return stored, thumbnail

    saving_first = False
    try:
        if saving:
            # Quick uploads (local files, a near bucket) write `saving` and `completed` in one
            # round trip; a slower one gets its `saving` event while it runs. Either way both
            # events exist, in order.
            uploading = asyncio.ensure_future(upload())
            try:
                done, _ = await asyncio.wait({uploading}, timeout=SAVING_EVENT_AFTER_S)
                if not done:
                    await runtime.lifecycle.step(generation.id, "saving")
                saving_first = bool(done)
                stored, thumbnail = await uploading
            except BaseException:
                uploading.cancel()  # an aborted run takes its uploads with it
                raise
        else:
            stored, thumbnail = await upload()
    except OSError as exc:
        # A thumbnail that cannot be uploaded is handled as the result's upload is: storage_error
        # (Supabase's client raises it itself after its own retries), and a retry of the
        # generation overwrites both keys. Storage that refuses one file is not to be trusted
        # with the other; only a thumbnail that cannot be *made* degrades to NULL.
        raise GenerationError(ErrorCode.STORAGE_ERROR, type(exc).__name__) from exc
    metadata: dict[str, Any] = {
        **result.metadata,
        "width": checked.width,
        "height": checked.height,
        "bytes": len(checked.data),
        "content_type": checked.content_type,
    }
    if not await runtime.lifecycle.complete(
        generation.id, stored, metadata, thumbnail, saving_first=saving_first
    ):
        await _discard_upload(runtime, generation.id, [stored, thumbnail])


async def _discard_upload(
    runtime: Runtime, generation_id: UUID, files: list[StoredFile | None]
) -> None:
    """The complete write found the row no longer processing (cancelled, deleted): what this run
    uploaded is nobody's, unless the row (a run that won) records the same keys. A delete that
    ran while the upload was in flight relies on this (worker/storage/deletes.py)."""
    current = await runtime.lifecycle.get(generation_id)
    kept = {current.result_key, current.thumbnail_key} if current is not None else set()
    keys = [f.key for f in files if f is not None and f.key not in kept]
    if not keys:
        return
    try:
        await runtime.storage.delete(keys)
        logger.info("generation %s: removed an upload no row holds", generation_id)
    except OSError:
        logger.warning("generation %s: could not remove an orphaned upload", generation_id)


async def _put(runtime: Runtime, key: str, data: bytes, content_type: str) -> StoredFile:
    return StoredFile(key=key, url=await runtime.storage.put(key, data, content_type))


def thumbnail_key(result_key: str, content_type: str) -> str:
    """`<stem>-thumb.webp` beside the result `<stem>.<ext>`."""
    stem = result_key.rsplit(".", 1)[0]
    return f"{stem}-thumb.{EXTENSIONS[content_type]}"


async def _thumbnail(generation: Generation, checked: CheckedImage) -> tuple[bytes, str] | None:
    """The result's preview, or None: a preview that cannot be made never fails the generation
    (it completes with thumbnail_url NULL), whatever the decoder or encoder raised."""
    try:
        return await result_thumbnail(checked)
    except Exception as exc:
        cause = exc.__cause__ if isinstance(exc, GenerationError) and exc.__cause__ else exc
        logger.warning(
            "generation %s: no thumbnail (%s: %s); completing without one",
            generation.id,
            type(cause).__name__,
            cause,
        )
        return None
