"""Quotas (sql/018): workspace_limits enforced by the insert trigger for plain SQL inserts, per
UTC day, all-or-nothing for multi-row inserts, exact at the last slot under concurrency."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from tests.sql.helpers import Conn, create_project, fetch_dict, fetch_value, insert_generation
from worker.core.quotas import QUOTA_SQLSTATE, quota_limit


async def set_limits(conn: Conn, workspace_id: uuid.UUID, **limits: Any) -> None:
    await conn.execute(
        "INSERT INTO workspace_limits (workspace_id, generations_per_day, usd_per_day,"
        " max_concurrency) VALUES (%s, %s, %s, %s)",
        (
            workspace_id,
            limits.get("generations_per_day"),
            limits.get("usd_per_day"),
            limits.get("max_concurrency"),
        ),
    )


async def add(conn: Conn, project_id: uuid.UUID, **cols: Any) -> uuid.UUID:
    """A pending generation no worker picks up (job_id -1: the job is never deferred)."""
    return await insert_generation(conn, project_id, job_id=-1, **cols)


async def usage(conn: Conn, workspace_id: uuid.UUID) -> dict[str, Any]:
    return await fetch_dict(conn, "SELECT * FROM imagejobs_workspace_usage(%s)", (workspace_id,))


async def test_over_the_count_limit_a_plain_insert_is_refused_naming_the_limit(
    conn: Conn, project_id: uuid.UUID, workspace_id: uuid.UUID
) -> None:
    await set_limits(conn, workspace_id, generations_per_day=2)
    await add(conn, project_id)
    await add(conn, project_id)
    with pytest.raises(psycopg.DatabaseError) as refused:
        await add(conn, project_id)
    exc = refused.value
    assert exc.sqlstate == QUOTA_SQLSTATE == "IJ429"
    assert exc.diag.constraint_name == "workspace_limits_generations_per_day"
    assert quota_limit(exc) == "generations_per_day"
    assert "generations_per_day quota: 2 generations per UTC day" in str(exc.diag.message_primary)
    assert "2 generations created in the UTC day" in str(exc.diag.message_detail)
    window = await usage(conn, workspace_id)
    resets = window["window_end"].strftime("%Y-%m-%dT%H:%M:%SZ")
    assert f"resets at {resets}" in str(exc.diag.message_hint)
    assert window["generations"] == 2
    assert window["window_end"] - window["window_start"] == timedelta(days=1)


async def test_a_multi_row_insert_counts_all_or_nothing(
    conn: Conn, project_id: uuid.UUID, workspace_id: uuid.UUID
) -> None:
    await set_limits(conn, workspace_id, generations_per_day=3)
    await add(conn, project_id)
    with pytest.raises(psycopg.DatabaseError) as refused:
        await conn.execute(
            "INSERT INTO image_generations (project_id, prompt, job_id)"
            " VALUES (%(p)s, 'a', -1), (%(p)s, 'b', -1), (%(p)s, 'c', -1)",
            {"p": project_id},
        )
    assert quota_limit(refused.value) == "generations_per_day"
    assert (await usage(conn, workspace_id))["generations"] == 1  # none of the three stored
    await conn.execute(
        "INSERT INTO image_generations (project_id, prompt, job_id)"
        " VALUES (%(p)s, 'a', -1), (%(p)s, 'b', -1)",
        {"p": project_id},
    )
    assert (await usage(conn, workspace_id))["generations"] == 3


async def test_the_spend_limit_counts_priced_models_but_not_failed_or_cancelled(
    conn: Conn, project_id: uuid.UUID, workspace_id: uuid.UUID
) -> None:
    # gpt-image-2: $0.06 per image (sql/015); the local renderer is free.
    await set_limits(conn, workspace_id, usd_per_day=Decimal("0.15"))
    priced = {"provider": "openai", "model": "gpt-image-2"}
    first = await add(conn, project_id, **priced)
    await add(conn, project_id, **priced)
    assert (await usage(conn, workspace_id))["estimated_usd"] == Decimal("0.12")
    with pytest.raises(psycopg.DatabaseError) as refused:
        await add(conn, project_id, **priced)
    exc = refused.value
    assert exc.sqlstate == QUOTA_SQLSTATE
    assert exc.diag.constraint_name == "workspace_limits_usd_per_day"
    assert quota_limit(exc) == "usd_per_day"
    assert "usd_per_day quota: $0.15 estimated spend per UTC day" in str(exc.diag.message_primary)
    assert "$0.12 estimated" in str(exc.diag.message_detail)
    assert "($0.06, openai gpt-image-2)" in str(exc.diag.message_detail)
    assert "resets at" in str(exc.diag.message_hint)
    # Free work still fits under a spend limit.
    await add(conn, project_id)
    # A cancelled generation will not be billed: its price leaves the day's spend.
    await conn.execute("UPDATE image_generations SET status = 'cancelled' WHERE id = %s", (first,))
    assert (await usage(conn, workspace_id))["estimated_usd"] == Decimal("0.06")
    await add(conn, project_id, **priced)


async def test_the_estimate_is_the_cost_views_price(
    conn: Conn, project_id: uuid.UUID, workspace_id: uuid.UUID
) -> None:
    """The trigger's per-row estimate matches generation_cost_lines for a completed row."""
    specs = [
        ("fal", "fal-ai/flux/dev", {"size": "512x768"}),
        ("openai", "gpt-image-2", {}),
        ("stability", "core", {"size": "1024x1024", "quality": "high"}),
        ("local", "pillow-v1", {}),
    ]
    for provider, model, spec in specs:
        gid = await insert_generation(
            conn,
            project_id,
            provider=provider,
            model=model,
            prompt_spec=Jsonb(spec),
            status="completed",
            result_image_url="https://example.com/r.png",
        )
        row = await fetch_dict(
            conn,
            "SELECT l.estimated_cost_usd AS view,"
            " imagejobs_estimated_cost(g.provider, g.model, g.prompt_spec) AS fn"
            " FROM generation_cost_lines l JOIN image_generations g ON g.id = l.generation_id"
            " WHERE g.id = %s",
            (gid,),
        )
        assert row["view"] == row["fn"], (provider, model)
    # A size that is not WxH does not break an insert priced per megapixel.
    value = await fetch_value(
        conn, "SELECT imagejobs_estimated_cost('fal', 'fal-ai/flux/dev', '{\"size\": \"auto\"}')"
    )
    assert value == Decimal("0.026214")
    assert (
        await fetch_value(conn, "SELECT imagejobs_estimated_cost('openai', 'nope', '{}')") is None
    )


async def test_concurrent_inserts_at_the_last_slot_exactly_one_passes(
    pool: AsyncConnectionPool, project_id: uuid.UUID, workspace_id: uuid.UUID
) -> None:
    async with pool.connection() as conn:
        await set_limits(conn, workspace_id, generations_per_day=3)
        await add(conn, project_id)
        await add(conn, project_id)
    ready = asyncio.Event()
    release = asyncio.Event()

    async def first() -> None:
        async with pool.connection() as conn, conn.transaction():
            await add(conn, project_id)
            ready.set()
            await release.wait()  # holds the workspace's lock, uncommitted

    async def second() -> BaseException | None:
        await ready.wait()
        async with pool.connection() as conn:
            try:
                await add(conn, project_id)
            except psycopg.DatabaseError as exc:
                return exc
        return None

    one = asyncio.create_task(first())
    two = asyncio.create_task(second())
    await ready.wait()
    # The second waits for the first's lock rather than counting without its row.
    async with pool.connection() as conn:
        for _ in range(200):
            waiting = await fetch_value(
                conn,
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
                " AND classid = 18 AND objsubid = 2"
                " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            if waiting:
                break
            await asyncio.sleep(0.02)
        assert waiting == 1
    release.set()
    await one
    refused = await two
    assert isinstance(refused, psycopg.DatabaseError)
    assert quota_limit(refused) == "generations_per_day"
    async with pool.connection() as conn:
        assert (await usage(conn, workspace_id))["generations"] == 3


async def test_many_concurrent_inserts_never_overshoot(
    pool: AsyncConnectionPool, project_id: uuid.UUID, workspace_id: uuid.UUID
) -> None:
    async with pool.connection() as conn:
        await set_limits(conn, workspace_id, generations_per_day=5)

    async def attempt() -> str | None:
        async with pool.connection() as conn:
            try:
                await add(conn, project_id)
            except psycopg.DatabaseError as exc:
                return quota_limit(exc) or str(exc)
        return None

    results = await asyncio.gather(*(attempt() for _ in range(12)))
    assert results.count(None) == 5
    assert results.count("generations_per_day") == 7
    async with pool.connection() as conn:
        assert (await usage(conn, workspace_id))["generations"] == 5


async def test_workspaces_without_limits_are_unaffected(
    conn: Conn, project_id: uuid.UUID, workspace_id: uuid.UUID
) -> None:
    other = uuid.uuid4()
    other_project = await create_project(conn, other)
    await set_limits(conn, other, generations_per_day=0)
    for _ in range(5):
        await add(conn, project_id)
    # A row with every limit NULL is no limit at all.
    await set_limits(conn, workspace_id)
    await add(conn, project_id)
    assert (await usage(conn, workspace_id))["generations"] == 6
    # ... and the frozen workspace next door is refused without touching this one.
    with pytest.raises(psycopg.DatabaseError):
        await add(conn, other_project)


async def test_a_limit_of_zero_freezes_and_imports_are_not_requests(
    conn: Conn, project_id: uuid.UUID, workspace_id: uuid.UUID
) -> None:
    await set_limits(conn, workspace_id, generations_per_day=0)
    with pytest.raises(psycopg.DatabaseError) as refused:
        await add(conn, project_id)
    assert quota_limit(refused.value) == "generations_per_day"
    # A record of past work (inserted finished) is not a request to run: not refused.
    await insert_generation(
        conn, project_id, status="completed", result_image_url="https://example.com/r.png"
    )


async def test_the_next_utc_day_starts_a_fresh_window(
    conn: Conn, project_id: uuid.UUID, workspace_id: uuid.UUID
) -> None:
    await set_limits(conn, workspace_id, generations_per_day=2, usd_per_day=Decimal("0.06"))
    await add(conn, project_id, provider="openai", model="gpt-image-2")
    await add(conn, project_id)
    with pytest.raises(psycopg.DatabaseError):
        await add(conn, project_id)
    # Yesterday's work (as these rows become) is outside today's window.
    await conn.execute(
        "UPDATE image_generations SET created_at = created_at - interval '1 day'"
        " WHERE workspace_id = %s",
        (workspace_id,),
    )
    today = await usage(conn, workspace_id)
    assert (today["generations"], today["estimated_usd"]) == (0, 0)
    await add(conn, project_id, provider="openai", model="gpt-image-2")
    await add(conn, project_id)


async def test_the_window_is_the_utc_day_whatever_the_session_time_zone(conn: Conn) -> None:
    async with conn.transaction(force_rollback=True):
        await conn.execute("SET LOCAL TIME ZONE 'Pacific/Kiritimati'")  # UTC+14
        row = await fetch_dict(
            conn,
            "SELECT window_start AT TIME ZONE 'UTC' AS start, window_end AT TIME ZONE 'UTC' AS end"
            " FROM imagejobs_quota_window('2026-12-04 23:30:00+00')",
        )
    assert str(row["start"]) == "2026-12-04 00:00:00"
    assert str(row["end"]) == "2026-12-05 00:00:00"


@pytest.mark.parametrize(
    ("column", "value"),
    [("generations_per_day", -1), ("usd_per_day", -0.5), ("max_concurrency", 0)],
)
async def test_limits_out_of_range_are_refused(conn: Conn, column: str, value: Any) -> None:
    with pytest.raises(psycopg.errors.CheckViolation) as refused:
        await set_limits(conn, uuid.uuid4(), **{column: value})
    assert refused.value.diag.constraint_name == f"workspace_limits_{column}_check"
