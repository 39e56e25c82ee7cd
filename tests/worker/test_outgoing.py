"""Outgoing webhooks: queued by the database, signed, recorded, retried on backoff."""

from __future__ import annotations

import contextlib
import io
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from litestar import Litestar, Request, Response, post
from procrastinate.jobs import Job
from psycopg_pool import AsyncConnectionPool
from standardwebhooks import Webhook

from tests.emulators.server import serve
from tests.factories import insert_generation
from worker.core.logs import configure_logging
from worker.core.redact import install_log_redaction
from worker.queue.outgoing import BACKOFF_S, DeliveryFailed, WebhookBackoff, deliver

SECRET = "whsec_" + "c2VjcmV0LWZvci1vdXRnb2luZy13ZWJob29rcw=="


@dataclass
class Receiver:
    url: str = ""
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    @post("/hook", status_code=200)
    async def hook(request: Request[Any, Any, Any]) -> Response[str]:
        state.received.append((dict(request.headers), await request.body()))
        return Response("ok", status_code=state.answers.pop(0) if state.answers else 200)

    with serve(Litestar([hook], openapi_config=None)) as url:
        state.url = f"{url}/hook"
        yield state


async def webhook_jobs(pool: AsyncConnectionPool, generation_id: uuid.UUID) -> list[str]:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT args->>'type' FROM procrastinate_jobs WHERE task_name = 'deliver_webhook'"
            " AND args->>'generation_id' = %s::text ORDER BY id",
            (generation_id,),
        )
        return [str(r[0]) for r in await cur.fetchall()]


async def walk_to_completed(pool: AsyncConnectionPool, generation_id: uuid.UUID) -> None:
    async with pool.connection() as conn:
        for sql in (
            "UPDATE image_generations SET status = 'processing', step = 'fetching', progress = 10 WHERE id = %s",
            "UPDATE image_generations SET step = 'processing', progress = 50 WHERE id = %s",
            "UPDATE image_generations SET status = 'completed', result_image_url = 'https://cdn.example.com/x.png' WHERE id = %s",
        ):
            await conn.execute(sql, (generation_id,))


@pytest.mark.parametrize(
    ("events_filter", "expected"),
    [
        (None, ["generation.started", "generation.progress", "generation.completed"]),
        ("{completed}", ["generation.completed"]),
        ("{start,completed}", ["generation.started", "generation.completed"]),
    ],
)
async def test_deliveries_are_queued_by_the_database_following_the_filter(
    pool: AsyncConnectionPool, project_id: uuid.UUID, events_filter: str | None, expected: list[str]
) -> None:
    generation_id = await insert_generation(
        pool,
        project_id,
        webhook_url="https://hooks.example.com/x",
        webhook_events_filter=events_filter,
    )
    await walk_to_completed(pool, generation_id)
    assert await webhook_jobs(pool, generation_id) == expected


async def test_no_webhook_url_no_deliveries(
    pool: AsyncConnectionPool, project_id: uuid.UUID
) -> None:
    generation_id = await insert_generation(pool, project_id)
    await walk_to_completed(pool, generation_id)
    assert await webhook_jobs(pool, generation_id) == []


async def test_a_delivery_is_signed_and_recorded(
    pool: AsyncConnectionPool, project_id: uuid.UUID, receiver: Receiver
) -> None:
    generation_id = await insert_generation(pool, project_id, webhook_url=receiver.url)
    await walk_to_completed(pool, generation_id)
    receiver.received.clear()
    await deliver(pool, SECRET, generation_id, 42, "generation.completed", attempt=1)

    headers, body = receiver.received[-1]
    payload = Webhook(SECRET).verify(body, headers)
    assert payload["type"] == "generation.completed"
    assert payload["data"]["id"] == str(generation_id)
    assert payload["data"]["status"] == "completed"
    assert headers["webhook-id"] == f"msg_{generation_id.hex}_42"
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT attempt, status_code, error FROM outgoing_webhook_attempts WHERE generation_id = %s",
            (generation_id,),
        )
        assert await cur.fetchall() == [(1, 200, None)]


async def test_a_failing_receiver_is_retried_with_backoff_and_every_attempt_recorded(
    pool: AsyncConnectionPool, project_id: uuid.UUID, receiver: Receiver
) -> None:
    generation_id = await insert_generation(pool, project_id, webhook_url=receiver.url)
    receiver.answers[:] = [500]
    with pytest.raises(DeliveryFailed):
        await deliver(pool, SECRET, generation_id, 7, "generation.started", attempt=1)
    await deliver(pool, SECRET, generation_id, 7, "generation.started", attempt=2)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT attempt, status_code, message_id FROM outgoing_webhook_attempts WHERE generation_id = %s ORDER BY id",
            (generation_id,),
        )
        rows = await cur.fetchall()
    assert [(a, s) for a, s, _ in rows] == [(1, 500), (2, 200)]
    assert rows[0][2] == rows[1][2], "retries keep the webhook-id so receivers can de-duplicate"

    strategy = WebhookBackoff()
    job = Job(
        id=1,
        queue="webhooks",
        lock=None,
        queueing_lock=None,
        task_name="deliver_webhook",
        attempts=0,
    )
    waits = []
    for attempts in range(len(BACKOFF_S) + 1):
        decision = strategy.get_retry_decision(
            exception=DeliveryFailed("HTTP 500"), job=job.evolve(attempts=attempts)
        )
        waits.append(decision)
    assert all(d is not None for d in waits[:-1])
    assert waits[-1] is None, "given up after the last backoff"
    assert strategy.get_retry_decision(exception=ValueError(), job=job) is None


async def test_an_unreachable_receiver_is_recorded_as_such(
    pool: AsyncConnectionPool, project_id: uuid.UUID
) -> None:
    generation_id = await insert_generation(
        pool, project_id, webhook_url="http://127.0.0.1:9/nothing-listens"
    )
    with pytest.raises(DeliveryFailed):
        await deliver(pool, None, generation_id, 1, "generation.started", attempt=1)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT status_code, error FROM outgoing_webhook_attempts WHERE generation_id = %s",
            (generation_id,),
        )
        assert await cur.fetchall() == [(None, "ConnectError")]


async def test_a_credential_in_a_webhook_url_query_reaches_no_log(
    pool: AsyncConnectionPool, project_id: uuid.UUID, receiver: Receiver
) -> None:
    # Logging as `imagejobs worker` sets it up, at DEBUG so httpcore's trace lines are in too.
    root = logging.getLogger()
    saved = (list(root.handlers), root.level, logging.getLogRecordFactory())
    stream = io.StringIO()
    configure_logging({"LOG_FORMAT": "json", "LOG_LEVEL": "DEBUG"}, stream=stream)
    install_log_redaction([])
    token = "tok-" + uuid.uuid4().hex
    try:
        for url in (
            f"{receiver.url}?token={token}&Sig%6Eature={token}#frag",
            f"http://127.0.0.1:9/hook?x=1&auth={token}",  # refused connection: its error is logged
        ):
            generation_id = await insert_generation(pool, project_id, webhook_url=url)
            with contextlib.suppress(DeliveryFailed):
                await deliver(pool, None, generation_id, 1, "generation.started", attempt=1)
    finally:
        configure_logging({"LOG_FORMAT": "text"})
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
        logging.setLogRecordFactory(saved[2])
    output = stream.getvalue()
    assert "HTTP Request: POST" in output  # httpx's INFO line is there, without the token
    assert "token=[redacted]" in output
    assert token not in output
