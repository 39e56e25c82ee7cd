"""NOTIFY payloads are seen by every connection that LISTENs (any role in the database): they
carry ids and state, never a prompt, a webhook URL (which may embed a token) or other request
data. A marker is put in every such field and must not appear in any payload of any channel."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from tests.sql.helpers import Conn, insert_generation, update_generation

CHANNELS = (
    "image_generation_events",
    "project_status",
    # procrastinate's own, fired when our triggers enqueue jobs
    "procrastinate_any_queue_v1",
    "procrastinate_queue_v1#images",
    "procrastinate_queue_v1#webhooks",
)


@pytest.fixture
async def listener(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listening:
        for channel in CHANNELS:
            await listening.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
        yield listening


async def drain(
    listener: psycopg.AsyncConnection[Any], until_event_id: int
) -> list[tuple[str, str]]:
    """Every notification of every channel up to the image_events row `until_event_id`
    (notifications arrive in commit order, so everything before it is in by then)."""
    received: list[tuple[str, str]] = []
    async for notify in listener.notifies(timeout=10.0):
        received.append((notify.channel, notify.payload))
        if (
            notify.channel == "image_generation_events"
            and json.loads(notify.payload)["event_id"] == until_event_id
        ):
            return received
    raise AssertionError(f"event {until_event_id} never arrived: {received}")


async def test_no_prompt_or_webhook_url_in_any_payload(
    conn: Conn, listener: psycopg.AsyncConnection[Any], project_id: uuid.UUID
) -> None:
    marker = f"sekrit{uuid.uuid4().hex}"
    request = {
        "prompt": f"a lighthouse, {marker}",
        "prompt_spec": json.dumps(
            {"base_prompt": marker, "negative_prompt": marker, "style_modifiers": [marker]}
        ),
        "webhook_url": f"https://hooks.example.com/{marker}?token={marker}",
        "metadata": json.dumps({"note": marker}),
        "idempotency_key": marker,
        "node_id": "node-1",
        "workflow_id": uuid.uuid4(),
    }
    finished = await insert_generation(conn, project_id, **request)
    await update_generation(conn, finished, status="processing", step="fetching", progress=10)
    await update_generation(conn, finished, step="processing", progress=50)
    await update_generation(
        conn, finished, status="completed", result_image_url="https://cdn.example.com/r.png"
    )
    cancelled = await insert_generation(
        conn, project_id, **{**request, "idempotency_key": marker + "-2"}
    )
    await update_generation(conn, cancelled, status="processing", provider_job_id="job-1")
    await update_generation(conn, cancelled, status="cancelled")
    cur = await conn.execute(
        "SELECT max(id) FROM image_events WHERE generation_id = %s", (cancelled,)
    )
    row = await cur.fetchone()
    assert row is not None

    received = await drain(listener, int(row[0]))
    channels = {channel for channel, _ in received}
    # Events, counters, the jobs of both generations and of the outgoing webhooks were announced.
    assert channels == set(CHANNELS)
    assert len([c for c, _ in received if c == "image_generation_events"]) >= 7
    leaked = [(channel, payload) for channel, payload in received if marker in payload]
    assert leaked == []
    for _, payload in received:
        assert "prompt" not in json.loads(payload)
        assert "webhook_url" not in json.loads(payload)
