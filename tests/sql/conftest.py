"""Fixtures of the database-level tests: a connection of the session pool, projects, a
listener on the two channels of CONTRACT section 4."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from tests.sql.helpers import Conn, create_project

EVENTS = "image_generation_events"
PROJECTS = "project_status"


@pytest.fixture
async def conn(pool: AsyncConnectionPool) -> AsyncIterator[Conn]:
    """An autocommit connection: each statement is its own transaction unless a test opens one."""
    async with pool.connection() as connection:
        yield connection


@pytest.fixture
async def other_project_id(conn: Conn, workspace_id: uuid.UUID, project_id: uuid.UUID) -> uuid.UUID:
    """A second project in the workspace of `project_id`."""
    return await create_project(conn, workspace_id, "other")


@pytest.fixture
async def listener(database_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """LISTENs on the events and project channels (test_notify_secrets has one of its own, on
    every channel)."""
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as listening:
        await listening.execute(f"LISTEN {EVENTS}")
        await listening.execute(f"LISTEN {PROJECTS}")
        yield listening
