"""What a provider's callback says, in provider-neutral terms. Each provider's payload is read by
its own parser here; the pipeline only sees a `WebhookOutcome`.

Payloads are converted to Structs first: a field of an unexpected shape raises
`msgspec.ValidationError` naming it (`at $.data.job_id`), which the API answers with a 422.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from worker.core.errors import ErrorCode, GenerationError

# webhook_deliveries.id and provider job ids are at most this long.
JobId = Annotated[str, Meta(min_length=1, max_length=255)]
Text = Annotated[str, Meta(max_length=10_000)]


class WebhookOutcome(msgspec.Struct, frozen=True, kw_only=True):
    job_id: str | None
    state: str  # "queued" | "running" | "completed" | "failed"
    urls: list[str] = []
    error: str | None = None


_GENERIC_STATES = {
    "pending": "queued",
    "running": "running",
    "completed": "completed",
    "failed": "failed",
}


class GenericImage(msgspec.Struct):
    url: Annotated[str, Meta(max_length=4096)] | None = None


class GenericData(msgspec.Struct):
    status: Literal["pending", "running", "completed", "failed"]
    job_id: JobId | None = None
    images: list[GenericImage] | None = None
    error: Text | None = None


class GenericCallback(msgspec.Struct):
    data: GenericData
    type: str | None = None


class FalCallback(msgspec.Struct):
    status: Literal["OK", "ERROR"]
    request_id: JobId | None = None
    # The model's output (OK) or an error body such as {"detail": ...} (ERROR).
    payload: dict[str, Any] | None = None
    error: Text | None = None


def parse_generic(payload: Any) -> WebhookOutcome:
    """`{"type": "image.generation.status", "data": {"job_id", "status", "images": [{"url"}], "error"}}`"""
    data = msgspec.convert(payload, GenericCallback).data
    return WebhookOutcome(
        job_id=data.job_id,
        state=_GENERIC_STATES[data.status],
        urls=[image.url for image in data.images or [] if image.url],
        error=data.error or None,
    )


def parse_fal(payload: Any) -> WebhookOutcome:
    """`{"request_id", "status": "OK" | "ERROR", "payload": <model output>, "error"}`"""
    callback = msgspec.convert(payload, FalCallback)
    job_id = callback.request_id
    if callback.status == "ERROR":
        detail = callback.error or (callback.payload or {}).get("detail")
        return WebhookOutcome(job_id=job_id, state="failed", error=str(detail or "the job failed"))
    try:
        urls = parse_fal_result(callback.payload)
    except GenerationError as error:
        return WebhookOutcome(job_id=job_id, state="failed", error=error.message)
    return WebhookOutcome(job_id=job_id, state="completed", urls=urls)


PARSERS = {"generic": parse_generic, "fal": parse_fal}


def parse_fal_result(body: Any) -> list[str]:
    """Image URLs of a finished fal request (also the `payload` of its webhook)."""
    if not isinstance(body, dict):
        raise GenerationError(ErrorCode.NO_RESULT, "the provider's result is not an object")
    images = body.get("images") or ([body["image"]] if isinstance(body.get("image"), dict) else [])
    urls = [str(image["url"]) for image in images if isinstance(image, dict) and image.get("url")]
    nsfw = body.get("has_nsfw_concepts")
    if isinstance(nsfw, list) and nsfw and all(nsfw):
        raise GenerationError(ErrorCode.CONTENT_POLICY, "the safety checker flagged the result")
    if not urls:
        raise GenerationError(ErrorCode.NO_RESULT, "the provider returned no image")
    return urls
