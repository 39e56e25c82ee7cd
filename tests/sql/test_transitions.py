"""Status transitions are guarded by the database; retry and cancel act on procrastinate's jobs."""

from __future__ import annotations

import uuid

import pytest
from psycopg import errors

from tests.sql.helpers import (
    LEGAL,
    STATUSES,
    Conn,
    assert_project_consistent,
    fetch_value,
    generation,
    insert_generation,
    job,
    set_status,
    update_generation,
    walk_to,
)

ILLEGAL = [
    (source, target)
    for source in STATUSES
    for target in STATUSES
    if target != source and target not in LEGAL[source]
]


def test_the_illegal_table_holds_the_contracts_examples() -> None:
    assert {
        ("completed", "processing"),
        ("cancelled", "completed"),
        ("pending", "completed"),
        ("completed", "pending"),
        # cancelled -> pending was one until issue 15 made cancelled generations retryable
        # (CONTRACT section 7); cancelled still never goes anywhere else.
        ("cancelled", "processing"),
        ("failed", "completed"),
    } <= set(ILLEGAL)


@pytest.mark.parametrize(("source", "target"), ILLEGAL)
async def test_invalid_transition_is_a_check_violation(
    conn: Conn, project_id: uuid.UUID, source: str, target: str
) -> None:
    generation_id = await insert_generation(conn, project_id)
    await walk_to(conn, generation_id, source)
    before = await generation(conn, generation_id)
    with pytest.raises(errors.CheckViolation, match="invalid status transition"):
        await set_status(conn, generation_id, target)
    after = await generation(conn, generation_id)
    assert after == before
    await assert_project_consistent(conn, project_id, [source])


async def test_retry_of_a_failed_generation_defers_a_new_job(
    conn: Conn, project_id: uuid.UUID
) -> None:
    generation_id = await insert_generation(conn, project_id)
    first_job = (await generation(conn, generation_id))["job_id"]
    await update_generation(
        conn, generation_id, status="processing", step="processing", progress=50
    )
    await update_generation(
        conn, generation_id, status="failed", error_code="timeout", error_message="too slow"
    )
    failed = await generation(conn, generation_id)
    assert (failed["step"], failed["error_code"], failed["error_message"]) == (
        "failed",
        "timeout",
        "too slow",
    )
    assert failed["finished_at"] is not None

    await set_status(conn, generation_id, "pending")
    retried = await generation(conn, generation_id)
    assert retried["job_id"] is not None and retried["job_id"] != first_job
    assert (retried["status"], retried["step"], retried["progress"]) == ("pending", "queued", 0)
    assert retried["error_code"] is None and retried["error_message"] is None
    assert retried["finished_at"] is None
    new_job = await job(conn, retried["job_id"])
    assert (new_job["task_name"], new_job["status"]) == ("generate_image", "todo")
    assert new_job["args"] == {"generation_id": str(generation_id)}
    assert new_job["lock"] == f"generation:{generation_id}"
    assert (
        await fetch_value(
            conn,
            "SELECT count(*) FROM procrastinate_jobs WHERE args->>'generation_id' = %s",
            (str(generation_id),),
        )
        == 2
    )
    await assert_project_consistent(conn, project_id, ["pending"])


async def test_requeue_of_a_processing_generation_keeps_its_job(
    conn: Conn, project_id: uuid.UUID
) -> None:
    """Stall recovery re-queues a processing generation; the recoverer owns the job."""
    generation_id = await insert_generation(conn, project_id)
    job_id = (await generation(conn, generation_id))["job_id"]
    await update_generation(conn, generation_id, status="processing", step="saving", progress=80)
    await set_status(conn, generation_id, "pending")
    row = await generation(conn, generation_id)
    assert (row["job_id"], row["step"], row["progress"]) == (job_id, "queued", 0)


async def test_cancelling_a_pending_generation_cancels_its_job(
    conn: Conn, project_id: uuid.UUID
) -> None:
    generation_id = await insert_generation(conn, project_id)
    job_id = (await generation(conn, generation_id))["job_id"]
    assert (await job(conn, job_id))["status"] == "todo"
    await set_status(conn, generation_id, "cancelled")
    assert (await job(conn, job_id))["status"] == "cancelled"
    row = await generation(conn, generation_id)
    assert (row["step"], row["error_code"]) == ("cancelled", "cancelled")
    assert row["finished_at"] is not None
    await assert_project_consistent(conn, project_id, ["cancelled"])


@pytest.mark.parametrize("status", ["pending", "processing"])
async def test_cancelling_a_running_job_requests_an_abort(
    conn: Conn, project_id: uuid.UUID, status: str
) -> None:
    generation_id = await insert_generation(conn, project_id)
    job_id = (await generation(conn, generation_id))["job_id"]
    await conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job_id,))
    await walk_to(conn, generation_id, status)
    running = await job(conn, job_id)
    assert (running["status"], running["abort_requested"]) == ("doing", False)
    await set_status(conn, generation_id, "cancelled")
    aborting = await job(conn, job_id)
    assert (aborting["status"], aborting["abort_requested"]) == ("doing", True)
    await assert_project_consistent(conn, project_id, ["cancelled"])


async def test_cancel_asks_the_provider_to_stop_its_job(conn: Conn, project_id: uuid.UUID) -> None:
    generation_id = await insert_generation(conn, project_id, provider="fal")
    await update_generation(conn, generation_id, status="processing", provider_job_id="fal-123")
    await set_status(conn, generation_id, "cancelled")
    tasks = await fetch_value(
        conn,
        "SELECT array_agg(task_name ORDER BY id) FROM procrastinate_jobs"
        " WHERE args->>'generation_id' = %s",
        (str(generation_id),),
    )
    assert tasks == ["generate_image", "cancel_provider_job"]
