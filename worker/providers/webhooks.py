"""What a provider's callback says, in provider-neutral terms. Each provider's payload is read by
its own parser here; the pipeline only sees a `WebhookOutcome`."""

from __future__ import annotations

from typing import Any

import msgspec

from worker.errors import GenerationError
from worker.providers.fal import parse_result


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


def parse_generic(payload: Any) -> WebhookOutcome:
    """`{"type": "image.generation.status", "data": {"job_id", "status", "images": [{"url"}], "error"}}`"""
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, dict) or data.get("status") not in _GENERIC_STATES:
        raise ValueError("not an image.generation.status payload")
    images = data.get("images") or []
    urls = [str(i["url"]) for i in images if isinstance(i, dict) and isinstance(i.get("url"), str)]
    job_id = data.get("job_id")
    return WebhookOutcome(
        job_id=str(job_id) if job_id is not None else None,
        state=_GENERIC_STATES[data["status"]],
        urls=urls,
        error=str(data["error"]) if data.get("error") else None,
    )


def parse_fal(payload: Any) -> WebhookOutcome:
    """`{"request_id", "status": "OK" | "ERROR", "payload": <model output>, "error"}`"""
    if not isinstance(payload, dict) or payload.get("status") not in ("OK", "ERROR"):
        raise ValueError("not a fal webhook payload")
    job_id = payload.get("request_id")
    if payload["status"] == "ERROR":
        detail = payload.get("error") or (payload.get("payload") or {}).get("detail")
        return WebhookOutcome(job_id=job_id, state="failed", error=str(detail or "the job failed"))
    try:
        urls = parse_result(payload.get("payload"))
    except GenerationError as error:
        return WebhookOutcome(job_id=job_id, state="failed", error=error.message)
    return WebhookOutcome(job_id=job_id, state="completed", urls=urls)


PARSERS = {"generic": parse_generic, "fal": parse_fal}
