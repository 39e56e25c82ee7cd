"""The SSRF guard in the real API and worker processes (APP_ENV development, the default)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from tests.e2e.test_lifecycle import create_project, wait_for

pytestmark = pytest.mark.e2e

METADATA_URL = "http://169.254.169.254/latest/meta-data"


async def test_the_api_refuses_a_metadata_source_naming_the_field(
    http: httpx.AsyncClient,
) -> None:
    project_id = await create_project(http)
    response = await http.post(
        "/v1/generations",
        json={"project_id": project_id, "prompt": "x", "original_image_url": METADATA_URL},
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["errors"] == [
        {
            "field": "original_image_url",
            "message": "refused: 169.254.169.254 is a cloud metadata address",
        }
    ]


async def test_a_metadata_source_inserted_with_sql_fails_with_source_unreachable(
    http: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    """Past the API (plain SQL), the worker refuses the address itself, once, for good."""
    project_id = await create_project(http)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO image_generations (project_id, prompt, original_image_url)"
            " VALUES (%s, 'steal credentials', %s) RETURNING id",
            (project_id, METADATA_URL),
        )
        row = await cur.fetchone()
    assert row is not None
    failed = await wait_for(http, str(row[0]), "failed")
    assert failed["error_code"] == "source_unreachable"
    assert failed["error_message"] == (
        "The original image URL is not accessible:"
        " refused: 169.254.169.254 is a cloud metadata address"
    )
    assert failed["attempts"] == 1


async def test_a_webhook_to_a_private_address_is_recorded_once_per_event(
    http: httpx.AsyncClient, pool: AsyncConnectionPool
) -> None:
    project_id = await create_project(http)
    async with pool.connection() as conn:
        cur = await conn.execute(
            "INSERT INTO image_generations (project_id, prompt, webhook_url,"
            " webhook_events_filter) VALUES (%s, 'hello', 'http://10.0.0.1/hook', '{completed}')"
            " RETURNING id",
            (project_id,),
        )
        row = await cur.fetchone()
    assert row is not None
    await wait_for(http, str(row[0]), "completed")
    deadline = time.monotonic() + 15
    attempts: list[tuple[int, str]] = []
    while time.monotonic() < deadline and not attempts:
        await asyncio.sleep(0.1)
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT attempt, error FROM outgoing_webhook_attempts WHERE generation_id = %s",
                (row[0],),
            )
            attempts = [(int(a), str(e)) for a, e in await cur.fetchall()]
    assert attempts == [(1, "refused: 10.0.0.1 is a private address")]
    statuses: list[str] = []
    while time.monotonic() < deadline and statuses != ["failed"]:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT status FROM procrastinate_jobs WHERE task_name = 'deliver_webhook'"
                " AND args->>'generation_id' = %s::text",
                (row[0],),
            )
            statuses = [str(r[0]) for r in await cur.fetchall()]
        await asyncio.sleep(0.1)
    assert statuses == ["failed"]  # given up at once, not scheduled again
