"""The model catalogue through the API and the CLI (issue 13): GET /v1/models, defaults from
the catalogue for API and SQL alike, shut-down models refused naming their replacement,
deprecated ones warned, unknown ones tried, `imagejobs models default` with no deploy."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import date, timedelta
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from tests.api.test_api_keys import imagejobs
from tests.api.test_metrics import scrape
from tests.conftest import Tenant
from tests.sql.helpers import insert_generation
from worker.core.catalogue import default_model_warnings

Client = AsyncTestClient[Litestar]


async def new_project(client: Client, tenant: Tenant) -> str:
    response = await client.post("/v1/projects", json={"name": "models"}, headers=tenant.headers)
    return str(response.json()["id"])


async def create(client: Client, tenant: Tenant, **body: Any) -> Any:
    project_id = await new_project(client, tenant)
    return await client.post(
        "/v1/generations",
        json={"project_id": project_id, "prompt": "a red fox", **body},
        headers=tenant.headers,
    )


async def catalogue_default(pool: AsyncConnectionPool, provider: str) -> str:
    async with pool.connection() as conn:
        cur = await conn.execute(
            "SELECT model FROM models WHERE provider = %s AND is_default", (provider,)
        )
        row = await cur.fetchone()
    assert row is not None
    return str(row[0])


@pytest.fixture
async def restore_catalogue(pool: AsyncConnectionPool) -> AsyncIterator[None]:
    """Tests that change the catalogue put it back as the migration left it."""
    async with pool.connection() as conn:
        cur = await conn.execute("SELECT provider, model, is_default, shutdown_date FROM models")
        saved = await cur.fetchall()
    yield
    async with pool.connection() as conn, conn.transaction():
        await conn.execute("UPDATE models SET is_default = false")
        for provider, model, is_default, shutdown_date in saved:
            await conn.execute(
                "UPDATE models SET is_default = %s, shutdown_date = %s"
                " WHERE provider = %s AND model = %s",
                (is_default, shutdown_date, provider, model),
            )
        await conn.execute(
            "DELETE FROM models WHERE source LIKE 'imagejobs models default%%' AND NOT is_default"
        )


async def test_the_catalogue_is_listed(client: Client, tenant: Tenant) -> None:
    response = await client.get("/v1/models", headers=tenant.headers)
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert set(data[0]) == {
        "provider",
        "model",
        "status",
        "deprecated_on",
        "shutdown_date",
        "replacement",
        "capabilities",
        "default",
        "source",
    }
    defaults = [m for m in data if m["default"]]
    assert sorted(m["provider"] for m in defaults) == [
        "fal",
        "google",
        "local",
        "openai",
        "stability",
    ]
    assert all(m["status"] == "active" for m in defaults)
    assert all("2026-12-02" in m["source"] for m in defaults if m["provider"] != "local")
    dead = next(m for m in data if m["model"] == "gpt-image-1.5")
    assert (dead["status"], dead["shutdown_date"]) == ("shutdown", "2026-12-01")
    assert (await client.get("/v1/models")).status_code == 401


@pytest.mark.parametrize("provider", ["openai", "google", "stability"])
async def test_api_and_sql_get_the_same_default(
    client: Client, tenant: Tenant, pool: AsyncConnectionPool, provider: str
) -> None:
    response = await create(client, tenant, provider=provider)
    assert response.status_code == 201, response.text
    async with pool.connection() as conn:
        via_sql = await insert_generation(
            conn, uuid.UUID(response.json()["project_id"]), provider=provider
        )
        cur = await conn.execute("SELECT model FROM image_generations WHERE id = %s", (via_sql,))
        row = await cur.fetchone()
    assert row is not None
    assert response.json()["model"] == row[0] == await catalogue_default(pool, provider)


async def test_a_shut_down_model_is_a_422_naming_its_replacement(
    client: Client, tenant: Tenant
) -> None:
    response = await create(client, tenant, provider="google", model="gemini-2.5-flash-image")
    assert response.status_code == 422, response.text
    problem = response.json()
    field = problem["errors"][0]
    assert field["field"] == "model"
    assert "shut down on 2026-10-02" in field["message"]
    assert "gemini-nano-banana-2.1" in field["message"]


async def test_a_deprecated_model_is_accepted_with_deprecation_headers(
    client: Client, tenant: Tenant
) -> None:
    response = await create(client, tenant, provider="google", model="gemini-3.1-flash-image")
    assert response.status_code == 201, response.text
    since = int(response.headers["deprecation"].removeprefix("@"))
    assert date.fromtimestamp(since) in (date(2026, 10, 6), date(2026, 10, 5))
    assert "gemini-nano-banana-2.1" in response.headers["link"]
    assert "sunset" not in response.headers  # Google announced no date
    # Its log row in the trail is tested at the SQL level (tests/sql/test_enqueue.py).


async def test_an_active_model_has_no_deprecation_headers(client: Client, tenant: Tenant) -> None:
    response = await create(client, tenant, provider="openai", model="gpt-image-2")
    assert response.status_code == 201
    assert "deprecation" not in response.headers


async def test_an_unknown_model_is_tried(client: Client, tenant: Tenant) -> None:
    response = await create(client, tenant, provider="openai", model="gpt-image-9-preview")
    assert response.status_code == 201, response.text
    assert response.json()["model"] == "gpt-image-9-preview"


@pytest.mark.parametrize(
    ("provider", "said"),
    [
        ("midjourney", "no official public API"),
        ("dalle", "unknown provider"),
        ("OpenAI", "unknown"),
    ],
)
async def test_providers_outside_the_registry_are_refused(
    client: Client, tenant: Tenant, provider: str, said: str
) -> None:
    response = await create(client, tenant, provider=provider)
    assert response.status_code == 422, response.text
    field = response.json()["errors"][0]
    assert field["field"] == "provider"
    assert said in field["message"]


@pytest.mark.usefixtures("restore_catalogue")
async def test_models_default_changes_the_default_with_no_deploy(
    client: Client, tenant: Tenant, database_url: str, pool: AsyncConnectionPool
) -> None:
    changed = await imagejobs(database_url, "models", "default", "openai", "gpt-image-2.6-flare")
    assert changed.code == 0, changed.stderr
    assert "gpt-image-2.6-flare" in changed.stdout
    response = await create(client, tenant, provider="openai")
    assert response.json()["model"] == "gpt-image-2.6-flare"
    assert await catalogue_default(pool, "openai") == "gpt-image-2.6-flare"

    listed = await imagejobs(database_url, "models", "--provider", "openai")
    flare = next(line for line in listed.stdout.splitlines() if " gpt-image-2.6-flare " in line)
    assert flare.rstrip().endswith("yes")

    refused = await imagejobs(database_url, "models", "default", "openai", "dall-e-3")
    assert refused.code != 0 and "shut down" in refused.stderr
    assert await catalogue_default(pool, "openai") == "gpt-image-2.6-flare"

    # A model newer than the catalogue can be adopted at once.
    adopted = await imagejobs(database_url, "models", "default", "openai", "gpt-image-3")
    assert adopted.code == 0, adopted.stderr
    assert (await create(client, tenant, provider="openai")).json()["model"] == "gpt-image-3"


@pytest.mark.usefixtures("restore_catalogue")
async def test_operators_hear_of_a_default_shutting_down(
    client: Client, pool: AsyncConnectionPool
) -> None:
    soon = date.today() + timedelta(days=20)
    async with pool.connection() as conn:
        await conn.execute(
            "UPDATE models SET shutdown_date = %s WHERE provider = 'google' AND is_default",
            (soon,),
        )
        warnings = await default_model_warnings(conn)
    assert any("google" in w and "20 days" in w for w in warnings), warnings
    samples = await scrape(client)
    key = (
        "imagejobs_default_model_days_to_shutdown",
        (("model", "gemini-nano-banana-2.1"), ("provider", "google"), ("status", "active")),
    )
    assert samples[key] == 20
