"""Project counters and status follow the contract's rule table, kept in O(1) by triggers."""

from __future__ import annotations

import uuid

import pytest
from psycopg import errors

from tests.sql.helpers import (
    LEGAL,
    PATH_TO,
    Conn,
    Counters,
    assert_project_consistent,
    create_project,
    expected_project_status,
    insert_generation,
    project_counters,
    set_status,
    update_generation,
    walk_to,
)

# Multisets of generation statuses and the project status the contract gives them.
CASES: list[tuple[list[str], str]] = [
    ([], "pending"),
    (["pending"], "pending"),
    (["pending", "pending"], "pending"),
    (["processing"], "processing"),
    (["processing", "processing"], "processing"),
    (["pending", "processing"], "processing"),
    (["pending", "completed"], "processing"),
    (["completed"], "completed"),
    (["completed", "completed"], "completed"),
    (["failed"], "failed"),
    (["failed", "failed"], "failed"),
    (["completed", "failed"], "failed"),
    (["completed", "completed", "failed"], "failed"),
    (["pending", "failed"], "processing"),
    (["processing", "failed"], "processing"),
    (["processing", "completed"], "processing"),
    (["pending", "processing", "completed", "failed"], "processing"),
    (["cancelled"], "pending"),
    (["cancelled", "cancelled"], "pending"),
    (["cancelled", "pending"], "pending"),
    (["cancelled", "processing"], "processing"),
    (["cancelled", "completed"], "completed"),
    (["cancelled", "failed"], "failed"),
    (["cancelled", "completed", "failed"], "failed"),
    (["cancelled", "pending", "completed"], "processing"),
]


def test_the_reference_rule_matches_the_table() -> None:
    """The independent Python rule the other tests compare against agrees with the table."""
    for statuses, status in CASES:
        assert expected_project_status(statuses) == status, statuses


async def test_a_new_project_is_pending_with_zero_counters(
    conn: Conn, project_id: uuid.UUID
) -> None:
    assert await project_counters(conn, project_id) == Counters("pending", 0, 0, 0, 0, 0, 0)
    await assert_project_consistent(conn, project_id, [])


@pytest.mark.parametrize(
    ("statuses", "status"), CASES, ids=["-".join(s) or "empty" for s, _ in CASES]
)
async def test_counters_and_status_follow_the_rule_table(
    conn: Conn, project_id: uuid.UUID, statuses: list[str], status: str
) -> None:
    generation_ids = [await insert_generation(conn, project_id) for _ in statuses]
    current = ["pending"] * len(statuses)
    await assert_project_consistent(conn, project_id, current)
    # One legal transition at a time, each its own transaction; consistent after every one.
    for index, (generation_id, target) in enumerate(zip(generation_ids, statuses, strict=True)):
        for step in PATH_TO[target]:
            await set_status(conn, generation_id, step)
            current[index] = step
            await assert_project_consistent(conn, project_id, current)
    final = await assert_project_consistent(conn, project_id, statuses)
    assert final.status == status
    assert final.image_count == sum(s != "cancelled" for s in statuses)
    assert final.cancelled_count == statuses.count("cancelled")


@pytest.mark.parametrize(
    ("source", "target"),
    [(source, target) for source, targets in LEGAL.items() for target in targets],
)
async def test_every_legal_transition_moves_one_image_between_buckets(
    conn: Conn, project_id: uuid.UUID, source: str, target: str
) -> None:
    generation_id = await insert_generation(conn, project_id)
    await insert_generation(conn, project_id)  # a bystander that stays pending
    await walk_to(conn, generation_id, source)
    await assert_project_consistent(conn, project_id, [source, "pending"])
    await set_status(conn, generation_id, target)
    await assert_project_consistent(conn, project_id, [target, "pending"])


async def test_a_row_inserted_in_a_final_status_is_counted(
    conn: Conn, project_id: uuid.UUID
) -> None:
    for status in ("completed", "failed", "cancelled"):
        await insert_generation(conn, project_id, status=status)
    await assert_project_consistent(conn, project_id, ["completed", "failed", "cancelled"])


async def test_delete_updates_the_project(conn: Conn, project_id: uuid.UUID) -> None:
    ids = {status: await insert_generation(conn, project_id) for status in PATH_TO}
    for status, generation_id in ids.items():
        await walk_to(conn, generation_id, status)
    remaining = list(PATH_TO)
    await assert_project_consistent(conn, project_id, remaining)
    for status in ("failed", "completed", "cancelled", "processing", "pending"):
        await conn.execute("DELETE FROM image_generations WHERE id = %s", (ids[status],))
        remaining.remove(status)
        await assert_project_consistent(conn, project_id, remaining)
    assert await project_counters(conn, project_id) == Counters("pending", 0, 0, 0, 0, 0, 0)


async def test_moving_a_generation_updates_both_projects(
    conn: Conn, project_id: uuid.UUID, other_project_id: uuid.UUID
) -> None:
    done = await insert_generation(conn, project_id)
    running = await insert_generation(conn, project_id)
    await set_status(conn, done, "processing")
    await set_status(conn, done, "completed")
    await set_status(conn, running, "processing")
    await insert_generation(conn, other_project_id)
    await assert_project_consistent(conn, project_id, ["completed", "processing"])
    await assert_project_consistent(conn, other_project_id, ["pending"])

    await update_generation(conn, running, project_id=other_project_id)
    assert (await assert_project_consistent(conn, project_id, ["completed"])).status == "completed"
    moved = await assert_project_consistent(conn, other_project_id, ["pending", "processing"])
    assert moved.status == "processing"

    # Moving and changing status in one statement: the old status leaves, the new one arrives.
    await update_generation(conn, running, project_id=project_id, status="failed")
    await assert_project_consistent(conn, project_id, ["completed", "failed"])
    await assert_project_consistent(conn, other_project_id, ["pending"])


async def test_moving_to_another_workspace_is_rejected(conn: Conn, project_id: uuid.UUID) -> None:
    foreign = await create_project(conn, uuid.uuid4(), "foreign")
    generation_id = await insert_generation(conn, project_id)
    with pytest.raises(errors.CheckViolation):
        await update_generation(conn, generation_id, project_id=foreign)
    await assert_project_consistent(conn, project_id, ["pending"])
    await assert_project_consistent(conn, foreign, [])


async def test_recompute_repairs_tampered_counters(conn: Conn, project_id: uuid.UUID) -> None:
    generation_id = await insert_generation(conn, project_id)
    await set_status(conn, generation_id, "processing")
    await conn.execute(
        "UPDATE projects SET pending_count = 7, completed_count = 3 WHERE id = %s", (project_id,)
    )
    assert (await project_counters(conn, project_id)).image_count == 11
    await conn.execute("SELECT recompute_project_counts(%s)", (project_id,))
    await assert_project_consistent(conn, project_id, ["processing"])
