from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from api.app import create_app
from worker.config import load_settings


@pytest.fixture
async def client(database_url: str, tmp_path: Path) -> AsyncIterator[AsyncTestClient[Litestar]]:
    settings = load_settings(
        {
            "DATABASE_URL": database_url,
            "LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
            "PORT": "8000",
        }
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client
