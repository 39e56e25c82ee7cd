"""Server-Sent Events for a generation: current state first, live changes, lossless resume.

The subscription is taken before the database is read, so nothing committed in between is
missed; ids (image_events.id) only grow, so anything seen twice is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncGenerator
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
import psycopg
from litestar.response import ServerSentEventMessage
from psycopg.rows import class_row
from psycopg_pool import AsyncConnectionPool

from api.auth.keys import StreamCredential
from api.streams.hub import GENERATION_CHANNEL, RESYNC, SHUTDOWN, Subscription
from worker.core.models import TERMINAL_STATUSES, ImageEvent, Status, Step
from worker.core.sqlfiles import query

logger = logging.getLogger(__name__)

REPLAY_PAGE = 500
DATABASE_RETRY_S = 1.0
# Sent while the database is away: the client stays connected and nothing is lost.
WAITING = ServerSentEventMessage(comment="waiting for the database", data=None)
KEEPALIVE = ServerSentEventMessage(comment="keepalive", data=None)
RECONNECT_MS = 1000
# The last message of a stream whose server is shutting down: reconnect (to the new instance).
RECONNECT = ServerSentEventMessage(
    comment="server restarting, reconnect", data=None, retry=RECONNECT_MS
)


class GenerationEventData(msgspec.Struct, omit_defaults=True):
    """The `data:` of a `generation` event (CONTRACT section 6)."""

    id: UUID | str
    event_id: int
    kind: str
    status: Status
    step: Step
    label: str | None
    progress: int
    ts: datetime | str | None = None
    result_image_url: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    attempts: int | None = None


_encoder = msgspec.json.Encoder()


def from_row(row: ImageEvent) -> GenerationEventData:
    data = row.data
    return GenerationEventData(
        id=row.generation_id,
        event_id=row.id,
        kind=row.kind,
        status=row.status,
        step=row.step,
        label=row.message,
        progress=row.progress,
        ts=row.ts,
        result_image_url=data.get("result_image_url"),
        error_code=data.get("error_code"),
        error_message=data.get("error_message"),
        attempts=data.get("attempts"),
    )


def from_notification(payload: dict[str, Any]) -> GenerationEventData:
    data = payload.get("data") or {}
    return GenerationEventData(
        id=payload["generation_id"],
        event_id=int(payload["event_id"]),
        kind=payload["kind"],
        status=payload["status"],
        step=payload["step"],
        label=payload.get("label"),
        progress=int(payload["progress"]),
        ts=payload.get("ts"),
        result_image_url=data.get("result_image_url"),
        error_code=data.get("error_code"),
        error_message=data.get("error_message"),
        attempts=data.get("attempts"),
    )


def _message(event: GenerationEventData) -> ServerSentEventMessage:
    return ServerSentEventMessage(
        data=_encoder.encode(event).decode(), event="generation", id=event.event_id
    )


def _is_terminal(event: GenerationEventData) -> bool:
    return event.kind == "status" and event.status in TERMINAL_STATUSES


async def _events_after(
    pool: AsyncConnectionPool, generation_id: UUID, after_id: int
) -> list[GenerationEventData]:
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=class_row(ImageEvent))
        await cur.execute(
            query("generation_events_after"),
            {"generation_id": generation_id, "after_id": after_id, "limit": REPLAY_PAGE},
        )
        return [from_row(row) for row in await cur.fetchall()]


async def _current_state(
    pool: AsyncConnectionPool, generation_id: UUID
) -> GenerationEventData | None:
    async with pool.connection() as conn:
        cur = conn.cursor(row_factory=class_row(ImageEvent))
        await cur.execute(query("latest_state_event"), {"generation_id": generation_id})
        row = await cur.fetchone()
    return from_row(row) if row is not None else None


async def _last_event_id(pool: AsyncConnectionPool, generation_id: UUID) -> int:
    async with pool.connection() as conn:
        cur = await conn.execute(
            query("generation_last_event_id"), {"generation_id": generation_id}
        )
        row = await cur.fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


async def _resume(
    pool: AsyncConnectionPool, generation_id: UUID, after_id: int
) -> tuple[list[GenerationEventData], int, GenerationEventData | None]:
    """What a stream resumed after `after_id` sends first: the events after it, where to count
    from (an id past every event of this generation is no position in its stream, so counting
    starts at its last event instead), and, when the generation is finished but no terminal
    event is in the backlog, its terminal state: sent last, again, so the stream ends."""
    backlog = await _events_after(pool, generation_id, after_id)
    if not backlog:
        after_id = min(after_id, await _last_event_id(pool, generation_id))
    if any(_is_terminal(event) for event in backlog):
        return backlog, after_id, None
    current = await _current_state(pool, generation_id)
    return backlog, after_id, current if current is not None and _is_terminal(current) else None


async def generation_stream(
    pool: AsyncConnectionPool,
    subscription: Subscription,
    generation_id: UUID,
    last_event_id: int | None,
    keepalive_s: float,
) -> AsyncGenerator[ServerSentEventMessage, None]:
    last_sent = last_event_id or 0
    ending: GenerationEventData | None = None
    try:
        while True:
            try:
                if last_event_id is None:
                    current = await _current_state(pool, generation_id)
                    backlog = [current] if current is not None else []
                else:
                    backlog, last_sent, ending = await _resume(pool, generation_id, last_sent)
                break
            except psycopg.OperationalError:
                yield WAITING
                await asyncio.sleep(DATABASE_RETRY_S)
        while True:
            for event in backlog:
                if event.event_id <= last_sent:
                    continue
                last_sent = event.event_id
                yield _message(event)
                if _is_terminal(event):
                    return
            if ending is not None:
                yield _message(ending)
                return
            backlog = []
            item = await subscription.get(keepalive_s)
            if item is SHUTDOWN:
                yield RECONNECT
                return
            if item is None:
                yield KEEPALIVE
            elif item is RESYNC or item.payload.get("truncated"):
                try:
                    backlog = await _events_after(pool, generation_id, last_sent)
                except psycopg.OperationalError:
                    # The database is away: keep the client, try again shortly.
                    subscription.stale = True
                    await asyncio.sleep(DATABASE_RETRY_S)
                    yield WAITING
            elif item.channel == GENERATION_CHANNEL:
                backlog = [from_notification(item.payload)]
    finally:
        subscription.close()


_EVENT_ID = re.compile(r"[0-9]{1,19}")
_MAX_EVENT_ID = 2**63 - 1  # image_events.id is a bigint


def parse_last_event_id(raw: str | None) -> int | None:
    """The id a client resumes after, or None (as if absent) for anything that cannot be one of
    ours: not plain ASCII digits, or past bigint. Every SSE route parses it here."""
    if raw is None:
        return None
    value = raw.strip()
    if _EVENT_ID.fullmatch(value) is None:
        return None
    parsed = int(value)
    return parsed if parsed <= _MAX_EVENT_ID else None


async def end_when_unauthorized(
    stream: AsyncGenerator[ServerSentEventMessage, None],
    subscription: Subscription,
    credential: StreamCredential,
) -> AsyncGenerator[ServerSentEventMessage, None]:
    """Any stream, ended with an `unauthorized` event once its credential no longer holds
    (a revoked key, an expired token, a user who left the workspace)."""
    ended: list[ServerSentEventMessage] = []

    async def watch() -> None:
        while not ended:
            await asyncio.sleep(credential.next_check_s())
            try:
                reason = await credential.check()
            except Exception:
                logger.exception("could not check a stream's credential again")
                continue
            if reason is not None:
                ended.append(
                    ServerSentEventMessage(
                        event="unauthorized", data=_encoder.encode(reason).decode()
                    )
                )
        subscription.shut_down()  # wakes the stream if it waits for a notification

    watcher = asyncio.create_task(watch())
    try:
        async for message in stream:
            if ended:
                break
            yield message
        if ended:
            yield ended[0]
    finally:
        watcher.cancel()
        await stream.aclose()


__all__ = ["RECONNECT_MS", "end_when_unauthorized", "generation_stream", "parse_last_event_id"]
