"""The hub's fan-out and the SSE stream's resync, without an HTTP server."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from psycopg_pool import AsyncConnectionPool

from api.streams.generation import generation_stream
from api.streams.hub import GENERATION_CHANNEL, PROJECT_CHANNEL, RESYNC, Hub, HubEvent
from tests.factories import insert_generation
from tests.sse_client import SSEEvent, frames, parse_frames


def notification(generation_id: str, event_id: int, **extra: Any) -> str:
    payload = {
        "event_id": event_id,
        "generation_id": generation_id,
        "project_id": "p",
        "workspace_id": "w",
        "kind": "progress",
        "status": "processing",
        "step": "processing",
        "progress": 50,
        **extra,
    }
    return json.dumps(payload)


async def test_events_reach_only_their_subscribers() -> None:
    hub = Hub("unused")
    mine, other, project = (
        hub.subscribe("generation:a"),
        hub.subscribe("generation:b"),
        hub.subscribe("project:p"),
    )
    hub.dispatch(GENERATION_CHANNEL, notification("a", 1))
    hub.dispatch(
        PROJECT_CHANNEL, json.dumps({"project_id": "p", "workspace_id": "w", "status": "pending"})
    )
    assert (await mine.get(0.1)) is not None
    assert (await mine.get(0.05)) is None
    assert (await other.get(0.05)) is None
    received = [await project.get(0.1) for _ in range(2)]
    assert {event.channel for event in received if event is not None} == {
        GENERATION_CHANNEL,
        PROJECT_CHANNEL,
    }
    for subscription in (mine, other, project):
        subscription.close()
    assert hub.subscriber_count == 0


def test_waits_shorter_than_a_millisecond_under_uvloop() -> None:
    """The API runs on uvloop (uvicorn picks it), whose call_at returns a plain Handle, without
    `when()`, for a deadline under half a millisecond away: the next wait must not trip on it."""
    uvloop = pytest.importorskip("uvloop")

    async def waits() -> list[HubEvent | None]:
        hub = Hub("unused")
        subscription = hub.subscribe("generation:a")

        async def two_waits() -> list[HubEvent | None]:
            # The first wait (0.4 ms) is woken by an event while its timer, a Handle, is still
            # pending; the second starts at once, as a stream's next wait does after a frame.
            return [await subscription.get(0.0004), await subscription.get(0.01)]

        waiting = asyncio.ensure_future(two_waits())
        await asyncio.sleep(0)
        hub.dispatch(GENERATION_CHANNEL, notification("a", 1))
        got = await waiting
        subscription.close()
        return got

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        got = runner.run(waits())
    assert [event is None for event in got] == [False, True]


async def test_a_slow_subscriber_overflows_without_blocking_the_others() -> None:
    hub = Hub("unused")
    slow = hub.subscribe("generation:a")
    fast = hub.subscribe("generation:a")
    slow.maxsize = 2
    for event_id in range(1, 11):
        hub.dispatch(GENERATION_CHANNEL, notification("a", event_id))
    assert len(fast.queue) == 10
    assert slow.stale
    assert (await slow.get(0.1)) is RESYNC


async def test_malformed_notifications_are_ignored() -> None:
    hub = Hub("unused")
    subscription = hub.subscribe("generation:a")
    hub.dispatch(GENERATION_CHANNEL, "{not json")
    hub.dispatch(GENERATION_CHANNEL, "[1, 2]")
    assert (await subscription.get(0.05)) is None


async def test_an_overflowed_stream_replays_from_image_events(
    pool: AsyncConnectionPool, project_id: uuid.UUID
) -> None:
    generation_id = await insert_generation(pool, project_id, job_id=-1)
    hub = Hub("unused")
    subscription = hub.subscribe(f"generation:{generation_id}")
    subscription.maxsize = 1
    stream = generation_stream(pool, subscription, generation_id, None, keepalive_s=0.2)
    [first] = parse_frames(await anext(stream))
    assert isinstance(first, SSEEvent) and first.json()["status"] == "pending"

    # Changes committed while the client is too slow: only one fits its queue.
    async with pool.connection() as conn:
        for step, progress in (("fetching", 10), ("processing", 50), ("saving", 80)):
            status = "processing"
            await conn.execute(
                "UPDATE image_generations SET status = %s, step = %s, progress = %s WHERE id = %s",
                (status, step, progress, generation_id),
            )
        await conn.execute(
            "UPDATE image_generations SET status = 'completed' WHERE id = %s", (generation_id,)
        )
        cur = await conn.execute(
            "SELECT id, step FROM image_events WHERE generation_id = %s ORDER BY id",
            (generation_id,),
        )
        expected = [(int(i), str(s)) for i, s in await cur.fetchall()][1:]
    hub.dispatch(
        GENERATION_CHANNEL, notification(str(generation_id), expected[0][0], step="fetching")
    )
    hub.dispatch(
        GENERATION_CHANNEL, notification(str(generation_id), expected[1][0], step="processing")
    )
    assert subscription.stale

    received = [m async for m in frames(stream) if isinstance(m, SSEEvent)]
    assert [(int(m.id or 0), m.json()["step"]) for m in received] == expected
    assert hub.subscriber_count == 0
