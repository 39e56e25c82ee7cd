"""Server-Sent Events for a generation: current state first, live changes, lossless resume.

The subscription is taken before the database is read, so nothing committed in between is
missed; ids (image_events.id) only grow, so anything seen twice is dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any
from uuid import UUID

import msgspec
from psycopg_pool import AsyncConnectionPool

from api.auth.keys import StreamCredential
from api.streams.encoding import sse_event
from api.streams.hub import GENERATION_CHANNEL, HubEvent, Subscription
from api.streams.loop import Messages, StreamLogic, stream_loop
from worker.core import store
from worker.core.models import TERMINAL_STATUSES, ImageEvent, Status, Step

REPLAY_PAGE = 500


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
    error_resolution: str | None = None
    thumbnail_url: str | None = None
    attempts: int | None = None
    # In the state a stream opens with, while it waits: runnable generation jobs ahead of it.
    queue_position: int | None = None


# What an event's `data` (image_events.data, or the NOTIFY payload's) adds to the state.
DATA_FIELDS = (
    "result_image_url",
    "thumbnail_url",
    "error_code",
    "error_message",
    "error_resolution",
    "attempts",
)


def _data_fields(data: dict[str, Any]) -> dict[str, Any]:
    return {name: data.get(name) for name in DATA_FIELDS}


def from_row(row: ImageEvent) -> GenerationEventData:
    return GenerationEventData(
        id=row.generation_id,
        event_id=row.id,
        kind=row.kind,
        status=row.status,
        step=row.step,
        label=row.message,
        progress=row.progress,
        ts=row.ts,
        **_data_fields(row.data),
    )


def from_notification(payload: dict[str, Any]) -> GenerationEventData:
    return GenerationEventData(
        id=payload["generation_id"],
        event_id=int(payload["event_id"]),
        kind=payload["kind"],
        status=payload["status"],
        step=payload["step"],
        label=payload.get("label"),
        progress=int(payload["progress"]),
        ts=payload.get("ts"),
        **_data_fields(payload.get("data") or {}),
    )


def generation_message(event: GenerationEventData) -> bytes:
    """A `generation` event; its id is the image_events.id a client resumes after."""
    return sse_event("generation", event, event.event_id)


def _decoded_and_encoded(event: HubEvent) -> tuple[GenerationEventData, bytes]:
    """A notification as the event's data and its frame: made once for all its subscribers."""
    data = from_notification(event.payload)
    return data, generation_message(data)


def _is_terminal(event: GenerationEventData) -> bool:
    return event.kind == "status" and event.status in TERMINAL_STATUSES


async def _events_after(
    pool: AsyncConnectionPool, generation_id: UUID, after_id: int
) -> list[GenerationEventData]:
    rows = await store.generation_events_after(pool, generation_id, after_id, REPLAY_PAGE)
    return [from_row(row) for row in rows]


async def _current_state(
    pool: AsyncConnectionPool, generation_id: UUID
) -> GenerationEventData | None:
    row = await store.latest_state_event(pool, generation_id)
    if row is None:
        return None
    state = from_row(row)
    if state.status == "pending":
        state.queue_position = await store.queue_position(pool, generation_id)
    return state


async def _resume(
    pool: AsyncConnectionPool, generation_id: UUID, after_id: int
) -> tuple[list[GenerationEventData], int, GenerationEventData | None]:
    """What a stream resumed after `after_id` sends first: the events after it, where to count
    from (an id past every event of this generation is no position in its stream, so counting
    starts at its last event instead), and, when the generation is finished but no terminal
    event is in the backlog, its terminal state: sent last, again, so the stream ends."""
    backlog = await _events_after(pool, generation_id, after_id)
    if not backlog:
        after_id = min(after_id, await store.generation_last_event_id(pool, generation_id))
    if any(_is_terminal(event) for event in backlog):
        return backlog, after_id, None
    current = await _current_state(pool, generation_id)
    return backlog, after_id, current if current is not None and _is_terminal(current) else None


class _GenerationStream(StreamLogic):
    def __init__(
        self, pool: AsyncConnectionPool, generation_id: UUID, last_event_id: int | None
    ) -> None:
        self.pool = pool
        self.generation_id = generation_id
        self.last_event_id = last_event_id
        self.last_sent = last_event_id or 0

    def _send(
        self, events: list[GenerationEventData], frames: list[bytes] | None = None
    ) -> Iterator[bytes]:
        """The events not sent yet, up to the terminal one (the stream's last); `frames`, when
        given, are the events already encoded."""
        for index, event in enumerate(events):
            if event.event_id <= self.last_sent:
                continue
            self.last_sent = event.event_id
            yield frames[index] if frames is not None else generation_message(event)
            if _is_terminal(event):
                self.finished = True
                return

    async def start(self) -> Messages:
        ending: GenerationEventData | None = None
        if self.last_event_id is None:
            current = await _current_state(self.pool, self.generation_id)
            backlog = [current] if current is not None else []
        else:
            backlog, self.last_sent, ending = await _resume(
                self.pool, self.generation_id, self.last_sent
            )
        for message in self._send(backlog):
            yield message
        if ending is not None and not self.finished:
            self.finished = True
            yield generation_message(ending)

    async def notified(self, event: HubEvent) -> Messages:
        if event.payload.get("truncated"):
            async for message in self.resync():
                yield message
        elif event.channel == GENERATION_CHANNEL:
            data, frame = event.shared("generation", _decoded_and_encoded)
            for message in self._send([data], [frame]):
                yield message

    async def resync(self) -> Messages:
        events = await _events_after(self.pool, self.generation_id, self.last_sent)
        for message in self._send(events):
            yield message


def generation_stream(
    pool: AsyncConnectionPool,
    subscription: Subscription,
    generation_id: UUID,
    last_event_id: int | None,
    keepalive_s: float,
    credential: StreamCredential | None = None,
) -> Messages:
    """The current state first (or, resumed, every event after `last_event_id`), then each
    change; the stream ends after the terminal event."""
    logic = _GenerationStream(pool, generation_id, last_event_id)
    return stream_loop(logic, subscription, keepalive_s, credential)


__all__ = ["GenerationEventData", "from_row", "generation_message", "generation_stream"]
