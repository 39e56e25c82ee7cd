"""Lossless resume: events that commit out of id order are neither skipped nor sent twice; a
resume at or past the end of a finished generation ends; a garbage `Last-Event-ID` is ignored."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncGenerator, AsyncIterator

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from api.streams.generation import generation_stream
from api.streams.hub import Hub
from api.streams.project import project_stream
from tests.conftest import Tenant
from tests.factories import insert_generation
from tests.sse_client import SSEEvent, frames, read_sse
from worker.core.sqlfiles import query


@pytest.fixture
async def hub(database_url: str) -> AsyncIterator[Hub]:
    hub = Hub(database_url)
    await hub.start()
    yield hub
    await hub.stop()


async def idle_generation(pool: AsyncConnectionPool, project_id: uuid.UUID) -> uuid.UUID:
    generation_id = await insert_generation(pool, project_id, job_id=-1)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE image_generations SET status = 'processing' WHERE id = %s", (generation_id,)
        )
    return generation_id


class Reader:
    """Consumes a stream in the background, as a connected client does."""

    def __init__(self, stream: AsyncGenerator[bytes, None], *, after: int = 0) -> None:
        self.stream = stream
        self.after = after  # ids up to this one are ignored
        self.ids: asyncio.Queue[int] = asyncio.Queue()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in frames(self.stream):
            if (
                isinstance(message, SSEEvent)
                and message.event == "generation"
                and int(str(message.id)) > self.after
            ):
                await self.ids.put(int(str(message.id)))

    async def take(self, count: int, timeout: float) -> list[int]:
        return [await asyncio.wait_for(self.ids.get(), timeout) for _ in range(count)]

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.stream.aclose()


async def test_a_late_committing_event_is_not_skipped(
    pool: AsyncConnectionPool, hub: Hub, project_id: uuid.UUID, database_url: str
) -> None:
    first, second = await idle_generation(pool, project_id), await idle_generation(pool, project_id)
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT max(id) FROM image_events")
        row = await cur.fetchone()
        assert row is not None
    # The setup's own events reach a new stream late when another transaction in the cluster
    # (another test session) holds the horizon back: they are not what this test is about.
    reader = Reader(
        project_stream(
            pool, hub.subscribe(f"project:{project_id}"), project_id, None, keepalive_s=5
        ),
        after=int(row[0]),
    )
    await asyncio.sleep(0.2)

    async with await psycopg.AsyncConnection.connect(database_url) as slow:
        # The slow transaction takes the lower event id, the fast one commits first.
        await slow.execute(
            "UPDATE image_generations SET step = 'processing', progress = 50 WHERE id = %s",
            (first,),
        )
        cur = await slow.execute(
            "SELECT max(id) FROM image_events WHERE generation_id = %s", (first,)
        )
        row = await cur.fetchone()
        assert row is not None
        slow_id = int(row[0])
        async with pool.connection() as fast:
            await fast.execute(
                "UPDATE image_generations SET step = 'processing', progress = 50 WHERE id = %s",
                (second,),
            )
            cur = await fast.execute(
                "SELECT max(id) FROM image_events WHERE generation_id = %s", (second,)
            )
            row = await cur.fetchone()
            assert row is not None
            fast_id = int(row[0])
        assert fast_id > slow_id
        # While the slow transaction is open, the fast event must wait: sending it now would let a
        # client resume after it and never see the slow one.
        with pytest.raises(TimeoutError):
            await reader.take(1, timeout=0.6)
        await slow.commit()
    assert await reader.take(2, timeout=5) == [slow_id, fast_id]
    await reader.close()

    # Reconnects resume exactly after what was received.
    resumed = Reader(
        project_stream(
            pool, hub.subscribe(f"project:{project_id}"), project_id, slow_id, keepalive_s=5
        )
    )
    assert await resumed.take(1, timeout=5) == [fast_id]
    with pytest.raises(TimeoutError):
        await resumed.take(1, timeout=0.3)
    await resumed.close()


async def test_interleaved_writers_and_a_reconnecting_reader_see_every_event_once(
    pool: AsyncConnectionPool, hub: Hub, project_id: uuid.UUID, database_url: str
) -> None:
    generations = [await idle_generation(pool, project_id) for _ in range(4)]

    async def writer(generation_id: uuid.UUID, index: int) -> None:
        async with await psycopg.AsyncConnection.connect(database_url) as conn:
            for progress in range(51, 80):
                async with conn.transaction():
                    await conn.execute(
                        "UPDATE image_generations SET progress = %s WHERE id = %s",
                        (progress, generation_id),
                    )
                    # Hold some transactions open so commits interleave out of id order.
                    await asyncio.sleep(0.002 * ((progress + index) % 3))

    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT max(id) FROM image_events WHERE project_id = %s", (project_id,)
        )
        row = await cur.fetchone()
    assert row is not None
    received: list[int] = []
    last: int | None = int(row[0])
    writers = asyncio.gather(*(writer(g, i) for i, g in enumerate(generations)))
    expected_total = 4 * 29
    while len(received) < expected_total:
        # Connect, read a few events, drop the connection, resume with Last-Event-ID.
        reader = Reader(
            project_stream(
                pool, hub.subscribe(f"project:{project_id}"), project_id, last, keepalive_s=5
            )
        )
        take = min(7, expected_total - len(received))
        print("reconnect", last, len(received), pool.get_stats(), flush=True)
        try:
            got = await reader.take(take, timeout=10)
        finally:
            await reader.close()
        received += got
        last = got[-1]
    await writers

    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id FROM image_events WHERE project_id = %s AND kind = 'progress' ORDER BY id",
            (project_id,),
        )
        written = [int(r[0]) for r in await cur.fetchall()]
    assert len(received) == len(set(received)), "an event was sent twice"
    assert sorted(received) == written, "an event was skipped"


async def test_a_stream_started_while_another_transaction_is_open_catches_up_when_it_ends(
    pool: AsyncConnectionPool, hub: Hub, project_id: uuid.UUID, database_url: str
) -> None:
    """Events are sent once their transaction is below the horizon (the oldest one running, in
    the whole cluster). A stream that starts while an unrelated transaction holds the horizon
    back must still send them when it ends, without waiting for the project's next change."""
    async with await psycopg.AsyncConnection.connect(database_url) as unrelated:
        await unrelated.execute("SELECT pg_current_xact_id()")  # takes a transaction id
        generation_id = await idle_generation(pool, project_id)
        await asyncio.sleep(0.3)  # its notifications are dispatched before the stream subscribes
        reader = Reader(
            project_stream(pool, hub.subscribe(f"project:{project_id}"), project_id, 0, 5)
        )
        with pytest.raises(TimeoutError):
            await reader.take(1, timeout=0.4)
        await unrelated.rollback()
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT id FROM image_events WHERE generation_id = %s ORDER BY id", (generation_id,)
        )
        expected = [int(row[0]) for row in await cur.fetchall()]
    assert await reader.take(len(expected), timeout=3) == expected
    await reader.close()


async def drain(stream: AsyncGenerator[bytes, None], timeout: float) -> list[SSEEvent]:
    """Every event up to the end of the stream; TimeoutError if it does not end in time."""
    messages: list[SSEEvent] = []
    try:
        async with asyncio.timeout(timeout):
            async for message in frames(stream):
                if isinstance(message, SSEEvent):
                    messages.append(message)
    finally:
        await stream.aclose()
    return messages


async def max_event_id(pool: AsyncConnectionPool, generation_id: uuid.UUID) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT max(id) FROM image_events WHERE generation_id = %s", (generation_id,)
        )
        row = await cur.fetchone()
    assert row is not None
    return int(row[0])


async def test_a_resume_at_or_past_the_terminal_event_sends_it_and_ends(
    pool: AsyncConnectionPool, hub: Hub, project_id: uuid.UUID
) -> None:
    """EventSource reconnects with the id of the last event it got: after a finished
    generation's terminal event, that stream must end again, not idle with keep-alives."""
    generation_id = await idle_generation(pool, project_id)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE image_generations SET status = 'completed', progress = 100,"
            " result_image_url = 'https://cdn.example.com/r.png' WHERE id = %s",
            (generation_id,),
        )
    terminal = await max_event_id(pool, generation_id)
    async with pool.connection() as conn:
        # Events may follow the terminal one (a late provider callback is logged).
        await conn.execute(
            query("log_event"),
            {"id": generation_id, "kind": "webhook", "message": "late", "data": Jsonb({})},
        )
    late = await max_event_id(pool, generation_id)
    for last_event_id in (terminal, late, late + 1_000_000, 2**63 - 1):
        stream = generation_stream(
            pool, hub.subscribe(f"generation:{generation_id}"), generation_id, last_event_id, 5
        )
        messages = await drain(stream, timeout=3)
        final = messages[-1]
        assert final.event == "generation" and int(str(final.id)) == terminal, last_event_id
        assert '"status":"completed"' in str(final.data)


async def test_a_resume_past_a_running_generations_last_event_still_follows_it(
    pool: AsyncConnectionPool, hub: Hub, project_id: uuid.UUID
) -> None:
    """An id past every event of this generation is no position in its stream: the events that
    follow (all with lower ids) must not be dropped as already sent, the terminal one included."""
    generation_id = await idle_generation(pool, project_id)
    past = await max_event_id(pool, generation_id) + 1_000_000
    reader = Reader(
        generation_stream(
            pool, hub.subscribe(f"generation:{generation_id}"), generation_id, past, 5
        )
    )
    await asyncio.sleep(0.3)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE image_generations SET progress = 60 WHERE id = %s", (generation_id,)
        )
        await conn.execute(
            "UPDATE image_generations SET status = 'cancelled' WHERE id = %s", (generation_id,)
        )
    assert len(await reader.take(2, timeout=5)) == 2
    await asyncio.wait_for(reader.task, 3)  # ended after the terminal event
    await reader.close()


GARBAGE_LAST_EVENT_IDS: list[bytes] = [
    b"9" * 5000,
    b"99999999999999999999",  # past bigint
    b"\xb2",  # a digit to str.isdigit(), not to int()
    b"1\xe9",
    b"\xef\xbc\x91",  # a full-width 1, UTF-8
    b"-1",
    b"0x10",
    b"1 2",
]


async def first_events(
    http: httpx.AsyncClient, path: str, headers: dict[bytes, bytes], count: int
) -> tuple[list[SSEEvent], bool]:
    """The first `count` events (fewer if the stream ends first), and whether it ended."""
    events: list[SSEEvent] = []
    async with asyncio.timeout(10), http.stream("GET", path, headers=headers) as response:
        assert response.status_code == 200, (path, headers, await response.aread())
        async for item in read_sse(response):
            if isinstance(item, SSEEvent):
                events.append(item)
                if len(events) == count:
                    return events, False
    return events, True


async def test_a_garbage_last_event_id_is_treated_as_absent_on_every_stream(
    api_url: str, tenant: Tenant
) -> None:
    workflow_id = str(uuid.uuid4())
    async with httpx.AsyncClient(base_url=api_url, timeout=30) as http:
        project = await http.post("/v1/projects", json={"name": "p"}, headers=tenant.headers)
        assert project.status_code == 201, project.text
        project_id = project.json()["id"]
        created = await http.post(
            "/v1/generations",
            json={
                "project_id": project_id,
                "prompt": "x",
                "workflow_id": workflow_id,
                "node_id": "n1",
            },
            headers=tenant.headers,
        )
        assert created.status_code == 201, created.text
        generation_id = created.json()["id"]
        cancelled = await http.post(
            f"/v1/generations/{generation_id}/cancel", headers=tenant.headers
        )
        assert cancelled.status_code == 200, cancelled.text

        for raw in GARBAGE_LAST_EVENT_IDS:
            headers = {
                **{name.encode(): value.encode() for name, value in tenant.headers.items()},
                b"Last-Event-ID": raw,
            }
            # As absent: the current (terminal) state, then the end.
            events, ended = await first_events(
                http, f"/v1/generations/{generation_id}/events", headers, 2
            )
            assert ended and len(events) == 1, raw
            assert events[0].json()["status"] == "cancelled"
            # As absent: the project first, no replay.
            events, _ = await first_events(http, f"/v1/projects/{project_id}/events", headers, 1)
            assert events[0].event == "project", raw
            events, _ = await first_events(http, f"/v1/workflows/{workflow_id}/events", headers, 1)
            assert events[0].event == "node", raw
            events, _ = await first_events(http, "/v1/projects/events", headers, 1)
            assert events[0].event == "project", raw
