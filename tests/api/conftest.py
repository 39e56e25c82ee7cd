from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from litestar import Litestar, get
from litestar.testing import AsyncTestClient

from api.app import create_app
from tests.emulators.server import serve
from worker.core.config import load_settings

WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"test-secret-for-incoming-webhooks").decode()


class Jwks:
    """fal's signing keys, as a JWKS endpoint tests control."""

    def __init__(self) -> None:
        self.keys: list[Ed25519PrivateKey] = [Ed25519PrivateKey.generate()]
        self.url = ""
        self.fetches = 0
        # Seconds each fetch takes: a slow or hanging JWKS endpoint.
        self.delay = 0.0

    def document(self) -> dict[str, Any]:
        self.fetches += 1
        return {
            "keys": [
                {
                    "kty": "OKP",
                    "crv": "Ed25519",
                    "x": base64.urlsafe_b64encode(
                        key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
                    )
                    .decode()
                    .rstrip("="),
                }
                for key in self.keys
            ]
        }


@pytest.fixture(scope="session")
def jwks() -> Iterator[Jwks]:
    state = Jwks()

    @get("/.well-known/jwks.json")
    async def document() -> dict[str, Any]:
        await asyncio.sleep(state.delay)
        return state.document()

    with serve(Litestar([document], openapi_config=None)) as url:
        state.url = f"{url}/.well-known/jwks.json"
        yield state


@pytest.fixture
async def client(
    database_url: str, tmp_path: Path, jwks: Jwks
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    settings = load_settings(
        {
            "DATABASE_URL": database_url,
            "LOCAL_STORAGE_DIR": str(tmp_path / "storage"),
            "PORT": "8000",
            "WEBHOOK_SECRET": WEBHOOK_SECRET,
            "FAL_JWKS_URL": jwks.url,
        }
    )
    async with AsyncTestClient(app=create_app(settings)) as client:
        yield client


@pytest.fixture(scope="module")
def api_url(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The API served by uvicorn on a real port: SSE needs a streaming transport, and odd header
    bytes a real HTTP parser."""
    settings = load_settings(
        {
            "DATABASE_URL": database_url,
            "LOCAL_STORAGE_DIR": str(tmp_path_factory.mktemp("storage")),
            "PORT": "8000",
            "SSE_KEEPALIVE_S": "1",
        }
    )
    with serve(create_app(settings), lifespan="on") as url:
        yield url
