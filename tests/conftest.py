"""Shared fixtures: one fresh, migrated database per test session on a real Postgres.

TEST_DATABASE_URL points at a server to use; otherwise an embedded server is started with its
data under var/test-postgres. Each session creates its own database and drops it at the end.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from tests.factories import create_project
from worker.core.apikeys import create_api_key
from worker.core.db import create_pool
from worker.core.migrate import migrate
from worker.devtools.embedded import start_embedded_postgres, with_database

ROOT = Path(__file__).resolve().parents[1]
pytest_plugins = ["tests.providers.fal_fixtures"]


@pytest.fixture(scope="session")
def server_url() -> str:
    return os.environ.get("TEST_DATABASE_URL") or start_embedded_postgres(
        ROOT / "var" / "test-postgres"
    )


@pytest.fixture(scope="session")
def database_url(server_url: str) -> Iterator[str]:
    name = f"imagejobs_test_{os.getpid()}_{secrets.token_hex(3)}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    asyncio.run(migrate(url))
    yield url
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
async def pool(database_url: str) -> AsyncIterator[AsyncConnectionPool]:
    async with create_pool(
        database_url, min_size=2, max_size=20, name="tests", autocommit=True
    ) as p:
        yield p


@pytest.fixture
def workspace_id() -> uuid.UUID:
    return uuid.uuid4()


@pytest.fixture
async def project_id(pool: AsyncConnectionPool, workspace_id: uuid.UUID) -> uuid.UUID:
    return await create_project(pool, workspace_id)


class Tenant:
    """A workspace with an API key, as a client of the API sees it."""

    def __init__(self, workspace_id: uuid.UUID, api_key: str) -> None:
        self.workspace_id = workspace_id
        self.api_key = api_key

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


async def make_tenant(pool: AsyncConnectionPool) -> Tenant:
    workspace_id = uuid.uuid4()
    async with pool.connection() as conn:
        key = await create_api_key(conn, workspace_id, "tests")
    return Tenant(workspace_id, key)


@pytest.fixture
async def tenant(pool: AsyncConnectionPool) -> Tenant:
    return await make_tenant(pool)


@pytest.fixture
async def other_tenant(pool: AsyncConnectionPool) -> Tenant:
    return await make_tenant(pool)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked `last` (the scan for image bytes) run after everything else."""
    items.sort(key=lambda item: item.get_closest_marker("last") is not None)
