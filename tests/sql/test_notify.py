"""The two NOTIFY channels carry the keys of CONTRACT section 4, fired by triggers."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from tests.sql.conftest import EVENTS, PROJECTS
from tests.sql.helpers import (
    COUNTER_COLUMNS,
    Conn,
    create_project,
    events,
    insert_generation,
    project_counters,
    update_generation,
)

EVENT_KEYS = {
    "event_id",
    "generation_id",
    "project_id",
    "workspace_id",
    "kind",
    "status",
    "step",
    "progress",
}
PROJECT_KEYS = {"project_id", "workspace_id", "status", *COUNTER_COLUMNS}
PROMPT = "a secret prompt about a lighthouse"


@dataclass(frozen=True)
class Message:
    channel: str
    raw: str

    @property
    def payload(self) -> dict[str, Any]:
        value = json.loads(self.raw)
        assert isinstance(value, dict)
        return value


async def receive_until(
    listener: psycopg.AsyncConnection[Any], generation_id: uuid.UUID, event_count: int
) -> list[Message]:
    """Every notification (both channels) up to the `event_count`-th event of the generation.

    Notifications arrive in commit order, so once the last event is in, every notification of
    the transactions before it is in too."""
    received: list[Message] = []
    seen = 0
    async for notify in listener.notifies(timeout=10.0):
        message = Message(notify.channel, notify.payload)
        received.append(message)
        if notify.channel == EVENTS and message.payload["generation_id"] == str(generation_id):
            seen += 1
            if seen == event_count:
                return received
    raise AssertionError(f"only {seen} of {event_count} events arrived: {received}")


def of_generation(messages: list[Message], generation_id: uuid.UUID) -> list[dict[str, Any]]:
    return [
        m.payload
        for m in messages
        if m.channel == EVENTS and m.payload["generation_id"] == str(generation_id)
    ]


def of_project(messages: list[Message], project_id: uuid.UUID) -> list[dict[str, Any]]:
    return [
        m.payload
        for m in messages
        if m.channel == PROJECTS and m.payload["project_id"] == str(project_id)
    ]


def assert_no_prompt(message: Message) -> None:
    assert "prompt" not in message.payload
    assert PROMPT not in message.raw
    assert len(message.raw.encode()) < 8000


async def test_insert_and_updates_notify_both_channels(
    conn: Conn, listener: psycopg.AsyncConnection[Any], workspace_id: uuid.UUID
) -> None:
    project_id = await create_project(conn, workspace_id)
    created = await project_counters(conn, project_id)
    generation_id = await insert_generation(conn, project_id, prompt=PROMPT)
    after_insert = await project_counters(conn, project_id)
    await update_generation(conn, generation_id, status="processing", step="fetching", progress=10)
    after_start = await project_counters(conn, project_id)
    await update_generation(conn, generation_id, progress=12)  # no counter changes

    messages = await receive_until(listener, generation_id, 3)
    rows = await events(conn, generation_id)
    generation_events = of_generation(messages, generation_id)
    assert [e["event_id"] for e in generation_events] == [r["id"] for r in rows]
    for event, row in zip(generation_events, rows, strict=True):
        assert set(event) >= EVENT_KEYS
        assert event["project_id"] == str(project_id)
        assert event["workspace_id"] == str(workspace_id)
        assert (event["kind"], event["status"], event["step"], event["progress"]) == (
            row["kind"],
            row["status"],
            row["step"],
            row["progress"],
        )
    assert [(e["kind"], e["status"], e["progress"]) for e in generation_events] == [
        ("status", "pending", 0),
        ("status", "processing", 10),
        ("progress", "processing", 12),
    ]

    project_messages = of_project(messages, project_id)
    # The project's creation, the insert and the status change; not the progress update.
    assert len(project_messages) == 3
    for payload, counters in zip(
        project_messages, [created, after_insert, after_start], strict=True
    ):
        assert set(payload) >= PROJECT_KEYS
        assert payload["workspace_id"] == str(workspace_id)
        assert payload["status"] == counters.status
        assert {c: payload[c] for c in COUNTER_COLUMNS} == {
            c: getattr(counters, c) for c in COUNTER_COLUMNS
        }
    assert (project_messages[0]["status"], project_messages[0]["image_count"]) == ("pending", 0)
    assert (project_messages[1]["status"], project_messages[1]["pending_count"]) == ("pending", 1)
    assert (project_messages[2]["status"], project_messages[2]["processing_count"]) == (
        "processing",
        1,
    )
    for message in messages:
        assert_no_prompt(message)


async def test_payload_stays_small_with_the_largest_legal_values(
    conn: Conn, listener: psycopg.AsyncConnection[Any], project_id: uuid.UUID
) -> None:
    long_url = "https://cdn.example.com/" + "segment-of-a-path/" * 226
    assert len(long_url) <= 4096
    generation_id = await insert_generation(
        conn, project_id, prompt=PROMPT + " " + "and more words " * 500
    )
    await update_generation(conn, generation_id, status="processing")
    await update_generation(
        conn,
        generation_id,
        status="failed",
        result_image_url=long_url,
        error_message="the provider said: " + "no, " * 990,
    )
    messages = await receive_until(listener, generation_id, 3)
    final = of_generation(messages, generation_id)[-1]
    assert (final["status"], final["event_id"]) == (
        "failed",
        (await events(conn, generation_id))[-1]["id"],
    )
    for message in messages:
        assert_no_prompt(message)
