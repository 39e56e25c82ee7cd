"""Fixtures of the database-level tests: a connection of the session pool, projects."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from psycopg_pool import AsyncConnectionPool

from tests.sql.helpers import Conn, create_project


@pytest.fixture
async def conn(pool: AsyncConnectionPool) -> AsyncIterator[Conn]:
    """An autocommit connection: each statement is its own transaction unless a test opens one."""
    async with pool.connection() as connection:
        yield connection


@pytest.fixture
async def other_project_id(conn: Conn, workspace_id: uuid.UUID, project_id: uuid.UUID) -> uuid.UUID:
    """A second project in the workspace of `project_id`."""
    return await create_project(conn, workspace_id, "other")
