"""Outgoing webhooks: a generation created with `webhook_url` is told about its progress.

Each delivery is its own procrastinate job (queue `webhooks`), queued by a trigger when the
image_events row is written, so a receiver that is down never delays the generation. Bodies are
`{"type", "data": <generation>}`, signed with Standard Webhooks (OUTGOING_WEBHOOK_SECRET); the
`webhook-id` is stable across retries so receivers can de-duplicate. Every attempt is recorded in
outgoing_webhook_attempts with the receiver's status code.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx
import msgspec
from procrastinate import BaseRetryStrategy, RetryDecision
from procrastinate.jobs import Job
from psycopg_pool import AsyncConnectionPool
from standardwebhooks import Webhook

from worker.core import store
from worker.core.jsonenc import encode
from worker.core.models import Generation
from worker.core.netguard import OutboundPolicy, OutboundRefused
from worker.queue.lifecycle import Lifecycle
from worker.storage.base import Storage
from worker.storage.fresh import fresh_generation

logger = logging.getLogger(__name__)

# Seconds before each retry: 5 s, 30 s, 2 min, 10 min, 30 min, then the delivery is given up.
BACKOFF_S = (5, 30, 120, 600, 1800)
TIMEOUT = httpx.Timeout(10.0, connect=5.0)


class DeliveryFailed(Exception):
    pass


class DeliveryRefused(Exception):
    """The webhook URL is one the outbound policy forbids: recorded once, never retried."""


class WebhookBackoff(BaseRetryStrategy):
    def get_retry_decision(self, *, exception: BaseException, job: Job) -> RetryDecision | None:
        if not isinstance(exception, DeliveryFailed) or job.attempts >= len(BACKOFF_S):
            return None
        return RetryDecision(retry_in={"seconds": BACKOFF_S[job.attempts]})


class WebhookBody(msgspec.Struct):
    type: str
    data: Generation


def signed_headers(secret: str | None, message_id: str, body: bytes) -> dict[str, str]:
    headers = {"content-type": "application/json", "user-agent": "imagejobs-webhooks/1"}
    timestamp = datetime.now(UTC)
    headers["webhook-id"] = message_id
    headers["webhook-timestamp"] = str(int(timestamp.timestamp()))
    if secret:
        headers["webhook-signature"] = Webhook(secret).sign(message_id, timestamp, body.decode())
    return headers


async def deliver(
    pool: AsyncConnectionPool,
    secret: str | None,
    generation_id: UUID,
    event_id: int,
    event_type: str,
    attempt: int,
    client: httpx.AsyncClient | None = None,
    policy: OutboundPolicy | None = None,
    storage: Storage | None = None,
) -> None:
    generation = await Lifecycle(pool).get(generation_id)
    if generation is None or generation.webhook_url is None:
        return
    webhook_url = generation.webhook_url
    if storage is not None:
        # A retry can go out days later: its URLs are signed when it is sent, not when stored.
        generation = await fresh_generation(storage, generation)
    message_id = f"msg_{generation_id.hex}_{event_id}"
    body = encode(WebhookBody(type=event_type, data=generation))
    started = time.monotonic()
    status_code: int | None = None
    error: str | None = None
    refused = False
    policy = policy or OutboundPolicy.from_env()
    try:
        policy.check_url(webhook_url)
        async with policy.client(TIMEOUT) if client is None else _borrowed(client) as http:
            response = await http.post(
                webhook_url,
                content=body,
                headers=signed_headers(secret, message_id, body),
            )
        status_code = response.status_code
        if not response.is_success:
            error = f"HTTP {status_code}"
    except OutboundRefused as exc:
        error, refused = str(exc), True
    except httpx.HTTPError as exc:
        error = type(exc).__name__
    await _record(
        pool, generation_id, event_id, message_id, event_type, attempt, status_code, error, started
    )
    if refused:
        logger.warning("webhook %s to generation %s not sent: %s", event_type, generation_id, error)
        raise DeliveryRefused(error)
    if error is not None:
        logger.info(
            "webhook %s to generation %s failed (%s), attempt %d",
            event_type,
            generation_id,
            error,
            attempt,
        )
        raise DeliveryFailed(error)


class _borrowed:
    """Lends a shared client to an `async with` without closing it."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def __aenter__(self) -> httpx.AsyncClient:
        return self.client

    async def __aexit__(self, *exc: object) -> None:
        return None


async def _record(
    pool: AsyncConnectionPool,
    generation_id: UUID,
    event_id: int,
    message_id: str,
    event_type: str,
    attempt: int,
    status_code: int | None,
    error: str | None,
    started: float,
) -> None:
    params: dict[str, Any] = {
        "generation_id": generation_id,
        "event_id": event_id,
        "message_id": message_id,
        "type": event_type,
        "attempt": attempt,
        "status_code": status_code,
        "error": error,
        "duration_ms": int((time.monotonic() - started) * 1000),
    }
    await store.record_webhook_attempt(pool, params)
