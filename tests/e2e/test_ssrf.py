"""The SSRF guard in the real API and worker processes (APP_ENV development, the default)."""

from __future__ import annotations

import asyncio
import time
import uuid

import httpx
import pytest
from psycopg_pool import AsyncConnectionPool

from tests.e2e.test_lifecycle import create_project, wait_for
from tests.factories import insert_generation

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
    generation_id = await insert_generation(
        pool, uuid.UUID(project_id), prompt="steal credentials", original_image_url=METADATA_URL
    )
    failed = await wait_for(http, str(generation_id), "failed")
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
    generation_id = await insert_generation(
        pool,
        uuid.UUID(project_id),
        prompt="hello",
        webhook_url="http://10.0.0.1/hook",
        webhook_events_filter=["completed"],
    )
    await wait_for(http, str(generation_id), "completed")
    deadline = time.monotonic() + 15
    attempts: list[tuple[int, str]] = []
    while time.monotonic() < deadline and not attempts:
        await asyncio.sleep(0.1)
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT attempt, error FROM outgoing_webhook_attempts WHERE generation_id = %s",
                (generation_id,),
            )
            attempts = [(int(a), str(e)) for a, e in await cur.fetchall()]
    assert attempts == [(1, "refused: 10.0.0.1 is a private address")]
    statuses: list[str] = []
    while time.monotonic() < deadline and statuses != ["failed"]:
        async with pool.connection() as conn:
            cur = await conn.execute(
                "SELECT status FROM procrastinate_jobs WHERE task_name = 'deliver_webhook'"
                " AND args->>'generation_id' = %s::text",
                (generation_id,),
            )
            statuses = [str(r[0]) for r in await cur.fetchall()]
        await asyncio.sleep(0.1)
    assert statuses == ["failed"]  # given up at once, not scheduled again
