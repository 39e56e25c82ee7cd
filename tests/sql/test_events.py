"""image_events: one row per change of status, step or progress, written by the database."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from tests.sql.helpers import Conn, events, insert_generation, update_generation

# CONTRACT section 5: each step's label.
LABELS = {
    "fetching": "Loading image record from database",
    "uploading": "Preparing image for AI processing",
    "preparing": "Processing and resizing mask to match image dimensions",
    "processing": "AI model is generating the image",
    "saving": "Downloading and storing result",
}


def trail(rows: list[dict[str, Any]]) -> list[tuple[str, str, str, int]]:
    return [(r["kind"], r["status"], r["step"], r["progress"]) for r in rows]


async def test_insert_records_one_status_event(conn: Conn, project_id: uuid.UUID) -> None:
    generation_id = await insert_generation(conn, project_id)
    rows = await events(conn, generation_id)
    assert trail(rows) == [("status", "pending", "queued", 0)]
    assert rows[0]["project_id"] == project_id
    assert rows[0]["message"] == "Waiting in queue"


async def test_a_full_run_records_each_change_once(conn: Conn, project_id: uuid.UUID) -> None:
    generation_id = await insert_generation(conn, project_id)
    changes: list[tuple[dict[str, Any], tuple[str, str, str, int] | None]] = [
        (
            {"status": "processing", "step": "fetching", "progress": 10},
            ("status", "processing", "fetching", 10),
        ),
        ({"step": "uploading", "progress": 25}, ("progress", "processing", "uploading", 25)),
        ({"step": "processing", "progress": 50}, ("progress", "processing", "processing", 50)),
        ({"progress": 63}, ("progress", "processing", "processing", 63)),
        ({"progress": 63}, None),  # the same value again: nothing changed
        ({"metadata": Jsonb({"note": "no step change"})}, None),
        ({"provider_job_id": "abc"}, None),
        ({"step": "saving", "progress": 80}, ("progress", "processing", "saving", 80)),
        (
            {"status": "completed", "result_image_url": "https://cdn.example.com/r.png"},
            ("status", "completed", "completed", 100),
        ),
    ]
    expected = [("status", "pending", "queued", 0)]
    for columns, event in changes:
        await update_generation(conn, generation_id, **columns)
        if event is not None:
            expected.append(event)
        assert trail(await events(conn, generation_id)) == expected, columns
    rows = await events(conn, generation_id)
    assert [r["id"] for r in rows] == sorted(r["id"] for r in rows)
    assert rows[-1]["message"] == "Processing finished successfully"
    assert rows[-1]["data"]["result_image_url"] == "https://cdn.example.com/r.png"


@pytest.mark.parametrize(("step", "label"), LABELS.items())
async def test_event_message_is_the_step_label(
    conn: Conn, project_id: uuid.UUID, step: str, label: str
) -> None:
    generation_id = await insert_generation(conn, project_id)
    await update_generation(conn, generation_id, status="processing", step=step, progress=40)
    await update_generation(conn, generation_id, progress=41)
    rows = await events(conn, generation_id)
    assert [(r["kind"], r["message"]) for r in rows[1:]] == [("status", label), ("progress", label)]


async def test_failure_event_carries_the_error(conn: Conn, project_id: uuid.UUID) -> None:
    generation_id = await insert_generation(conn, project_id)
    await update_generation(
        conn, generation_id, status="failed", error_code="content_policy", error_message="refused"
    )
    last = (await events(conn, generation_id))[-1]
    assert (last["kind"], last["status"], last["step"]) == ("status", "failed", "failed")
    assert last["message"] == "Processing failed"
    assert last["data"]["error_code"] == "content_policy"
    assert last["data"]["error_message"] == "refused"
