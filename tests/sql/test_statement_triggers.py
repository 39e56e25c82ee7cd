"""Counters and event rows are written once per statement (migration 032): a statement that
changes many generations leaves the same counts and events as the same changes made one by
one, with one counter update and one `project_status` per project it touched."""

from __future__ import annotations

import json
import uuid
from typing import Any

import psycopg

from tests.sql.conftest import EVENTS, PROJECTS
from tests.sql.helpers import (
    Conn,
    assert_project_consistent,
    events,
    fetch_value,
    insert_generation,
)


async def drain(listener: psycopg.AsyncConnection[Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(n.channel, json.loads(n.payload)) async for n in listener.notifies(timeout=0.5)]


async def test_a_multi_row_statement_shifts_each_project_once(
    conn: Conn,
    listener: psycopg.AsyncConnection[Any],
    project_id: uuid.UUID,
    other_project_id: uuid.UUID,
) -> None:
    here = [await insert_generation(conn, project_id) for _ in range(5)]
    there = [await insert_generation(conn, other_project_id) for _ in range(3)]
    await drain(listener)

    await conn.execute(
        "UPDATE image_generations SET status = 'processing' WHERE id = ANY(%s)", (here + there,)
    )

    await assert_project_consistent(conn, project_id, ["processing"] * 5)
    await assert_project_consistent(conn, other_project_id, ["processing"] * 3)
    received = await drain(listener)
    project_updates = [payload for channel, payload in received if channel == PROJECTS]
    assert sorted(p["project_id"] for p in project_updates) == sorted(
        [str(project_id), str(other_project_id)]
    ), "one project_status per project, not one per row"
    final = {p["project_id"]: p["processing_count"] for p in project_updates}
    assert final == {str(project_id): 5, str(other_project_id): 3}
    assert sorted(
        payload["generation_id"] for channel, payload in received if channel == EVENTS
    ) == sorted(str(g) for g in here + there)


async def test_each_changed_row_gets_its_own_event_of_the_right_kind(
    conn: Conn, project_id: uuid.UUID
) -> None:
    started = await insert_generation(conn, project_id)
    stepped = await insert_generation(conn, project_id, status="processing")
    untouched = await insert_generation(conn, project_id, status="processing")
    before = {g: len(await events(conn, g)) for g in (started, stepped, untouched)}

    # One statement: a status change, a step change, and a row whose status, step and progress
    # stay as they are (its prompt changes; nothing a stream shows).
    await conn.execute(
        """
        UPDATE image_generations SET
            status = CASE WHEN id = %(started)s THEN 'processing' ELSE status END,
            step = CASE WHEN id = %(stepped)s THEN 'processing' ELSE step END,
            progress = CASE WHEN id = %(stepped)s THEN 40 ELSE progress END,
            metadata = metadata || '{"touched": true}'
        WHERE id = ANY(%(ids)s)
        """,
        {"started": started, "stepped": stepped, "ids": [started, stepped, untouched]},
    )

    new = {g: (await events(conn, g))[before[g] :] for g in (started, stepped, untouched)}
    assert [(e["kind"], e["status"]) for e in new[started]] == [("status", "processing")]
    assert [(e["kind"], e["step"], e["progress"]) for e in new[stepped]] == [
        ("progress", "processing", 40)
    ]
    assert new[untouched] == []


async def test_a_multi_row_insert_and_delete_count_every_row(
    conn: Conn, project_id: uuid.UUID
) -> None:
    await conn.execute(
        "INSERT INTO image_generations (project_id, prompt, status)"
        " SELECT %s, 'p ' || i, s FROM generate_series(1, 6) AS i,"
        " unnest(ARRAY['pending', 'completed', 'failed']) AS s",
        (project_id,),
    )
    statuses = ["pending"] * 6 + ["completed"] * 6 + ["failed"] * 6
    await assert_project_consistent(conn, project_id, statuses)
    assert (
        await fetch_value(
            conn,
            "SELECT count(*) FROM image_events e JOIN image_generations g"
            " ON g.id = e.generation_id WHERE g.project_id = %s AND e.kind = 'status'",
            (project_id,),
        )
        == 18
    )

    await conn.execute(
        "DELETE FROM image_generations WHERE project_id = %s AND status <> 'failed'",
        (project_id,),
    )
    await assert_project_consistent(conn, project_id, ["failed"] * 6)
